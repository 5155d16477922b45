//! Geo-queries as they arrive over the API (clause 4.10 and its HTTP binding
//! in clause 6): as the query parameters `georel`, `geometry`, `coordinates`
//! and `geoproperty`, or as the GeoQuery JSON object of POST Query and of
//! subscriptions (`geometry`, `coordinates`, `georel`, `geoproperty`).
//!
//! `coordinates` is a JSON array coherent with `geometry` (RFC 7946). In the
//! query string it is the array's JSON text (`[113.3245,23.1064]`); in the
//! JSON object it is the array itself or, as some versions of the
//! specification allow, a string holding the array's JSON text. Both are
//! accepted. The reference geometry may be any of Point, MultiPoint,
//! LineString, MultiLineString, Polygon and MultiPolygon, spelt exactly so.

use serde_json::{Map, Value};

use crate::geometry::{self, Geometry, GeometryKind, Limits, parse_coordinates_with, truncate};
use crate::georel::{GeoRel, parse_georel};
use crate::{GeoError, relation};

/// The GeoProperty a geo-query applies to when it names none (clause 4.10).
pub const DEFAULT_GEOPROPERTY: &str = "location";

/// A parsed geo-query.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoQuery {
    /// How the entity's geometry must relate to `geometry`.
    pub georel: GeoRel,
    /// The reference geometry.
    pub geometry: Geometry,
    /// The GeoProperty to test, as the client wrote it (not yet expanded to
    /// an IRI); `None` means [`DEFAULT_GEOPROPERTY`].
    pub geoproperty: Option<String>,
}

impl GeoQuery {
    /// Whether an entity whose GeoProperty holds `entity` satisfies this query.
    pub fn matches(&self, entity: &Geometry) -> bool {
        relation::matches(&self.georel, entity, &self.geometry)
    }

    /// A bounding box every matching geometry meets, or `None` when matches
    /// can lie anywhere; see [`relation::prefilter_bbox`].
    pub fn prefilter_bbox(&self) -> Option<[f64; 4]> {
        relation::prefilter_bbox(&self.georel, &self.geometry)
    }

    /// The GeoProperty name to test, defaulting to `location`.
    pub fn geoproperty_or_default(&self) -> &str {
        self.geoproperty.as_deref().unwrap_or(DEFAULT_GEOPROPERTY)
    }

    /// The GeoQuery JSON object (`coordinates` as an array), which
    /// [`parse_geoquery_json`] reads back to an equal query.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert(
            "geometry".into(),
            Value::from(self.geometry.kind().as_str()),
        );
        let mut rendered = geometry::to_geojson(&self.geometry);
        let coordinates = rendered
            .get_mut("coordinates")
            .map(Value::take)
            .unwrap_or(Value::Null);
        object.insert("coordinates".into(), coordinates);
        object.insert("georel".into(), Value::from(self.georel.to_string()));
        if let Some(p) = &self.geoproperty {
            object.insert("geoproperty".into(), Value::from(p.as_str()));
        }
        Value::Object(object)
    }
}

/// Parses the reference geometry of the query-string form, e.g.
/// `geometry=Polygon` and `coordinates=[[[113.26,23.10],...]]` (already
/// percent-decoded), with the default [`Limits`].
pub fn parse_geometry_params(geometry: &str, coordinates: &str) -> Result<Geometry, GeoError> {
    parse_geometry_params_with(geometry, coordinates, &Limits::default())
}

/// Like [`parse_geometry_params`], bounding the geometry's size by `limits`.
pub fn parse_geometry_params_with(
    geometry: &str,
    coordinates: &str,
    limits: &Limits,
) -> Result<Geometry, GeoError> {
    let kind = query_kind(geometry)?;
    let value = coordinates_json(coordinates)?;
    parse_coordinates_with(kind, &value, limits)
}

