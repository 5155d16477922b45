//! Evaluation of geo relationships between an entity's geometry and the
//! reference geometry of a geo-query, and distances in metres on WGS84.
//!
//! # Model
//!
//! Coordinates are WGS84 longitude/latitude degrees. Following RFC 7946
//! section 3.1.1, the edge between two consecutive positions is the straight
//! line in longitude/latitude space, so the topological relations (`within`,
//! `contains`, `intersects`, `equals`, `disjoint`, `overlaps`) are evaluated
//! in that plane with the `geo` crate's DE-9IM implementation. Geometries that
//! cross the antimeridian are not supported: they are read as spanning the
//! long way round.
//!
//! # Distances
//!
//! [`distance_m`] is the minimum distance in metres between any point of one
//! geometry and any point of the other; it is 0 when they intersect (so a
//! point inside a polygon is at distance 0 from it).
//!
//! * Point to point: the geodesic on the WGS84 ellipsoid (Karney's algorithm
//!   via `geo::Geodesic`), accurate to well under a millimetre.
//! * Anything else: for every vertex of one geometry and every edge of the
//!   other, the nearest point of the edge is located in a local equirectangular
//!   projection centred on the vertex (refined once at the mid-latitude), the
//!   candidates are ranked by haversine distance, and the winning pair is
//!   measured again with the WGS84 geodesic. The reported distance is always
//!   the exact geodesic length to a real point of the edge, so it can only
//!   overestimate the true minimum; for edges up to a few hundred kilometres
//!   away from the latitudes of the poles the overestimate is below 0.1 %
//!   (tests check it against dense sampling). Altitude is ignored.
//!
//! The cost of a non-point distance is proportional to the product of the two
//! geometries' position counts.

use geo::{Contains, Coord, CoordsIter, Distance, Geodesic, Haversine, Intersects, Point, Relate};

use crate::geometry::{Geometry, bbox};
use crate::georel::{GeoRel, NearDistance};

/// Whether `entity` (the value of the entity's GeoProperty) stands in the
/// relationship `rel` to `reference` (the geo-query's geometry), as clause
/// 4.10 defines it: `within` means the entity's geometry is within the
/// reference geometry, `contains` means the entity's geometry contains it,
/// and `near` measures the distance from the entity's geometry to the
/// reference geometry (at most `maxDistance`, at least `minDistance`).
pub fn matches(rel: &GeoRel, entity: &Geometry, reference: &Geometry) -> bool {
    let a = entity.as_geo();
    let b = reference.as_geo();
    match rel {
        GeoRel::Near(NearDistance::Max(d)) => {
            boxes_overlap(bbox(entity), near_bbox(reference, *d))
                && distance_m(entity, reference) <= *d
        }
        GeoRel::Near(NearDistance::Min(d)) => distance_m(entity, reference) >= *d,
        GeoRel::Intersects => boxes_meet(entity, reference) && a.intersects(b),
        GeoRel::Disjoint => !(boxes_meet(entity, reference) && a.intersects(b)),
        // Equal point sets have identical bounding boxes, and structural
        // equality settles the common case without DE-9IM (which also keeps
        // `equals` reflexive for invalid polygons).
        GeoRel::Equals => {
            a == b || (bbox(entity) == bbox(reference) && a.relate(b).is_equal_topo())
        }
        // `geo`'s Contains has fast paths for points and falls back to DE-9IM
        // for the rest, with the same OGC semantics as `relate().is_within()`.
        GeoRel::Within => boxes_meet(entity, reference) && b.contains(a),
        GeoRel::Contains => boxes_meet(entity, reference) && a.contains(b),
        GeoRel::Overlaps => boxes_meet(entity, reference) && a.relate(b).is_overlaps(),
    }
}

/// Whether two bounding boxes share a point; no relation but `disjoint` and
/// `near` can hold otherwise, and checking boxes is far cheaper than DE-9IM.
fn boxes_meet(a: &Geometry, b: &Geometry) -> bool {
    boxes_overlap(bbox(a), bbox(b))
}

