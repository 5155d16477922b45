//! Distances in metres, bounding boxes of near searches.

use geo::{Destination, Distance, Geodesic, Point};

use crate::{Geometry, bbox, distance_m, near_bbox, parse_georel, prefilter_bbox};

use super::{BAIYUN_AIRPORT, CANTON_TOWER, GUANGZHOU_EAST, SHAMIAN, TIANHE, geo, point, polygon};

#[track_caller]
fn check(a: &Geometry, b: &Geometry, expect_m: f64, tolerance_m: f64) {
    let actual = distance_m(a, b);
    assert!(
        (actual - expect_m).abs() <= tolerance_m,
        "distance {actual} m, expected {expect_m} ± {tolerance_m} m"
    );
    let back = distance_m(b, a);
    assert!(
        (actual - back).abs() <= 1e-6 * actual.max(1.0),
        "asymmetric: {actual} vs {back}"
    );
}

#[test]
fn between_points() {
    // One degree of latitude: 110 574 m at the equator (WGS84 meridian arc),
    // about 110 751 m at Guangzhou's latitude.
    check(&point((0.0, 0.0)), &point((0.0, 1.0)), 110_574.4, 1.0);
    check(
        &point((113.0, 23.0)),
        &point((113.0, 24.0)),
        110_751.0,
        20.0,
    );
    // One degree of longitude on the equator: 111 319.5 m.
    check(&point((0.0, 0.0)), &point((1.0, 0.0)), 111_319.5, 1.0);
    // Canton Tower to Baiyun airport: about 31.8 km.
    check(&point(CANTON_TOWER), &point(BAIYUN_AIRPORT), 31_783.0, 60.0);
    // Canton Tower to Guangzhou East station: 0.0439 degrees of latitude
    // due north, about 4.86 km.
    check(&point(CANTON_TOWER), &point(GUANGZHOU_EAST), 4_862.0, 10.0);
    check(&point(CANTON_TOWER), &point(CANTON_TOWER), 0.0, 0.0);
    // Across the antimeridian the short way round.
    check(&point((179.9, 0.0)), &point((-179.9, 0.0)), 22_263.9, 1.0);
}