/// Parses a complete geo-query from query parameters: `georel`, `geometry`
/// and `coordinates` are required by clause 4.10, `geoproperty` is optional.
/// Pass `None` for a parameter that is absent; the error names it.
pub fn parse_geoquery_params(
    georel: Option<&str>,
    geometry: Option<&str>,
    coordinates: Option<&str>,
    geoproperty: Option<&str>,
) -> Result<GeoQuery, GeoError> {
    let missing = |name: &str| GeoError::InvalidGeoQuery(format!("missing parameter {name}"));
    let georel = parse_georel(georel.ok_or_else(|| missing("georel"))?)?;
    let geometry = parse_geometry_params(
        geometry.ok_or_else(|| missing("geometry"))?,
        coordinates.ok_or_else(|| missing("coordinates"))?,
    )?;
    Ok(GeoQuery {
        georel,
        geometry,
        geoproperty: geoproperty_name(geoproperty)?,
    })
}

/// Parses a GeoQuery JSON object (POST Query, subscriptions): `geometry`,
/// `coordinates` and `georel` are required, `geoproperty` is optional, and
/// `coordinates` may be an array or a string holding the array's JSON text.
pub fn parse_geoquery_json(value: &Value) -> Result<GeoQuery, GeoError> {
    let Value::Object(object) = value else {
        return Err(GeoError::InvalidGeoQuery("expected a JSON object".into()));
    };
    let string = |name: &str| -> Result<Option<&str>, GeoError> {
        match object.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(GeoError::InvalidGeoQuery(format!(
                "{name} must be a string"
            ))),
        }
    };
    let missing = |name: &str| GeoError::InvalidGeoQuery(format!("missing member {name}"));
    let georel = parse_georel(string("georel")?.ok_or_else(|| missing("georel"))?)?;
    let kind = query_kind(string("geometry")?.ok_or_else(|| missing("geometry"))?)?;
    let geometry = match object.get("coordinates") {
        None => return Err(missing("coordinates")),
        Some(Value::String(text)) => {
            parse_coordinates_with(kind, &coordinates_json(text)?, &Limits::default())?
        }
        Some(array @ Value::Array(_)) => parse_coordinates_with(kind, array, &Limits::default())?,
        Some(_) => {
            return Err(GeoError::InvalidGeoQuery(
                "coordinates must be an array or a string".into(),
            ));
        }
    };
    Ok(GeoQuery {
        georel,
        geometry,
        geoproperty: geoproperty_name(string("geoproperty")?)?,
    })
}

fn query_kind(name: &str) -> Result<GeometryKind, GeoError> {
    match GeometryKind::from_name(name) {
        Some(GeometryKind::GeometryCollection) | None => Err(GeoError::InvalidGeoQuery(format!(
            "unsupported geometry \"{}\" (expected Point, MultiPoint, LineString, \
             MultiLineString, Polygon or MultiPolygon)",
            truncate(name)
        ))),
        Some(kind) => Ok(kind),
    }
}

fn coordinates_json(text: &str) -> Result<Value, GeoError> {
    let trimmed = text.trim_start();
    let offset = text.len() - trimmed.len();
    if !trimmed.starts_with('[') {
        return Err(GeoError::InvalidCoordinates {
            position: offset,
            reason: "expected a JSON array".into(),
        });
    }
    serde_json::from_str(text).map_err(|e| GeoError::InvalidCoordinates {
        // serde_json points at the last byte it read; at the end of input the
        // problem is after it.
        position: if e.is_eof() {
            text.len()
        } else {
            byte_offset(text, e.line(), e.column())
        },
        reason: json_reason(&e),
    })
}

/// serde_json reports 1-based line and column (in bytes); turn that into a
/// byte offset into `text`.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// The serde_json message without its " at line L column C" suffix, which the
/// byte position replaces.
fn json_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}

fn geoproperty_name(name: Option<&str>) -> Result<Option<String>, GeoError> {
    match name {
        Some("") => Err(GeoError::InvalidGeoQuery(
            "geoproperty must not be empty".into(),
        )),
        other => Ok(other.map(str::to_string)),
    }
}
