//! The Guangzhou city model as pure, deterministic Rust.
//!
//! [`City::build`] derives, from the real open data embedded in `data/`,
//! the 11 districts, 178 streets/towns and 2,851 communities, the street
//! areas (derived: no open street boundaries exist), the unit grids
//! (单元网格), the road network and the city's assets; [`City::entities`]
//! turns it all into NGSI-LD entities (normalized JSON) using FIWARE Smart
//! Data Models types and attribute names. The same input always gives the
//! same model. Methods and accuracy are documented in `docs/city.md`.

pub mod admin;
pub mod assets;
pub mod geom;
pub mod grid;
pub mod ngsi;
pub mod rng;
pub mod roads;
pub mod roads_data;
pub mod water;

use std::str::FromStr;

pub use admin::Admin;
pub use assets::Assets;
pub use grid::Grid;
pub use roads::RoadNetwork;

/// Errors of the city model (the embedded data are checked when parsed).
#[derive(Debug, thiserror::Error)]
pub enum CityError {
    /// The embedded data are inconsistent.
    #[error("city data: {0}")]
    Data(String),
    /// An unknown city size was asked for.
    #[error("unknown city size `{0}` (expected small, medium or full)")]
    UnknownSize(String),
}

/// How much of the built-up city to model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// The old city within 3.5 km of Haizhu Square: a few thousand grids.
    Small,
    /// The four central districts (Liwan, Yuexiu, Haizhu, Tianhe).
    Medium,
    /// The central districts and the cores of the seven outer districts.
    Full,
}

impl FromStr for Size {
    type Err = CityError;
    fn from_str(s: &str) -> Result<Size, CityError> {
        match s {
            "small" => Ok(Size::Small),
            "medium" => Ok(Size::Medium),
            "full" => Ok(Size::Full),
            other => Err(CityError::UnknownSize(other.to_string())),
        }
    }
}

impl Size {
    /// The option's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Full => "full",
        }
    }
}

/// The whole city model.
#[derive(Debug, Clone)]
pub struct City {
    /// The size it was built for.
    pub size: Size,
    /// Districts, streets, communities.
    pub admin: Admin,
    /// Unit grids of this size, by code.
    pub grids: Vec<Grid>,
    /// The road network.
    pub roads: RoadNetwork,
    /// Assets, vehicles included.
    pub assets: Assets,
}

impl City {
    /// Builds the model for `size`. Deterministic: no clock, no randomness
    /// beyond fixed seeds.
    pub fn build(size: Size) -> Result<City, CityError> {
        let admin = Admin::load()?;
        let grids = grid::build(&admin, size)?;
        let roads = RoadNetwork::build(&grids);
        let assets = assets::place(&admin, &grids, &roads, size)?;
        Ok(City {
            size,
            admin,
            grids,
            roads,
            assets,
        })
    }

    /// Every entity of the model, in load order (areas first, then roads,
    /// then assets), normalized NGSI-LD JSON; observations are stamped
    /// `at_ms` (Unix time in milliseconds).
    pub fn entities(&self, at_ms: i64) -> Vec<serde_json::Value> {
        ngsi::entities(self, at_ms)
    }
}
