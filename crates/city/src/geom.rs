//! Plane geometry on a local projection of Guangzhou.
//!
//! All derivations work in metres on an equirectangular projection centred on
//! the city (23.13° N). The projection is affine in (lon, lat), so straight
//! lines and Voronoi bisectors in metres are straight lines in degrees too;
//! its scale error across the city (22.5–23.9° N) stays below 0.6 %.

use geo::{Coord, LineString, MultiPolygon, Polygon};

/// Longitude of the projection origin.
pub const LON0: f64 = 113.0;
/// Latitude of the projection origin.
pub const LAT0: f64 = 22.5;
/// Metres per degree of latitude.
pub const M_PER_DEG_LAT: f64 = 110_770.0;
/// Metres per degree of longitude at 23.13° N.
pub const M_PER_DEG_LON: f64 = 102_372.0;

/// A point in local metres (x east, y north of the origin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Xy {
    /// Metres east of the origin.
    pub x: f64,
    /// Metres north of the origin.
    pub y: f64,
}

impl Xy {
    /// Projects WGS84 longitude/latitude to local metres.
    pub fn from_lonlat(lon: f64, lat: f64) -> Xy {
        Xy {
            x: (lon - LON0) * M_PER_DEG_LON,
            y: (lat - LAT0) * M_PER_DEG_LAT,
        }
    }

    /// Back to WGS84 `[lon, lat]`, rounded to 6 decimals (≈ 0.1 m).
    pub fn lonlat(self) -> [f64; 2] {
        [
            round6(LON0 + self.x / M_PER_DEG_LON),
            round6(LAT0 + self.y / M_PER_DEG_LAT),
        ]
    }

    /// Euclidean distance in metres.
    pub fn dist(self, o: Xy) -> f64 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2)).sqrt()
    }

    /// Squared distance.
    pub fn dist2(self, o: Xy) -> f64 {
        (self.x - o.x).powi(2) + (self.y - o.y).powi(2)
    }

    /// The point at fraction `t` of the way to `o`.
    pub fn lerp(self, o: Xy, t: f64) -> Xy {
        Xy {
            x: self.x + (o.x - self.x) * t,
            y: self.y + (o.y - self.y) * t,
        }
    }

    /// Compass heading from `self` to `o` in degrees (0 = north, clockwise).
    pub fn heading_to(self, o: Xy) -> f64 {
        let h = (o.x - self.x).atan2(o.y - self.y).to_degrees();
        if h < 0.0 { h + 360.0 } else { h }
    }
}

/// Rounds to 6 decimals.
pub fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Rounds to `d` decimals.
pub fn round_to(v: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (v * f).round() / f
}

/// The rings of a polygon set in local metres (outer rings and holes alike:
/// the even-odd rule below needs no distinction).
pub fn rings_xy(mp: &MultiPolygon<f64>) -> Vec<Vec<Xy>> {
    let mut out = Vec::new();
    for p in &mp.0 {
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            out.push(ring.0.iter().map(|c| Xy::from_lonlat(c.x, c.y)).collect());
        }
    }
    out
}

/// The x intervals of the horizontal line at height `y` that lie inside the
/// rings (even-odd rule), sorted. Scan-line filling is how the crate places
/// tens of thousands of cells fast without a point-in-polygon test per cell.
pub fn scanline(rings: &[Vec<Xy>], y: f64) -> Vec<(f64, f64)> {
    let mut xs = Vec::new();
    for ring in rings {
        for w in ring.windows(2) {
            let (a, b) = (w[0], w[1]);
            // Half-open rule: count an edge when y is in [min, max).
            if (a.y <= y && y < b.y) || (b.y <= y && y < a.y) {
                xs.push(a.x + (y - a.y) * (b.x - a.x) / (b.y - a.y));
            }
        }
    }
    xs.sort_by(f64::total_cmp);
    xs.chunks_exact(2).map(|c| (c[0], c[1])).collect()
}

/// Bounding box `(min, max)` of rings.
pub fn bbox(rings: &[Vec<Xy>]) -> (Xy, Xy) {
    let mut lo = Xy {
        x: f64::MAX,
        y: f64::MAX,
    };
    let mut hi = Xy {
        x: f64::MIN,
        y: f64::MIN,
    };
    for p in rings.iter().flatten() {
        lo.x = lo.x.min(p.x);
        lo.y = lo.y.min(p.y);
        hi.x = hi.x.max(p.x);
        hi.y = hi.y.max(p.y);
    }
    (lo, hi)
}

