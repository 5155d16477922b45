//! GeoJSON parsing, validation, rendering and bounding boxes.

use serde_json::{Value, json};

use crate::{GeoError, Limits, bbox, parse_geojson, parse_geojson_with, to_geojson};

/// Parses `input`; `expect` is the geometry kind (and the value must then
/// round-trip through `to_geojson`) or the error message.
#[track_caller]
fn check(input: &str, expect: &str) {
    let value: Value = serde_json::from_str(input).expect("test JSON is valid");
    let actual = match parse_geojson(&value) {
        Ok(g) => {
            let rendered = to_geojson(&g);
            assert_eq!(
                parse_geojson(&rendered).as_ref(),
                Ok(&g),
                "round trip of {input}"
            );
            g.kind().to_string()
        }
        Err(e) => e.to_string(),
    };
    assert_eq!(actual, expect, "input: {input}");
}

#[test]
fn valid_geometries() {
    check(
        r#"{"type":"Point","coordinates":[113.3245,23.1064]}"#,
        "Point",
    );
    check(r#"{"type":"Point","coordinates":[113,23]}"#, "Point");
    check(
        r#"{"type":"Point","coordinates":[113.3245,23.1064,488]}"#,
        "Point",
    );
    check(r#"{"type":"Point","coordinates":[-180,-90]}"#, "Point");
    check(r#"{"type":"Point","coordinates":[180,90]}"#, "Point");
    check(
        r#"{"type":"MultiPoint","coordinates":[[113.3245,23.1064],[113.2988,23.3924]]}"#,
        "MultiPoint",
    );
    check(
        r#"{"type":"LineString","coordinates":[[113.24,23.11],[113.40,23.10]]}"#,
        "LineString",
    );
    check(
        r#"{"type":"MultiLineString","coordinates":[[[113.24,23.11],[113.40,23.10]],[[113.3,23.2],[113.3,23.3,12]]]}"#,
        "MultiLineString",
    );
    check(
        &format!(r#"{{"type":"Polygon","coordinates":{}}}"#, super::TIANHE),
        "Polygon",
    );
    check(
        r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[2,2],[2,4],[4,4],[2,2]]]}"#,
        "Polygon",
    );
    check(
        r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[5,5],[6,5],[6,6],[5,5]]]]}"#,
        "MultiPolygon",
    );
    check(
        r#"{"type":"GeometryCollection","geometries":[{"type":"Point","coordinates":[113.3,23.1]},{"type":"LineString","coordinates":[[113.3,23.1],[113.4,23.2]]}]}"#,
        "GeometryCollection",
    );
    // Foreign members and bbox are allowed and ignored.
    check(
        r#"{"type":"Point","coordinates":[1,2],"bbox":[1,2,1,2],"name":"x"}"#,
        "Point",
    );
}

#[test]
fn malformed_objects() {
    check(
        r#"[113.3,23.1]"#,
        "invalid GeoJSON geometry at the geometry: expected a JSON object",
    );
    check(
        r#"{"coordinates":[1,2]}"#,
        r#"invalid GeoJSON geometry at the geometry: missing member "type""#,
    );
    check(
        r#"{"type":5,"coordinates":[1,2]}"#,
        "invalid GeoJSON geometry at type: expected a string",
    );
    check(
        r#"{"type":"point","coordinates":[1,2]}"#,
        r#"invalid GeoJSON geometry at type: unknown geometry type "point" (expected Point, MultiPoint, LineString, MultiLineString, Polygon, MultiPolygon or GeometryCollection)"#,
    );
    check(
        r#"{"type":"Feature","geometry":null}"#,
        "invalid GeoJSON geometry at type: expected a geometry, found a Feature",
    );
    check(
        r#"{"type":"Point"}"#,
        r#"invalid GeoJSON geometry at the geometry: missing member "coordinates""#,
    );
    check(
        r#"{"type":"GeometryCollection"}"#,
        r#"invalid GeoJSON geometry at the geometry: missing member "geometries""#,
    );
    check(
        r#"{"type":"GeometryCollection","geometries":[]}"#,
        "invalid GeoJSON geometry at geometries: a GeometryCollection must not be empty",
    );
    check(
        r#"{"type":"GeometryCollection","geometries":[{"type":"GeometryCollection","geometries":[]}]}"#,
        "invalid GeoJSON geometry at geometries[0].type: a GeometryCollection may not contain another GeometryCollection",
    );
    check(
        r#"{"type":"GeometryCollection","geometries":[{"type":"Point","coordinates":[1,200]}]}"#,
        "invalid GeoJSON geometry at geometries[0].coordinates: latitude 200 is outside [-90, 90]",
    );
}

