//! GeoJSON geometries (IETF RFC 7946) as NGSI-LD uses them: the value of a
//! GeoProperty (clause 4.7) and the reference geometry of a geo-query
//! (clause 4.10).
//!
//! Parsing is strict so that every stored geometry is one the relations in
//! [`crate::relation`] can evaluate meaningfully:
//!
//! * a position has 2 or 3 finite numbers: longitude in [-180, 180], latitude
//!   in [-90, 90] and an optional altitude in metres;
//! * a LineString has at least 2 positions;
//! * a linear ring (a Polygon's boundary or hole) has at least 4 positions and
//!   ends where it starts;
//! * Polygons, Multi* geometries and GeometryCollections must not be empty, and
//!   a GeometryCollection may not contain another one (RFC 7946 section 3.1.8
//!   advises against nesting; refusing it also bounds recursion);
//! * the total number of positions is bounded by [`Limits::max_positions`].
//!
//! Deliberately not checked: ring orientation (RFC 7946 section 3.1.6 says
//! parsers should not reject on winding order), self-intersection of rings
//! and holes lying inside their shell. Relations on such invalid polygons give
//! unspecified (but never panicking) answers.
//!
//! Altitude is kept so that [`to_geojson`] round-trips, but every relation and
//! distance in this crate ignores it: geo-queries are two-dimensional.

use std::fmt;

use geo::{Coord, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon};
use serde_json::{Map, Value};

use crate::GeoError;

/// The default bound on the number of positions in one geometry.
pub const DEFAULT_MAX_POSITIONS: usize = 100_000;

/// Bounds on the work done for one geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest number of positions (over all parts) a geometry may have.
    /// Relations cost at least linear time in this number, and `near` between
    /// two non-point geometries costs time proportional to the product of
    /// their sizes.
    pub max_positions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_positions: DEFAULT_MAX_POSITIONS,
        }
    }
}

/// The GeoJSON geometry types this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeometryKind {
    /// `Point`
    Point,
    /// `MultiPoint`
    MultiPoint,
    /// `LineString`
    LineString,
    /// `MultiLineString`
    MultiLineString,
    /// `Polygon`
    Polygon,
    /// `MultiPolygon`
    MultiPolygon,
    /// `GeometryCollection` (accepted as a GeoProperty value, not as the
    /// reference geometry of a geo-query, which clause 4.10 limits to the six
    /// other types)
    GeometryCollection,
}

impl GeometryKind {
    /// All kinds, in the order GeoJSON lists them.
    pub const ALL: [GeometryKind; 7] = [
        GeometryKind::Point,
        GeometryKind::MultiPoint,
        GeometryKind::LineString,
        GeometryKind::MultiLineString,
        GeometryKind::Polygon,
        GeometryKind::MultiPolygon,
        GeometryKind::GeometryCollection,
    ];

    /// The GeoJSON `type` name, e.g. `"MultiPolygon"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GeometryKind::Point => "Point",
            GeometryKind::MultiPoint => "MultiPoint",
            GeometryKind::LineString => "LineString",
            GeometryKind::MultiLineString => "MultiLineString",
            GeometryKind::Polygon => "Polygon",
            GeometryKind::MultiPolygon => "MultiPolygon",
            GeometryKind::GeometryCollection => "GeometryCollection",
        }
    }

    /// The kind with this exact (case-sensitive) GeoJSON `type` name.
    pub fn from_name(name: &str) -> Option<GeometryKind> {
        GeometryKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for GeometryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated GeoJSON geometry in WGS84 longitude/latitude degrees.
///
/// Build one with [`parse_geojson`], [`crate::parse_geometry_params`] or
/// [`Geometry::point`]; every value of this type satisfies the rules listed in
/// the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    kind: GeometryKind,
    shape: geo::Geometry<f64>,
    /// `[min lon, min lat, max lon, max lat]`, computed once at construction
    /// because every relation starts by comparing boxes.
    bbox: [f64; 4],
    /// One entry per position in document order, present only when at least
    /// one position carried an altitude.
    altitudes: Option<Box<[Option<f64>]>>,
}