fn boxes_overlap([ax0, ay0, ax1, ay1]: [f64; 4], [bx0, by0, bx1, by1]: [f64; 4]) -> bool {
    ax0 <= bx1 && bx0 <= ax1 && ay0 <= by1 && by0 <= ay1
}

/// The minimum distance in metres between two geometries on the WGS84
/// ellipsoid; 0 when they intersect. See the module documentation for the
/// method and its accuracy.
pub fn distance_m(a: &Geometry, b: &Geometry) -> f64 {
    if let (geo::Geometry::Point(p), geo::Geometry::Point(q)) = (a.as_geo(), b.as_geo()) {
        return Geodesic.distance(*p, *q);
    }
    if boxes_meet(a, b) && a.as_geo().intersects(b.as_geo()) {
        return 0.0;
    }
    // The nearest points of two shapes are a vertex of one and a point on an
    // edge of the other. When one side has only points, its vertices against
    // the other's edges already cover every candidate pair.
    let (forward, backward) = match (points_only(a), points_only(b)) {
        (true, _) => (nearest_pair(a, b), None),
        (false, true) => (None, nearest_pair(b, a)),
        (false, false) => (nearest_pair(a, b), nearest_pair(b, a)),
    };
    let (pa, pb) = [forward, backward.map(|(d, q, p)| (d, p, q))]
        .into_iter()
        .flatten()
        .min_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, p, q)| (p, q))
        .unwrap_or_default();
    Geodesic.distance(Point(pa), Point(pb))
}

fn points_only(g: &Geometry) -> bool {
    matches!(
        g.as_geo(),
        geo::Geometry::Point(_) | geo::Geometry::MultiPoint(_)
    )
}

/// The closest (vertex of `from`, point on an edge or lone point of `to`) pair
/// by haversine distance, with that distance.
fn nearest_pair(from: &Geometry, to: &Geometry) -> Option<(f64, Coord<f64>, Coord<f64>)> {
    let targets = edges(to.as_geo());
    let mut best: Option<(f64, Coord<f64>, Coord<f64>)> = None;
    for p in from.as_geo().coords_iter() {
        for &(s, e) in &targets {
            // Every degree of latitude is at least 110 574 m long, so the
            // latitude gap alone bounds the distance from below.
            let gap = (s.y.min(e.y) - p.y).max(p.y - s.y.max(e.y)).max(0.0);
            if let Some((d, _, _)) = best
                && gap * MIN_METRES_PER_DEGREE_LAT >= d
            {
                continue;
            }
            let q = nearest_on_segment(p, s, e);
            let d = Haversine.distance(Point(p), Point(q));
            if best.is_none_or(|(bd, _, _)| d < bd) {
                best = Some((d, p, q));
            }
        }
    }
    best
}

/// The shortest length of one degree of latitude on WGS84 (at the equator),
/// rounded down, in metres.
const MIN_METRES_PER_DEGREE_LAT: f64 = 110_574.0;

/// The edges of a geometry as coordinate pairs; a lone point is a degenerate
/// edge from itself to itself.
fn edges(shape: &geo::Geometry<f64>) -> Vec<(Coord<f64>, Coord<f64>)> {
    fn chain(out: &mut Vec<(Coord<f64>, Coord<f64>)>, ls: &geo::LineString<f64>) {
        if ls.0.len() == 1 {
            out.push((ls.0[0], ls.0[0]));
        }
        out.extend(ls.0.windows(2).map(|w| (w[0], w[1])));
    }
    fn polygon(out: &mut Vec<(Coord<f64>, Coord<f64>)>, p: &geo::Polygon<f64>) {
        chain(out, p.exterior());
        p.interiors().iter().for_each(|r| chain(out, r));
    }
    let mut out = Vec::new();
    match shape {
        geo::Geometry::Point(p) => out.push((p.0, p.0)),
        geo::Geometry::MultiPoint(mp) => out.extend(mp.iter().map(|p| (p.0, p.0))),
        geo::Geometry::Line(l) => out.push((l.start, l.end)),
        geo::Geometry::LineString(ls) => chain(&mut out, ls),
        geo::Geometry::MultiLineString(mls) => mls.iter().for_each(|ls| chain(&mut out, ls)),
        geo::Geometry::Polygon(p) => polygon(&mut out, p),
        geo::Geometry::MultiPolygon(mp) => mp.iter().for_each(|p| polygon(&mut out, p)),
        geo::Geometry::Rect(r) => chain(&mut out, r.to_polygon().exterior()),
        geo::Geometry::Triangle(t) => chain(&mut out, t.to_polygon().exterior()),
        geo::Geometry::GeometryCollection(gc) => {
            gc.iter().for_each(|g| out.extend(edges(g)));
        }
    }
    out
}

