//! The error type of this crate: every way a geometry, a georel or a geo-query
//! can be rejected. All of them are user errors (NGSI-LD `BadRequestData`).

/// Why a GeoJSON geometry, a georel or a geo-query was rejected.
///
/// Messages are meant for API clients: they name the offending member and
/// carry no trailing period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeoError {
    /// The GeoJSON geometry is malformed; `path` locates the offending member,
    /// for example `coordinates[0][3]`.
    #[error("invalid GeoJSON geometry at {path}: {reason}")]
    InvalidGeometry {
        /// Where in the geometry object the problem is.
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// The geometry holds more positions than the configured limit allows.
    #[error("geometry has more than {limit} positions")]
    TooManyPositions {
        /// The configured maximum ([`crate::Limits::max_positions`]).
        limit: usize,
    },
    /// The `coordinates` text of a geo-query is not a JSON array.
    #[error("invalid coordinates at byte {position}: {reason}")]
    InvalidCoordinates {
        /// Byte offset into the coordinates text.
        position: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The `georel` text does not follow the grammar of clause 4.10.
    #[error("invalid georel at byte {position}: {reason}")]
    InvalidGeorel {
        /// Byte offset into the georel text.
        position: usize,
        /// What is wrong there.
        reason: String,
    },
    /// A geo-query is incomplete or inconsistent (missing member, wrong type).
    #[error("invalid geo-query: {0}")]
    InvalidGeoQuery(String),
}