impl Geometry {
    /// A Point at `lon`, `lat` (degrees), validated like a parsed one.
    pub fn point(lon: f64, lat: f64) -> Result<Geometry, GeoError> {
        check_lon_lat(lon, lat, &Path::Key("coordinates", None))?;
        Ok(Geometry {
            kind: GeometryKind::Point,
            shape: geo::Geometry::Point(Point::new(lon, lat)),
            bbox: [lon, lat, lon, lat],
            altitudes: None,
        })
    }

    /// The GeoJSON type of this geometry.
    pub fn kind(&self) -> GeometryKind {
        self.kind
    }

    /// The two-dimensional shape, for use with the `geo` crate's algorithms.
    pub fn as_geo(&self) -> &geo::Geometry<f64> {
        &self.shape
    }

    /// The number of positions (over all parts).
    pub fn num_positions(&self) -> usize {
        use geo::CoordsIter;
        self.shape.coords_count()
    }

    /// The altitudes in document order (one per position, `None` where a
    /// position had only two numbers), or `None` when no position had one.
    pub fn altitudes(&self) -> Option<&[Option<f64>]> {
        self.altitudes.as_deref()
    }
}

/// Parses a GeoJSON geometry object with the default [`Limits`].
pub fn parse_geojson(value: &Value) -> Result<Geometry, GeoError> {
    parse_geojson_with(value, &Limits::default())
}

/// Parses a GeoJSON geometry object, bounding its size by `limits`.
pub fn parse_geojson_with(value: &Value, limits: &Limits) -> Result<Geometry, GeoError> {
    let mut parser = Parser::new(limits);
    let root = Path::Root;
    let (kind, shape) = parser.object(value, &root, true)?;
    Ok(parser.finish(kind, shape))
}

/// Parses the `coordinates` member of a geometry of the given kind (not a
/// GeometryCollection, which has no coordinates).
pub(crate) fn parse_coordinates_with(
    kind: GeometryKind,
    coordinates: &Value,
    limits: &Limits,
) -> Result<Geometry, GeoError> {
    let mut parser = Parser::new(limits);
    let path = Path::Key("coordinates", None);
    let shape = parser.coordinates(kind, coordinates, &path)?;
    Ok(parser.finish(kind, shape))
}

/// Renders a geometry as a GeoJSON object with `type` and `coordinates` (or
/// `geometries`). Numbers are written as JSON floats, altitudes are written
/// back where they were given, and `parse_geojson(&to_geojson(g)) == g`.
pub fn to_geojson(geometry: &Geometry) -> Value {
    let mut alts = geometry.altitudes.as_deref().map(|a| a.iter().copied());
    let mut next_alt = || alts.as_mut().and_then(|it| it.next()).flatten();
    render(geometry.kind, &geometry.shape, &mut next_alt)
}

/// The bounding box `[min lon, min lat, max lon, max lat]` of a geometry, in
/// degrees.
pub fn bbox(geometry: &Geometry) -> [f64; 4] {
    geometry.bbox
}

fn compute_bbox(shape: &geo::Geometry<f64>) -> [f64; 4] {
    use geo::CoordsIter;
    let mut bb = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for c in shape.coords_iter() {
        bb[0] = bb[0].min(c.x);
        bb[1] = bb[1].min(c.y);
        bb[2] = bb[2].max(c.x);
        bb[3] = bb[3].max(c.y);
    }
    bb
}

