//! The geo relationships of clause 4.10, entity geometry against reference
//! geometry.

use crate::{Geometry, matches, parse_georel};

/// `shape` is `"<GeoJSON type> <coordinates>"`, e.g. `"Point [113.3,23.1]"`.
fn shape(text: &str) -> Geometry {
    let (kind, coordinates) = text.split_once(' ').expect("kind and coordinates");
    super::geo(&format!(
        r#"{{"type":"{kind}","coordinates":{coordinates}}}"#
    ))
}

/// Evaluates `georel` with `entity` as the entity's GeoProperty value and
/// `reference` as the query geometry.
#[track_caller]
fn check(georel: &str, entity: &str, reference: &str, expect: bool) {
    let rel = parse_georel(georel).expect("test georel is valid");
    let actual = matches(&rel, &shape(entity), &shape(reference));
    assert_eq!(actual, expect, "{entity} {georel} {reference}");
}

const TOWER: &str = "Point [113.3245,23.1064]";
const AIRPORT: &str = "Point [113.2988,23.3924]";
const SHAMIAN: &str = "Point [113.2436,23.1078]";
const TIANHE_EDGE: &str = "Point [113.26,23.2]";
fn tianhe() -> String {
    format!("Polygon {}", super::TIANHE)
}
/// The same box as Tianhe, starting at another corner and wound clockwise.
const TIANHE_REWOUND: &str =
    "Polygon [[[113.44,23.25],[113.44,23.10],[113.26,23.10],[113.26,23.25],[113.44,23.25]]]";
/// Zhujiang New Town, well inside the Tianhe box.
const ZHUJIANG: &str =
    "Polygon [[[113.31,23.11],[113.34,23.11],[113.34,23.13],[113.31,23.13],[113.31,23.11]]]";
/// A box straddling Tianhe's western edge.
const WEST_STRADDLE: &str =
    "Polygon [[[113.20,23.15],[113.30,23.15],[113.30,23.20],[113.20,23.20],[113.20,23.15]]]";
/// A road crossing Tianhe from west to east.
const ROAD: &str = "LineString [[113.20,23.12],[113.50,23.13]]";
/// A road entirely inside Tianhe.
const INNER_ROAD: &str = "LineString [[113.30,23.12],[113.40,23.13]]";

#[test]
fn within() {
    let tianhe = tianhe();
    check("within", TOWER, &tianhe, true);
    check("within", AIRPORT, &tianhe, false);
    // OGC within needs the interiors to meet: a point on the boundary is not
    // within the polygon (but it does intersect it).
    check("within", TIANHE_EDGE, &tianhe, false);
    check("within", ZHUJIANG, &tianhe, true);
    check("within", &tianhe, ZHUJIANG, false);
    check("within", &tianhe, &tianhe, true);
    check("within", INNER_ROAD, &tianhe, true);
    check("within", ROAD, &tianhe, false);
    check("within", WEST_STRADDLE, &tianhe, false);
    check("within", TOWER, TOWER, true);
    check("within", &tianhe, TOWER, false);
    check(
        "within",
        "MultiPoint [[113.3245,23.1064],[113.3247,23.1503]]",
        &tianhe,
        true,
    );
    check(
        "within",
        "MultiPoint [[113.3245,23.1064],[113.2988,23.3924]]",
        &tianhe,
        false,
    );
}

#[test]
fn contains() {
    let tianhe = tianhe();
    // The entity's geometry contains the reference geometry.
    check("contains", &tianhe, TOWER, true);
    check("contains", TOWER, &tianhe, false);
    check("contains", &tianhe, AIRPORT, false);
    check("contains", &tianhe, ZHUJIANG, true);
    check("contains", ZHUJIANG, &tianhe, false);
    check("contains", &tianhe, INNER_ROAD, true);
    check("contains", &tianhe, TIANHE_EDGE, false);
    // A line contains a point of its interior (here one of its vertices; a
    // point computed on a sloping segment is rarely exactly on it in
    // floating point).
    check(
        "contains",
        "LineString [[113.30,23.12],[113.35,23.125],[113.40,23.13]]",
        "Point [113.35,23.125]",
        true,
    );
    check(
        "contains",
        "LineString [[113.30,23.12],[113.40,23.12]]",
        "Point [113.35,23.12]",
        true,
    );
    // End points are the line's boundary, not its interior.
    check(
        "contains",
        "LineString [[113.30,23.12],[113.40,23.12]]",
        "Point [113.30,23.12]",
        false,
    );
}