#[test]
fn to_lines_and_polygons() {
    let tianhe = polygon(TIANHE);
    // Inside or on the boundary: zero.
    check(&point(CANTON_TOWER), &tianhe, 0.0, 0.0);
    check(&point((113.26, 23.2)), &tianhe, 0.0, 0.0);
    // Shamian to the western edge (113.26 E): 0.0164 degrees of longitude at
    // 23.1078 N, about 1 680 m.
    check(&point(SHAMIAN), &tianhe, 1_680.0, 2.0);
    // Baiyun airport to the northern edge (23.25 N): 0.1424 degrees of
    // latitude, about 15 770 m.
    check(&point(BAIYUN_AIRPORT), &tianhe, 15_771.0, 10.0);
    // Perpendicular foot inside a meridian segment: 0.01 degrees of longitude
    // at 23.1 N is about 1 024 m.
    let meridian = geo(r#"{"type":"LineString","coordinates":[[113.30,23.0],[113.30,23.2]]}"#);
    check(&point((113.31, 23.1)), &meridian, 1_024.4, 1.0);
    // Beyond the segment's end the end point is nearest: 0.01 degrees of
    // latitude, about 1 107 m.
    let short = geo(r#"{"type":"LineString","coordinates":[[113.30,23.0],[113.30,23.05]]}"#);
    check(&point((113.30, 23.06)), &short, 1_107.5, 1.0);
    // Polygon to polygon: two boxes 0.01 degrees of latitude apart.
    let north =
        polygon("[[[113.30,23.26],[113.40,23.26],[113.40,23.30],[113.30,23.30],[113.30,23.26]]]");
    check(&north, &tianhe, 1_107.5, 1.0);
    // A line crossing the polygon is at distance zero.
    let road = geo(r#"{"type":"LineString","coordinates":[[113.20,23.12],[113.50,23.13]]}"#);
    check(&road, &tianhe, 0.0, 0.0);
}

/// The distance to a segment is compared with the minimum over a dense
/// sampling of the segment (straight in longitude/latitude, as RFC 7946
/// reads it), measured with the WGS84 geodesic.
#[test]
fn point_to_segment_matches_dense_sampling() {
    let cases = [
        ((113.3245, 23.1064), (113.26, 23.10), (113.44, 23.25)),
        ((113.2436, 23.1078), (113.26, 23.10), (113.26, 23.25)),
        ((113.0, 23.0), (114.0, 24.0), (116.0, 22.0)),
        ((113.0, 23.0), (110.0, 26.0), (118.0, 27.0)),
        ((10.0, 60.0), (8.0, 61.0), (14.0, 61.5)),
        ((10.0, 70.0), (5.0, 71.0), (15.0, 71.0)),
        ((-74.0, 40.7), (-73.0, 41.5), (-71.0, 42.3)),
        ((0.0, 0.0), (-0.5, 0.3), (0.5, 0.3)),
    ];
    for (p, s, e) in cases {
        let line = geo(&format!(
            r#"{{"type":"LineString","coordinates":[[{},{}],[{},{}]]}}"#,
            s.0, s.1, e.0, e.1
        ));
        let actual = distance_m(&point(p), &line);
        let steps = 20_000;
        let sampled = (0..=steps)
            .map(|i| {
                let t = i as f64 / steps as f64;
                let q = Point::new(s.0 + t * (e.0 - s.0), s.1 + t * (e.1 - s.1));
                Geodesic.distance(Point::new(p.0, p.1), q)
            })
            .fold(f64::INFINITY, f64::min);
        // Sampling every 1/20 000 of the segment overestimates the true
        // minimum by at most a few metres on these lengths.
        let relative = (actual - sampled).abs() / sampled;
        assert!(
            relative < 1e-3 || (actual - sampled).abs() < 1.0,
            "{p:?} to {s:?}-{e:?}: {actual} m against sampled {sampled} m"
        );
    }
}

#[test]
fn near_bbox_contains_the_search_circle() {
    #[track_caller]
    fn check(centre: (f64, f64), metres: f64) {
        let reference = point(centre);
        let [x0, y0, x1, y1] = near_bbox(&reference, metres);
        for bearing in (0..360).step_by(5) {
            let q = Geodesic.destination(Point::new(centre.0, centre.1), bearing as f64, metres);
            assert!(
                x0 <= q.x() && q.x() <= x1 && y0 <= q.y() && q.y() <= y1,
                "{centre:?} {metres} m bearing {bearing}: {q:?} outside {:?}",
                [x0, y0, x1, y1]
            );
        }
    }
    check(CANTON_TOWER, 1_000.0);
    check(CANTON_TOWER, 50_000.0);
    check((0.0, 0.0), 10_000.0);
    check((10.0, 75.0), 200_000.0);
    check((-70.0, -50.0), 500_000.0);
    check((0.0, 89.9), 50_000.0);
    check((179.99, 0.0), 5_000.0);

    // Not much larger than needed at Guangzhou: 1 km is about 0.009 degrees
    // of latitude and 0.0098 degrees of longitude.
    let [x0, y0, x1, y1] = near_bbox(&point(CANTON_TOWER), 1_000.0);
    assert!((y1 - y0) / 2.0 < 0.0091 * 1.01, "{y0} {y1}");
    assert!((x1 - x0) / 2.0 < 0.0098 * 1.02, "{x0} {x1}");
    // Reaching a pole or the antimeridian spans every longitude.
    assert_eq!(near_bbox(&point((0.0, 89.9)), 50_000.0)[0], -180.0);
    assert_eq!(near_bbox(&point((179.99, 0.0)), 5_000.0)[2], 180.0);
    assert_eq!(
        near_bbox(&point((0.0, 0.0)), f64::INFINITY),
        [-180.0, -90.0, 180.0, 90.0]
    );
}

#[test]
fn prefilter_boxes() {
    let tianhe = polygon(TIANHE);
    #[track_caller]
    fn check(georel: &str, reference: &Geometry, expect: Option<[f64; 4]>) {
        let rel = parse_georel(georel).unwrap();
        assert_eq!(prefilter_bbox(&rel, reference), expect, "{georel}");
    }
    check("within", &tianhe, Some(bbox(&tianhe)));
    check("intersects", &tianhe, Some([113.26, 23.10, 113.44, 23.25]));
    check("disjoint", &tianhe, None);
    check("near;minDistance==10", &tianhe, None);
    check(
        "near;maxDistance==10",
        &tianhe,
        Some(near_bbox(&tianhe, 10.0)),
    );
}
