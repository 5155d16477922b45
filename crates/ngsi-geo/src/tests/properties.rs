//! Property tests: nothing panics, and the relations are consistent with
//! each other.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{
    GeoRel, Geometry, NearDistance, bbox, distance_m, matches, parse_geojson,
    parse_geometry_params, parse_geoquery_json, parse_georel, prefilter_bbox, to_geojson,
};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-200i64..200).prop_map(Value::from),
        prop_oneof![
            Just("Point"),
            Just("MultiPoint"),
            Just("LineString"),
            Just("MultiLineString"),
            Just("Polygon"),
            Just("MultiPolygon"),
            Just("GeometryCollection"),
            Just("type"),
            Just("coordinates"),
            Just("geometries"),
        ]
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("type".to_string()),
                        Just("coordinates".to_string()),
                        Just("geometries".to_string()),
                        Just("georel".to_string()),
                        Just("geometry".to_string()),
                        "[a-z]{1,4}",
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Valid geometries on a coarse grid around Guangzhou, so that shared
/// vertices, collinear edges and touching boundaries are common.
fn any_geometry() -> impl Strategy<Value = Geometry> {
    let coord = (0u8..12, 0u8..12)
        .prop_map(|(x, y)| json!([113.2 + f64::from(x) * 0.02, 23.0 + f64::from(y) * 0.02]));
    let rect = (0u8..10, 0u8..10, 1u8..6, 1u8..6).prop_map(|(x, y, w, h)| {
        let (x0, y0) = (113.2 + f64::from(x) * 0.02, 23.0 + f64::from(y) * 0.02);
        let (x1, y1) = (x0 + f64::from(w) * 0.02, y0 + f64::from(h) * 0.02);
        json!([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
    });
    let value = prop_oneof![
        coord
            .clone()
            .prop_map(|c| json!({"type": "Point", "coordinates": c})),
        prop::collection::vec(coord.clone(), 1..4)
            .prop_map(|c| json!({"type": "MultiPoint", "coordinates": c})),
        prop::collection::vec(coord.clone(), 2..5)
            .prop_map(|c| json!({"type": "LineString", "coordinates": c})),
        rect.clone()
            .prop_map(|c| json!({"type": "Polygon", "coordinates": c})),
        (coord.clone(), coord.clone(), coord).prop_map(|(a, b, c)| {
            json!({"type": "Polygon", "coordinates": [[a.clone(), b, c, a]]})
        }),
        prop::collection::vec(rect, 1..3)
            .prop_map(|c| json!({"type": "MultiPolygon", "coordinates": c})),
    ];
    value.prop_map(|v| parse_geojson(&v).expect("generated geometry is valid"))
}

proptest! {
    #[test]
    fn parsing_json_never_panics(value in any_json()) {
        if let Ok(g) = parse_geojson(&value) {
            prop_assert_eq!(parse_geojson(&to_geojson(&g)), Ok(g));
        }
        let _ = parse_geoquery_json(&value);
    }

    #[test]
    fn parsing_text_never_panics(text in "\\PC{0,40}", coords in "[\\[\\]0-9.,eE+ -]{0,30}") {
        let _ = parse_georel(&text);
        let _ = parse_geometry_params(&text, &coords);
        let _ = parse_geometry_params("Polygon", &coords);
        let _ = parse_geometry_params("LineString", &text);
    }

    #[test]
    fn georel_like_text_never_panics(text in "(near|within|n)?;?(max|min)?Distance?={0,3}[0-9.]{0,6};?") {
        if let Ok(rel) = parse_georel(&text) {
            prop_assert_eq!(parse_georel(&rel.to_string()), Ok(rel));
        }
    }

    #[test]
    fn near_distances_display_round_trip(d in 0.0f64..1e12, max in any::<bool>()) {
        let rel = GeoRel::Near(if max { NearDistance::Max(d) } else { NearDistance::Min(d) });
        prop_assert_eq!(parse_georel(&rel.to_string()), Ok(rel));
    }

    #[test]
    fn geometries_round_trip(g in any_geometry()) {
        prop_assert_eq!(parse_geojson(&to_geojson(&g)), Ok(g));
    }

    #[test]
    fn equals_is_reflexive(g in any_geometry()) {
        prop_assert!(matches(&GeoRel::Equals, &g, &g));
        prop_assert!(matches(&GeoRel::Intersects, &g, &g));
        prop_assert_eq!(distance_m(&g, &g), 0.0);
    }

    #[test]
    fn relations_are_consistent(a in any_geometry(), b in any_geometry()) {
        let intersects = matches(&GeoRel::Intersects, &a, &b);
        prop_assert_eq!(matches(&GeoRel::Disjoint, &a, &b), !intersects);
        prop_assert_eq!(matches(&GeoRel::Intersects, &b, &a), intersects);
        if matches(&GeoRel::Within, &a, &b) {
            prop_assert!(intersects);
            prop_assert!(matches(&GeoRel::Contains, &b, &a));
        }
        if matches(&GeoRel::Contains, &a, &b) {
            prop_assert!(intersects);
        }
        if matches(&GeoRel::Overlaps, &a, &b) {
            prop_assert!(intersects);
            prop_assert!(!matches(&GeoRel::Within, &a, &b));
            prop_assert!(!matches(&GeoRel::Contains, &a, &b));
        }
        if matches(&GeoRel::Equals, &a, &b) {
            prop_assert!(matches(&GeoRel::Equals, &b, &a));
        }
        let d = distance_m(&a, &b);
        prop_assert!(d.is_finite() && d >= 0.0);
        // Geometries 1e-15 degrees apart are disjoint yet at distance 0 m
        // after rounding, so only one direction holds exactly.
        if intersects {
            prop_assert_eq!(d, 0.0);
        } else {
            prop_assert!(matches(&GeoRel::Near(NearDistance::Min(d)), &a, &b));
        }
    }

    #[test]
    fn invalid_polygons_never_panic(
        ring in prop::collection::vec((0u8..6, 0u8..6), 3..7),
        b in any_geometry(),
        d in 0.0f64..10_000.0,
    ) {
        // Rings on a small grid: bow ties, spikes, repeated and collinear
        // vertices, zero area.
        let mut coordinates: Vec<Value> = ring
            .iter()
            .map(|&(x, y)| json!([113.3 + f64::from(x) * 0.01, 23.1 + f64::from(y) * 0.01]))
            .collect();
        coordinates.push(coordinates[0].clone());
        let a = parse_geojson(&json!({"type": "Polygon", "coordinates": [coordinates]}))
            .expect("closed ring of 4 or more positions");
        for rel in [
            GeoRel::Near(NearDistance::Max(d)),
            GeoRel::Near(NearDistance::Min(d)),
            GeoRel::Within,
            GeoRel::Contains,
            GeoRel::Intersects,
            GeoRel::Equals,
            GeoRel::Disjoint,
            GeoRel::Overlaps,
        ] {
            let _ = matches(&rel, &a, &b);
            let _ = matches(&rel, &b, &a);
            let _ = matches(&rel, &a, &a);
        }
    }

    #[test]
    fn near_is_monotone_in_distance(a in any_geometry(), b in any_geometry(), d1 in 0.0f64..40_000.0, d2 in 0.0f64..40_000.0) {
        let (lo, hi) = if d1 <= d2 { (d1, d2) } else { (d2, d1) };
        if matches(&GeoRel::Near(NearDistance::Max(lo)), &a, &b) {
            prop_assert!(matches(&GeoRel::Near(NearDistance::Max(hi)), &a, &b));
        }
        if matches(&GeoRel::Near(NearDistance::Min(hi)), &a, &b) {
            prop_assert!(matches(&GeoRel::Near(NearDistance::Min(lo)), &a, &b));
        }
        // Exactly one of "at most d" and "at least d" holds unless the
        // distance is exactly d.
        let max = matches(&GeoRel::Near(NearDistance::Max(lo)), &a, &b);
        let min = matches(&GeoRel::Near(NearDistance::Min(lo)), &a, &b);
        prop_assert!(max || min);
    }

    #[test]
    fn prefilter_box_never_excludes_a_match(a in any_geometry(), b in any_geometry(), d in 0.0f64..20_000.0) {
        for rel in [
            GeoRel::Near(NearDistance::Max(d)),
            GeoRel::Within,
            GeoRel::Contains,
            GeoRel::Intersects,
            GeoRel::Equals,
            GeoRel::Overlaps,
        ] {
            if matches(&rel, &a, &b) {
                let [x0, y0, x1, y1] = prefilter_bbox(&rel, &b).expect("a box for this relation");
                let [ax0, ay0, ax1, ay1] = bbox(&a);
                prop_assert!(ax0 <= x1 && x0 <= ax1 && ay0 <= y1 && y0 <= ay1, "{rel}");
            }
        }
    }
}