#[test]
fn malformed_positions() {
    check(
        r#"{"type":"Point","coordinates":[113.3]}"#,
        "invalid GeoJSON geometry at coordinates: a position has 2 or 3 numbers, found 1",
    );
    check(
        r#"{"type":"Point","coordinates":[1,2,3,4]}"#,
        "invalid GeoJSON geometry at coordinates: a position has 2 or 3 numbers, found 4",
    );
    check(
        r#"{"type":"Point","coordinates":[[1,2]]}"#,
        "invalid GeoJSON geometry at coordinates: a position has 2 or 3 numbers, found 1",
    );
    check(
        r#"{"type":"Point","coordinates":[[1,2],3]}"#,
        "invalid GeoJSON geometry at coordinates[0]: expected a number",
    );
    check(
        r#"{"type":"Point","coordinates":["113.3","23.1"]}"#,
        "invalid GeoJSON geometry at coordinates[0]: expected a number",
    );
    check(
        r#"{"type":"Point","coordinates":[1,2,null]}"#,
        "invalid GeoJSON geometry at coordinates[2]: expected a number",
    );
    check(
        r#"{"type":"Point","coordinates":"[1,2]"}"#,
        "invalid GeoJSON geometry at coordinates: expected a position (an array of 2 or 3 numbers)",
    );
    // Latitude first is the classic mistake; for Guangzhou it is caught.
    check(
        r#"{"type":"Point","coordinates":[23.1064,113.3245]}"#,
        "invalid GeoJSON geometry at coordinates: latitude 113.3245 is outside [-90, 90]",
    );
    check(
        r#"{"type":"Point","coordinates":[180.5,0]}"#,
        "invalid GeoJSON geometry at coordinates: longitude 180.5 is outside [-180, 180]",
    );
    check(
        r#"{"type":"MultiPoint","coordinates":[[1,2],[3]]}"#,
        "invalid GeoJSON geometry at coordinates[1]: a position has 2 or 3 numbers, found 1",
    );
}

#[test]
fn malformed_shapes() {
    check(
        r#"{"type":"MultiPoint","coordinates":[]}"#,
        "invalid GeoJSON geometry at coordinates: a MultiPoint must not be empty",
    );
    check(
        r#"{"type":"LineString","coordinates":[[1,2]]}"#,
        "invalid GeoJSON geometry at coordinates: a LineString needs at least 2 positions, found 1",
    );
    check(
        r#"{"type":"LineString","coordinates":[1,2]}"#,
        "invalid GeoJSON geometry at coordinates[0]: expected a position (an array of 2 or 3 numbers)",
    );
    check(
        r#"{"type":"MultiLineString","coordinates":[[[1,2],[3,4]],[[1,2]]]}"#,
        "invalid GeoJSON geometry at coordinates[1]: a LineString needs at least 2 positions, found 1",
    );
    check(
        r#"{"type":"Polygon","coordinates":[]}"#,
        "invalid GeoJSON geometry at coordinates: a Polygon must not be empty",
    );
    check(
        r#"{"type":"Polygon","coordinates":[[0,0],[1,0],[1,1],[0,0]]}"#,
        "invalid GeoJSON geometry at coordinates[0][0]: expected a position (an array of 2 or 3 numbers)",
    );
    check(
        r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}"#,
        "invalid GeoJSON geometry at coordinates[0]: a linear ring needs at least 4 positions, found 3",
    );
    check(
        r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}"#,
        "invalid GeoJSON geometry at coordinates[0]: a linear ring must end with the position it starts with",
    );
    check(
        r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,0]],[[1,1],[2,1],[1,2]]]}"#,
        "invalid GeoJSON geometry at coordinates[1]: a linear ring needs at least 4 positions, found 3",
    );
    check(
        r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[]]}"#,
        "invalid GeoJSON geometry at coordinates[1]: a Polygon must not be empty",
    );
    check(
        r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[0,0],[1,0],[1,1],[0,0,5]]]]}"#,
        "MultiPolygon",
    );
}