/// The point of the lon/lat segment `s`–`e` nearest to `p`, located in an
/// equirectangular projection centred on `p` and refined once with the
/// longitude scale at the latitude halfway to the first estimate.
fn nearest_on_segment(p: Coord<f64>, s: Coord<f64>, e: Coord<f64>) -> Coord<f64> {
    let first = project_onto(p, s, e, p.y);
    project_onto(p, s, e, (p.y + first.y) / 2.0)
}

fn project_onto(p: Coord<f64>, s: Coord<f64>, e: Coord<f64>, scale_lat: f64) -> Coord<f64> {
    let k = scale_lat.to_radians().cos();
    let (sx, sy) = ((s.x - p.x) * k, s.y - p.y);
    let (dx, dy) = ((e.x - s.x) * k, e.y - s.y);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(sx * dx + sy * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Coord {
        x: s.x + t * (e.x - s.x),
        y: s.y + t * (e.y - s.y),
    }
}

/// A bounding box `[min lon, min lat, max lon, max lat]` that contains every
/// point within `max_distance_m` metres of `reference`, for prefiltering
/// `near;maxDistance` candidates with a spatial index. It is conservative (a
/// little larger than needed); it spans all longitudes when the search region
/// reaches a pole or crosses the antimeridian, and is clamped to the valid
/// latitude range.
pub fn near_bbox(reference: &Geometry, max_distance_m: f64) -> [f64; 4] {
    let [x0, y0, x1, y1] = bbox(reference);
    let d = if max_distance_m.is_finite() {
        max_distance_m.max(0.0)
    } else {
        return [-180.0, -90.0, 180.0, 90.0];
    };
    // A 0.1 % margin plus a metre absorbs rounding in the conversions.
    let d = d * 1.001 + 1.0;
    let dlat = d / MIN_METRES_PER_DEGREE_LAT;
    let (lat0, lat1) = (y0 - dlat, y1 + dlat);
    if lat0 <= -90.0 || lat1 >= 90.0 {
        return [-180.0, lat0.max(-90.0), 180.0, lat1.min(90.0)];
    }
    // One degree of longitude at latitude φ is at least 111 319 m · cos φ on
    // WGS84 (the ellipsoid's parallels are slightly longer than the sphere's
    // of equatorial radius would suggest), and it is shortest at the latitude
    // furthest from the equator.
    let widest = lat0.abs().max(lat1.abs());
    let metres_per_degree_lon = 111_319.0 * widest.to_radians().cos();
    let dlon = d / metres_per_degree_lon;
    let (lon0, lon1) = (x0 - dlon, x1 + dlon);
    if lon0 < -180.0 || lon1 > 180.0 || !dlon.is_finite() {
        return [-180.0, lat0, 180.0, lat1];
    }
    [lon0, lat0, lon1, lat1]
}

/// A bounding box that every matching entity geometry must meet, for
/// prefiltering with a spatial index, or `None` when the relationship can hold
/// anywhere (`disjoint`, `near;minDistance`).
pub fn prefilter_bbox(rel: &GeoRel, reference: &Geometry) -> Option<[f64; 4]> {
    match rel {
        GeoRel::Near(NearDistance::Max(d)) => Some(near_bbox(reference, *d)),
        GeoRel::Near(NearDistance::Min(_)) | GeoRel::Disjoint => None,
        GeoRel::Within
        | GeoRel::Contains
        | GeoRel::Intersects
        | GeoRel::Equals
        | GeoRel::Overlaps => Some(bbox(reference)),
    }
}