fn render(
    kind: GeometryKind,
    shape: &geo::Geometry<f64>,
    alt: &mut dyn FnMut() -> Option<f64>,
) -> Value {
    let mut pos = |c: &Coord<f64>| -> Value {
        let mut v = vec![Value::from(c.x), Value::from(c.y)];
        if let Some(a) = alt() {
            v.push(Value::from(a));
        }
        Value::Array(v)
    };
    let coordinates = match shape {
        geo::Geometry::Point(p) => pos(&p.0),
        geo::Geometry::MultiPoint(mp) => Value::Array(mp.iter().map(|p| pos(&p.0)).collect()),
        geo::Geometry::LineString(ls) => Value::Array(ls.coords().map(&mut pos).collect()),
        geo::Geometry::MultiLineString(mls) => Value::Array(
            mls.iter()
                .map(|ls| Value::Array(ls.coords().map(&mut pos).collect()))
                .collect(),
        ),
        geo::Geometry::Polygon(p) => render_polygon(p, &mut pos),
        geo::Geometry::MultiPolygon(mp) => {
            Value::Array(mp.iter().map(|p| render_polygon(p, &mut pos)).collect())
        }
        geo::Geometry::GeometryCollection(gc) => {
            let geometries = gc.iter().map(|g| render(kind_of(g), g, alt)).collect();
            let mut object = Map::new();
            object.insert("type".into(), Value::from(kind.as_str()));
            object.insert("geometries".into(), Value::Array(geometries));
            return Value::Object(object);
        }
        // The parser never builds the remaining variants; render them through
        // their GeoJSON equivalents so this function stays total.
        geo::Geometry::Line(l) => Value::Array(vec![pos(&l.start), pos(&l.end)]),
        geo::Geometry::Rect(r) => render_polygon(&r.to_polygon(), &mut pos),
        geo::Geometry::Triangle(t) => render_polygon(&t.to_polygon(), &mut pos),
    };
    let mut object = Map::new();
    object.insert("type".into(), Value::from(kind.as_str()));
    object.insert("coordinates".into(), coordinates);
    Value::Object(object)
}

fn render_polygon(p: &Polygon<f64>, pos: &mut dyn FnMut(&Coord<f64>) -> Value) -> Value {
    let mut rings = Vec::with_capacity(1 + p.interiors().len());
    rings.push(Value::Array(p.exterior().coords().map(&mut *pos).collect()));
    for hole in p.interiors() {
        rings.push(Value::Array(hole.coords().map(&mut *pos).collect()));
    }
    Value::Array(rings)
}

fn kind_of(shape: &geo::Geometry<f64>) -> GeometryKind {
    match shape {
        geo::Geometry::Point(_) => GeometryKind::Point,
        geo::Geometry::MultiPoint(_) => GeometryKind::MultiPoint,
        geo::Geometry::LineString(_) | geo::Geometry::Line(_) => GeometryKind::LineString,
        geo::Geometry::MultiLineString(_) => GeometryKind::MultiLineString,
        geo::Geometry::Polygon(_) | geo::Geometry::Rect(_) | geo::Geometry::Triangle(_) => {
            GeometryKind::Polygon
        }
        geo::Geometry::MultiPolygon(_) => GeometryKind::MultiPolygon,
        geo::Geometry::GeometryCollection(_) => GeometryKind::GeometryCollection,
    }
}