#[test]
fn intersects_and_disjoint() {
    let tianhe = tianhe();
    for (entity, expect) in [
        (TOWER, true),
        (AIRPORT, false),
        (SHAMIAN, false),
        (TIANHE_EDGE, true),
        (ZHUJIANG, true),
        (WEST_STRADDLE, true),
        (ROAD, true),
        (INNER_ROAD, true),
        ("LineString [[113.20,23.30],[113.50,23.30]]", false),
        ("MultiPoint [[113.2988,23.3924],[113.3245,23.1064]]", true),
    ] {
        check("intersects", entity, &tianhe, expect);
        check("intersects", &tianhe, entity, expect);
        check("disjoint", entity, &tianhe, !expect);
    }
}

#[test]
fn equals() {
    let tianhe = tianhe();
    check("equals", &tianhe, &tianhe, true);
    // Topological equality: the same point set, whatever the start vertex
    // and winding.
    check("equals", &tianhe, TIANHE_REWOUND, true);
    check("equals", &tianhe, ZHUJIANG, false);
    check("equals", TOWER, TOWER, true);
    check("equals", TOWER, "Point [113.3245,23.1065]", false);
    check(
        "equals",
        TOWER,
        "MultiPoint [[113.3245,23.1064],[113.3245,23.1064]]",
        true,
    );
    check(
        "equals",
        ROAD,
        "LineString [[113.50,23.13],[113.20,23.12]]",
        true,
    );
    check(
        "equals",
        "LineString [[113.20,23.12],[113.50,23.12]]",
        "LineString [[113.20,23.12],[113.35,23.12],[113.50,23.12]]",
        true,
    );
    check("equals", ROAD, INNER_ROAD, false);
}

#[test]
fn overlaps() {
    let tianhe = tianhe();
    check("overlaps", WEST_STRADDLE, &tianhe, true);
    check("overlaps", &tianhe, WEST_STRADDLE, true);
    // Containment is not overlap.
    check("overlaps", ZHUJIANG, &tianhe, false);
    check("overlaps", &tianhe, &tianhe, false);
    // Different dimensions never overlap.
    check("overlaps", TOWER, &tianhe, false);
    check("overlaps", ROAD, &tianhe, false);
    // Lines overlap when they share a stretch and each has more.
    check(
        "overlaps",
        "LineString [[113.30,23.12],[113.40,23.12]]",
        "LineString [[113.35,23.12],[113.45,23.12]]",
        true,
    );
    check(
        "overlaps",
        "LineString [[113.30,23.12],[113.40,23.12]]",
        "LineString [[113.35,23.10],[113.35,23.15]]",
        false,
    );
    check(
        "overlaps",
        "MultiPoint [[113.3245,23.1064],[113.2988,23.3924]]",
        "MultiPoint [[113.3245,23.1064],[113.2436,23.1078]]",
        true,
    );
    check(
        "overlaps",
        &tianhe,
        "Polygon [[[0,0],[1,0],[1,1],[0,0]]]",
        false,
    );
}

#[test]
fn near() {
    let tianhe = tianhe();
    // Canton Tower to Baiyun airport is about 31.8 km.
    check("near;maxDistance==32000", TOWER, AIRPORT, true);
    check("near;maxDistance==31000", TOWER, AIRPORT, false);
    check("near;minDistance==31000", TOWER, AIRPORT, true);
    check("near;minDistance==32000", TOWER, AIRPORT, false);
    // Shamian is about 1.68 km west of the box.
    check("near;maxDistance==1700", SHAMIAN, &tianhe, true);
    check("near;maxDistance==1650", SHAMIAN, &tianhe, false);
    check("near;maxDistance==1700", &tianhe, SHAMIAN, true);
    // Inside the polygon the distance is zero.
    check("near;maxDistance==0.001", TOWER, &tianhe, true);
    check("near;minDistance==1", TOWER, &tianhe, false);
    check("near;minDistance==0.001", TOWER, &tianhe, false);
    // Same point.
    check("near;maxDistance==0.001", TOWER, TOWER, true);
    // The nearest member of a multi-geometry counts.
    check(
        "near;maxDistance==100",
        "MultiPoint [[113.2988,23.3924],[113.3246,23.1064]]",
        TOWER,
        true,
    );
}
