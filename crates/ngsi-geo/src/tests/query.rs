//! Geo-queries from query parameters and from GeoQuery JSON objects.

use serde_json::{Value, json};

use crate::{
    GeoQuery, GeoRel, NearDistance, parse_geometry_params, parse_geoquery_json,
    parse_geoquery_params, to_geojson,
};

/// Parses the `geometry` and `coordinates` parameters; `expect` is the
/// resulting GeoJSON (compact JSON text) or the error message.
#[track_caller]
fn check(geometry: &str, coordinates: &str, expect: &str) {
    let actual = match parse_geometry_params(geometry, coordinates) {
        Ok(g) => to_geojson(&g).to_string(),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        actual, expect,
        "geometry={geometry}&coordinates={coordinates}"
    );
}

#[test]
fn geometry_parameters() {
    check(
        "Point",
        "[113.3245,23.1064]",
        r#"{"type":"Point","coordinates":[113.3245,23.1064]}"#,
    );
    check(
        "Point",
        " [ 113.3245 , 23.1064 ] ",
        r#"{"type":"Point","coordinates":[113.3245,23.1064]}"#,
    );
    check(
        "Polygon",
        super::TIANHE,
        r#"{"type":"Polygon","coordinates":[[[113.26,23.1],[113.44,23.1],[113.44,23.25],[113.26,23.25],[113.26,23.1]]]}"#,
    );
    check(
        "LineString",
        "[[113.2,23.12],[113.5,23.13]]",
        r#"{"type":"LineString","coordinates":[[113.2,23.12],[113.5,23.13]]}"#,
    );
    check(
        "MultiPoint",
        "[[113.3245,23.1064]]",
        r#"{"type":"MultiPoint","coordinates":[[113.3245,23.1064]]}"#,
    );
    check(
        "point",
        "[113.3245,23.1064]",
        r#"invalid geo-query: unsupported geometry "point" (expected Point, MultiPoint, LineString, MultiLineString, Polygon or MultiPolygon)"#,
    );
    check(
        "GeometryCollection",
        "[]",
        r#"invalid geo-query: unsupported geometry "GeometryCollection" (expected Point, MultiPoint, LineString, MultiLineString, Polygon or MultiPolygon)"#,
    );
    check(
        "Point",
        "113.3245,23.1064",
        "invalid coordinates at byte 0: expected a JSON array",
    );
    check(
        "Point",
        "",
        "invalid coordinates at byte 0: expected a JSON array",
    );
    check(
        "Point",
        "  {}",
        "invalid coordinates at byte 2: expected a JSON array",
    );
    check(
        "Point",
        "[113.3245,23.1064",
        "invalid coordinates at byte 17: EOF while parsing a list",
    );
    check(
        "Point",
        "[113.3245,,23.1064]",
        "invalid coordinates at byte 10: expected value",
    );
    check(
        "Point",
        "[113.3245,23.1064]x",
        "invalid coordinates at byte 18: trailing characters",
    );
    check(
        "Polygon",
        "[113.3245,23.1064]",
        "invalid GeoJSON geometry at coordinates[0]: expected an array of positions",
    );
    check(
        "Point",
        "[23.1064,113.3245]",
        "invalid GeoJSON geometry at coordinates: latitude 113.3245 is outside [-90, 90]",
    );
}