#[test]
fn points_built_in_code_are_validated_too() {
    assert!(crate::Geometry::point(113.3245, 23.1064).is_ok());
    assert_eq!(
        crate::Geometry::point(f64::NAN, 23.1)
            .unwrap_err()
            .to_string(),
        "invalid GeoJSON geometry at coordinates: coordinates must be finite numbers"
    );
    assert_eq!(
        crate::Geometry::point(113.3, -91.0)
            .unwrap_err()
            .to_string(),
        "invalid GeoJSON geometry at coordinates: latitude -91 is outside [-90, 90]"
    );
}

#[test]
fn position_limit_bounds_work() {
    let limits = Limits { max_positions: 3 };
    let line = |n: usize| {
        let coordinates: Vec<Value> = (0..n).map(|i| json!([i as f64 * 0.001, 0.0])).collect();
        json!({"type": "LineString", "coordinates": coordinates})
    };
    assert!(parse_geojson_with(&line(3), &limits).is_ok());
    assert_eq!(
        parse_geojson_with(&line(4), &limits),
        Err(GeoError::TooManyPositions { limit: 3 })
    );
    assert_eq!(
        parse_geojson_with(&line(4), &limits)
            .unwrap_err()
            .to_string(),
        "geometry has more than 3 positions"
    );
    // The default is generous enough for a detailed district boundary.
    assert!(parse_geojson(&line(50_000)).is_ok());
    assert!(parse_geojson(&line(crate::DEFAULT_MAX_POSITIONS + 1)).is_err());
}

#[test]
fn altitude_is_kept_for_rendering() {
    let input = json!({"type": "LineString", "coordinates": [[113.3245, 23.1064, 488.0], [113.2988, 23.3924]]});
    let g = parse_geojson(&input).unwrap();
    assert_eq!(g.altitudes(), Some(&[Some(488.0), None][..]));
    assert_eq!(to_geojson(&g), input);
    let flat = json!({"type": "Polygon", "coordinates": [[[0.5, 0.5], [1.5, 0.5], [1.5, 1.5], [0.5, 0.5]]]});
    let g = parse_geojson(&flat).unwrap();
    assert_eq!(g.altitudes(), None);
    assert_eq!(to_geojson(&g), flat);
}

#[test]
fn bounding_boxes() {
    #[track_caller]
    fn check(input: &str, expect: [f64; 4]) {
        assert_eq!(bbox(&super::geo(input)), expect, "input: {input}");
    }
    check(
        r#"{"type":"Point","coordinates":[113.3245,23.1064]}"#,
        [113.3245, 23.1064, 113.3245, 23.1064],
    );
    check(
        &format!(r#"{{"type":"Polygon","coordinates":{}}}"#, super::TIANHE),
        [113.26, 23.10, 113.44, 23.25],
    );
    check(
        r#"{"type":"GeometryCollection","geometries":[{"type":"Point","coordinates":[113.2988,23.3924]},{"type":"LineString","coordinates":[[113.2436,23.1078],[113.3245,23.1064]]}]}"#,
        [113.2436, 23.1064, 113.3245, 23.3924],
    );
}
