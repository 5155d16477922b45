//! Unit and property tests, one module per feature. Coordinates are real
//! places in Guangzhou unless a test needs something else.

mod distance;
mod geometry;
mod georel;
mod properties;
mod query;
mod relation;

use serde_json::Value;

use crate::{Geometry, parse_geojson};

/// Canton Tower.
pub(crate) const CANTON_TOWER: (f64, f64) = (113.3245, 23.1064);
/// Guangzhou Baiyun International Airport.
pub(crate) const BAIYUN_AIRPORT: (f64, f64) = (113.2988, 23.3924);
/// Guangzhou East railway station, in Tianhe.
pub(crate) const GUANGZHOU_EAST: (f64, f64) = (113.3247, 23.1503);
/// Shamian Island, west of Tianhe.
pub(crate) const SHAMIAN: (f64, f64) = (113.2436, 23.1078);

/// A rough box around the Tianhe district.
pub(crate) const TIANHE: &str =
    "[[[113.26,23.10],[113.44,23.10],[113.44,23.25],[113.26,23.25],[113.26,23.10]]]";

/// Parses GeoJSON text that the test knows to be valid.
pub(crate) fn geo(text: &str) -> Geometry {
    let value: Value = serde_json::from_str(text).expect("test JSON is valid");
    parse_geojson(&value).unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub(crate) fn point((lon, lat): (f64, f64)) -> Geometry {
    Geometry::point(lon, lat).expect("test point is valid")
}

pub(crate) fn polygon(coordinates: &str) -> Geometry {
    geo(&format!(
        r#"{{"type":"Polygon","coordinates":{coordinates}}}"#
    ))
}