#[test]
fn full_queries_from_parameters() {
    let q = parse_geoquery_params(
        Some("near;maxDistance==2000"),
        Some("Point"),
        Some("[113.3245,23.1064]"),
        None,
    )
    .unwrap();
    assert_eq!(q.georel, GeoRel::Near(NearDistance::Max(2000.0)));
    assert_eq!(q.geoproperty_or_default(), "location");
    assert!(!q.matches(&super::point(super::GUANGZHOU_EAST)));
    assert!(q.matches(&super::point((113.33, 23.11))));

    let q = parse_geoquery_params(
        Some("within"),
        Some("Polygon"),
        Some(super::TIANHE),
        Some("area"),
    )
    .unwrap();
    assert_eq!(q.geoproperty.as_deref(), Some("area"));
    assert!(q.matches(&super::point(super::CANTON_TOWER)));
    assert!(!q.matches(&super::point(super::BAIYUN_AIRPORT)));

    #[track_caller]
    fn error(
        georel: Option<&str>,
        geometry: Option<&str>,
        coordinates: Option<&str>,
        geoproperty: Option<&str>,
        expect: &str,
    ) {
        let e = parse_geoquery_params(georel, geometry, coordinates, geoproperty).unwrap_err();
        assert_eq!(e.to_string(), expect);
    }
    error(
        None,
        Some("Point"),
        Some("[1,2]"),
        None,
        "invalid geo-query: missing parameter georel",
    );
    error(
        Some("within"),
        None,
        Some("[1,2]"),
        None,
        "invalid geo-query: missing parameter geometry",
    );
    error(
        Some("within"),
        Some("Point"),
        None,
        None,
        "invalid geo-query: missing parameter coordinates",
    );
    error(
        Some("near"),
        Some("Point"),
        Some("[1,2]"),
        None,
        "invalid georel at byte 4: near needs a distance: near;maxDistance==<metres> or near;minDistance==<metres>",
    );
    error(
        Some("within"),
        Some("Point"),
        Some("[1,2]"),
        Some(""),
        "invalid geo-query: geoproperty must not be empty",
    );
}

/// Parses a GeoQuery JSON object; `expect` is the Display of georel,
/// geometry kind and geoproperty, or the error message.
#[track_caller]
fn check_json(input: Value, expect: &str) {
    let actual = match parse_geoquery_json(&input) {
        Ok(q) => {
            assert_eq!(
                parse_geoquery_json(&q.to_json()).as_ref(),
                Ok(&q),
                "to_json round trip"
            );
            format!(
                "{} {} {}",
                q.georel,
                q.geometry.kind(),
                q.geoproperty_or_default()
            )
        }
        Err(e) => e.to_string(),
    };
    assert_eq!(actual, expect, "input: {input}");
}

#[test]
fn geoquery_json() {
    check_json(
        json!({"geometry": "Point", "coordinates": [113.3245, 23.1064], "georel": "near;maxDistance==500"}),
        "near;maxDistance==500 Point location",
    );
    // Coordinates as a string, as some versions of the specification allow.
    check_json(
        json!({"geometry": "Polygon", "coordinates": super::TIANHE, "georel": "within", "geoproperty": "area"}),
        "within Polygon area",
    );
    check_json(json!([]), "invalid geo-query: expected a JSON object");
    check_json(
        json!({"geometry": "Point", "coordinates": [1, 2]}),
        "invalid geo-query: missing member georel",
    );
    check_json(
        json!({"georel": "within", "coordinates": [1, 2]}),
        "invalid geo-query: missing member geometry",
    );
    check_json(
        json!({"georel": "within", "geometry": "Point"}),
        "invalid geo-query: missing member coordinates",
    );
    check_json(
        json!({"georel": "within", "geometry": "Point", "coordinates": {"x": 1}}),
        "invalid geo-query: coordinates must be an array or a string",
    );
    check_json(
        json!({"georel": 1, "geometry": "Point", "coordinates": [1, 2]}),
        "invalid geo-query: georel must be a string",
    );
    check_json(
        json!({"georel": "within", "geometry": "Point", "coordinates": "[1,"}),
        "invalid coordinates at byte 3: EOF while parsing a value",
    );
    check_json(
        json!({"georel": "within", "geometry": "Point", "coordinates": [1, 2], "geoproperty": 7}),
        "invalid geo-query: geoproperty must be a string",
    );
}

#[test]
fn to_json_shape() {
    let q: GeoQuery = parse_geoquery_params(
        Some("near;minDistance==10"),
        Some("Point"),
        Some("[113.3245,23.1064]"),
        Some("location"),
    )
    .unwrap();
    assert_eq!(
        q.to_json(),
        json!({"geometry": "Point", "coordinates": [113.3245, 23.1064], "georel": "near;minDistance==10", "geoproperty": "location"})
    );
}
