//! GeoJSON geometries and NGSI-LD geo-queries (ETSI GS CIM 009 v1.9.1).
//!
//! * [`geometry`]: strict parsing of GeoJSON geometries (the values of
//!   GeoProperties, clause 4.7) into [`Geometry`], rendering back with
//!   [`to_geojson`], and bounding boxes.
//! * [`georel`]: the `georel` grammar of clause 4.10 ([`parse_georel`]).
//! * [`query`]: geo-queries from query parameters or from the GeoQuery JSON
//!   object ([`GeoQuery`]).
//! * [`relation`]: whether an entity's geometry satisfies a geo relationship
//!   ([`matches()`]), distances in metres on WGS84 ([`distance_m`]) and
//!   bounding boxes for index prefiltering.
//!
//! **Invariant:** no function in this crate panics on any input, and the work
//! done for one geometry is bounded by [`Limits`].

#![warn(missing_docs)]

pub mod geometry;
pub mod georel;
pub mod query;
pub mod relation;

mod error;

pub use error::GeoError;
pub use geometry::{
    DEFAULT_MAX_POSITIONS, Geometry, GeometryKind, Limits, bbox, parse_geojson, parse_geojson_with,
    to_geojson,
};
pub use georel::{GeoRel, NearDistance, parse_georel};
pub use query::{
    DEFAULT_GEOPROPERTY, GeoQuery, parse_geometry_params, parse_geometry_params_with,
    parse_geoquery_json, parse_geoquery_params,
};
pub use relation::{distance_m, matches, near_bbox, prefilter_bbox};

#[cfg(test)]
mod tests;