/// A polygon in local metres turned into a WGS84 `geo` polygon.
pub fn polygon_lonlat(points: &[Xy]) -> Polygon<f64> {
    let mut coords: Vec<Coord<f64>> = points
        .iter()
        .map(|p| {
            let [x, y] = p.lonlat();
            Coord { x, y }
        })
        .collect();
    if let Some(first) = coords.first().copied() {
        coords.push(first);
    }
    Polygon::new(LineString::new(coords), vec![])
}

/// Clips a convex polygon to the half-plane of points nearer to `a` than to
/// `b` (one step of building a Voronoi cell; Sutherland–Hodgman).
pub fn clip_nearer(poly: &[Xy], a: Xy, b: Xy) -> Vec<Xy> {
    // f(p) <= 0 iff |p-a|² <= |p-b|²
    let f = |p: Xy| p.dist2(a) - p.dist2(b);
    let mut out = Vec::with_capacity(poly.len() + 1);
    for i in 0..poly.len() {
        let (p, q) = (poly[i], poly[(i + 1) % poly.len()]);
        let (fp, fq) = (f(p), f(q));
        if fp <= 0.0 {
            out.push(p);
        }
        if (fp <= 0.0) != (fq <= 0.0) {
            out.push(p.lerp(q, fp / (fp - fq)));
        }
    }
    out
}

/// Total length of a polyline in metres.
pub fn polyline_len(points: &[Xy]) -> f64 {
    points.windows(2).map(|w| w[0].dist(w[1])).sum()
}

/// The distance from `p` to the segment `a`–`b`.
pub fn dist_to_segment(p: Xy, a: Xy, b: Xy) -> f64 {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let l2 = dx * dx + dy * dy;
    let t = if l2 == 0.0 {
        0.0
    } else {
        (((p.x - a.x) * dx + (p.y - a.y) * dy) / l2).clamp(0.0, 1.0)
    };
    p.dist(a.lerp(b, t))
}

/// The distance from `p` to a polyline.
pub fn dist_to_polyline(p: Xy, line: &[Xy]) -> f64 {
    line.windows(2)
        .map(|w| dist_to_segment(p, w[0], w[1]))
        .fold(f64::MAX, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_round_trips() {
        let p = Xy::from_lonlat(113.3245, 23.1064);
        assert_eq!(p.lonlat(), [113.3245, 23.1064]);
        // One degree of latitude is about 110.8 km.
        let q = Xy::from_lonlat(113.3245, 24.1064);
        assert!((p.dist(q) - 110_770.0).abs() < 1.0);
    }

    #[test]
    fn scanline_of_a_square() {
        let sq = vec![vec![
            Xy { x: 0.0, y: 0.0 },
            Xy { x: 10.0, y: 0.0 },
            Xy { x: 10.0, y: 10.0 },
            Xy { x: 0.0, y: 10.0 },
            Xy { x: 0.0, y: 0.0 },
        ]];
        assert_eq!(scanline(&sq, 5.0), vec![(0.0, 10.0)]);
        assert!(scanline(&sq, 11.0).is_empty());
    }

    #[test]
    fn clipping_keeps_the_nearer_half() {
        let sq = [
            Xy { x: 0.0, y: 0.0 },
            Xy { x: 10.0, y: 0.0 },
            Xy { x: 10.0, y: 10.0 },
            Xy { x: 0.0, y: 10.0 },
        ];
        let half = clip_nearer(&sq, Xy { x: 2.0, y: 5.0 }, Xy { x: 8.0, y: 5.0 });
        assert!(half.iter().all(|p| p.x <= 5.0 + 1e-9));
        assert_eq!(half.len(), 4);
    }

    #[test]
    fn headings_are_compass_bearings() {
        let o = Xy { x: 0.0, y: 0.0 };
        assert_eq!(o.heading_to(Xy { x: 0.0, y: 1.0 }), 0.0);
        assert_eq!(o.heading_to(Xy { x: 1.0, y: 0.0 }), 90.0);
        assert_eq!(o.heading_to(Xy { x: -1.0, y: 0.0 }), 270.0);
    }
}