/// A location inside the geometry object, built on the stack while parsing
/// and formatted only when an error is reported.
enum Path<'a> {
    Root,
    Key(&'static str, Option<&'a Path<'a>>),
    Index(usize, &'a Path<'a>),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("the geometry"),
            Path::Key(key, None) => f.write_str(key),
            Path::Key(key, Some(Path::Root)) => f.write_str(key),
            Path::Key(key, Some(parent)) => write!(f, "{parent}.{key}"),
            Path::Index(i, parent) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn invalid(path: &Path<'_>, reason: impl Into<String>) -> GeoError {
    GeoError::InvalidGeometry {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn check_lon_lat(lon: f64, lat: f64, path: &Path<'_>) -> Result<(), GeoError> {
    if !lon.is_finite() || !lat.is_finite() {
        return Err(invalid(path, "coordinates must be finite numbers"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(invalid(
            path,
            format!("longitude {lon} is outside [-180, 180]"),
        ));
    }
    if !(-90.0..=90.0).contains(&lat) {
        return Err(invalid(
            path,
            format!("latitude {lat} is outside [-90, 90]"),
        ));
    }
    Ok(())
}

struct Parser<'l> {
    limits: &'l Limits,
    positions: usize,
    altitudes: Vec<Option<f64>>,
    any_altitude: bool,
}

impl<'l> Parser<'l> {
    fn new(limits: &'l Limits) -> Self {
        Parser {
            limits,
            positions: 0,
            altitudes: Vec::new(),
            any_altitude: false,
        }
    }

    fn finish(self, kind: GeometryKind, shape: geo::Geometry<f64>) -> Geometry {
        let altitudes = self.any_altitude.then(|| self.altitudes.into_boxed_slice());
        Geometry {
            kind,
            bbox: compute_bbox(&shape),
            shape,
            altitudes,
        }
    }

    fn object(
        &mut self,
        value: &Value,
        path: &Path<'_>,
        allow_collection: bool,
    ) -> Result<(GeometryKind, geo::Geometry<f64>), GeoError> {
        let Value::Object(object) = value else {
            return Err(invalid(path, "expected a JSON object"));
        };
        let type_path = Path::Key("type", Some(path));
        let name = match object.get("type") {
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err(invalid(&type_path, "expected a string")),
            None => return Err(invalid(path, "missing member \"type\"")),
        };
        let Some(kind) = GeometryKind::from_name(name) else {
            let reason = if matches!(name, "Feature" | "FeatureCollection") {
                format!("expected a geometry, found a {name}")
            } else {
                format!(
                    "unknown geometry type \"{}\" (expected Point, MultiPoint, LineString, \
                     MultiLineString, Polygon, MultiPolygon or GeometryCollection)",
                    truncate(name)
                )
            };
            return Err(invalid(&type_path, reason));
        };
        if kind == GeometryKind::GeometryCollection {
            if !allow_collection {
                return Err(invalid(
                    &type_path,
                    "a GeometryCollection may not contain another GeometryCollection",
                ));
            }
            let members_path = Path::Key("geometries", Some(path));
            let Some(members) = object.get("geometries") else {
                return Err(invalid(path, "missing member \"geometries\""));
            };
            let Value::Array(members) = members else {
                return Err(invalid(&members_path, "expected an array"));
            };
            if members.is_empty() {
                return Err(invalid(
                    &members_path,
                    "a GeometryCollection must not be empty",
                ));
            }
            let mut parts = Vec::with_capacity(members.len().min(1024));
            for (i, member) in members.iter().enumerate() {
                let (_, shape) = self.object(member, &Path::Index(i, &members_path), false)?;
                parts.push(shape);
            }
            return Ok((kind, geo::Geometry::GeometryCollection(parts.into())));
        }
        let Some(coordinates) = object.get("coordinates") else {
            return Err(invalid(path, "missing member \"coordinates\""));
        };
        let coordinates_path = Path::Key("coordinates", Some(path));
        Ok((
            kind,
            self.coordinates(kind, coordinates, &coordinates_path)?,
        ))
    }

    fn coordinates(
        &mut self,
        kind: GeometryKind,
        value: &Value,
        path: &Path<'_>,
    ) -> Result<geo::Geometry<f64>, GeoError> {
        Ok(match kind {
            GeometryKind::Point => geo::Geometry::Point(Point(self.position(value, path)?)),
            GeometryKind::MultiPoint => {
                let items = self.non_empty_array(value, path, "a MultiPoint")?;
                let mut points = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    points.push(Point(self.position(item, &Path::Index(i, path))?));
                }
                geo::Geometry::MultiPoint(MultiPoint(points))
            }
            GeometryKind::LineString => geo::Geometry::LineString(self.line_string(value, path)?),
            GeometryKind::MultiLineString => {
                let items = self.non_empty_array(value, path, "a MultiLineString")?;
                let mut lines = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    lines.push(self.line_string(item, &Path::Index(i, path))?);
                }
                geo::Geometry::MultiLineString(MultiLineString(lines))
            }
            GeometryKind::Polygon => geo::Geometry::Polygon(self.polygon(value, path)?),
            GeometryKind::MultiPolygon => {
                let items = self.non_empty_array(value, path, "a MultiPolygon")?;
                let mut polygons = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    polygons.push(self.polygon(item, &Path::Index(i, path))?);
                }
                geo::Geometry::MultiPolygon(MultiPolygon(polygons))
            }
            GeometryKind::GeometryCollection => {
                return Err(invalid(path, "a GeometryCollection has no coordinates"));
            }
        })
    }

    fn non_empty_array<'v>(
        &self,
        value: &'v Value,
        path: &Path<'_>,
        what: &str,
    ) -> Result<&'v [Value], GeoError> {
        let Value::Array(items) = value else {
            return Err(invalid(path, "expected an array"));
        };
        if items.is_empty() {
            return Err(invalid(path, format!("{what} must not be empty")));
        }
        Ok(items)
    }

    fn position(&mut self, value: &Value, path: &Path<'_>) -> Result<Coord<f64>, GeoError> {
        let Value::Array(numbers) = value else {
            return Err(invalid(
                path,
                "expected a position (an array of 2 or 3 numbers)",
            ));
        };
        if !(2..=3).contains(&numbers.len()) {
            return Err(invalid(
                path,
                format!("a position has 2 or 3 numbers, found {}", numbers.len()),
            ));
        }
        if self.positions >= self.limits.max_positions {
            return Err(GeoError::TooManyPositions {
                limit: self.limits.max_positions,
            });
        }
        self.positions += 1;
        let mut xyz = [0.0; 3];
        for (i, (slot, number)) in xyz.iter_mut().zip(numbers).enumerate() {
            *slot = match number.as_f64() {
                Some(n) if n.is_finite() => n,
                Some(_) => return Err(invalid(&Path::Index(i, path), "expected a finite number")),
                None => return Err(invalid(&Path::Index(i, path), "expected a number")),
            };
        }
        check_lon_lat(xyz[0], xyz[1], path)?;
        let altitude = (numbers.len() == 3).then_some(xyz[2]);
        self.any_altitude |= altitude.is_some();
        self.altitudes.push(altitude);
        Ok(Coord {
            x: xyz[0],
            y: xyz[1],
        })
    }

    fn positions(&mut self, value: &Value, path: &Path<'_>) -> Result<Vec<Coord<f64>>, GeoError> {
        let Value::Array(items) = value else {
            return Err(invalid(path, "expected an array of positions"));
        };
        let mut coords = Vec::with_capacity(items.len().min(self.limits.max_positions));
        for (i, item) in items.iter().enumerate() {
            coords.push(self.position(item, &Path::Index(i, path))?);
        }
        Ok(coords)
    }

    fn line_string(&mut self, value: &Value, path: &Path<'_>) -> Result<LineString<f64>, GeoError> {
        let coords = self.positions(value, path)?;
        if coords.len() < 2 {
            return Err(invalid(
                path,
                format!(
                    "a LineString needs at least 2 positions, found {}",
                    coords.len()
                ),
            ));
        }
        Ok(LineString(coords))
    }

    fn ring(&mut self, value: &Value, path: &Path<'_>) -> Result<LineString<f64>, GeoError> {
        let coords = self.positions(value, path)?;
        if coords.len() < 4 {
            return Err(invalid(
                path,
                format!(
                    "a linear ring needs at least 4 positions, found {}",
                    coords.len()
                ),
            ));
        }
        if coords.first() != coords.last() {
            return Err(invalid(
                path,
                "a linear ring must end with the position it starts with",
            ));
        }
        Ok(LineString(coords))
    }

    fn polygon(&mut self, value: &Value, path: &Path<'_>) -> Result<Polygon<f64>, GeoError> {
        let rings = self.non_empty_array(value, path, "a Polygon")?;
        let exterior = self.ring(&rings[0], &Path::Index(0, path))?;
        let mut holes = Vec::with_capacity(rings.len() - 1);
        for (i, ring) in rings.iter().enumerate().skip(1) {
            holes.push(self.ring(ring, &Path::Index(i, path))?);
        }
        Ok(Polygon::new(exterior, holes))
    }
}

/// Keeps echoed user input in error messages short.
pub(crate) fn truncate(text: &str) -> &str {
    const MAX: usize = 40;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
