//! Unit grids (单元网格): 100 m × 100 m cells (10,000 m², the national
//! "万米单元网格" practice) over the built-up area, coded with 15 digits
//! as in CJ/T 213 / GB/T 30428.1: district (6) + street (3) + community (3)
//! + grid number (3).
//!
//! The cells lie on one lattice anchored at the projection origin. The
//! full built-up set is always derived (so a grid keeps its code whatever
//! the city size); the size then selects a subset.

use std::collections::HashSet;

use crate::admin::{Admin, CENTRAL};
use crate::geom::{self, Xy};
use crate::water::CHANNELS;
use crate::{CityError, Size};

/// Side of a cell in metres.
pub const CELL_M: f64 = 100.0;

/// One unit grid.
#[derive(Debug, Clone)]
pub struct Grid {
    /// 15-digit code.
    pub code: String,
    /// Lattice column (x = (i + 0.5) × 100 m).
    pub i: i32,
    /// Lattice row.
    pub j: i32,
    /// Index of the district.
    pub district: usize,
    /// Index of the street.
    pub street: usize,
    /// Index of the community.
    pub community: usize,
}

impl Grid {
    /// Centre of the cell.
    pub fn centre(&self) -> Xy {
        cell_centre(self.i, self.j)
    }

    /// The cell's corners (closed ring, counter-clockwise), lon/lat.
    pub fn ring_lonlat(&self) -> Vec<[f64; 2]> {
        let (x0, y0) = (f64::from(self.i) * CELL_M, f64::from(self.j) * CELL_M);
        [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
            .iter()
            .map(|(dx, dy)| {
                Xy {
                    x: x0 + dx * CELL_M,
                    y: y0 + dy * CELL_M,
                }
                .lonlat()
            })
            .collect()
    }
}

/// Centre of lattice cell `(i, j)`.
pub fn cell_centre(i: i32, j: i32) -> Xy {
    Xy {
        x: (f64::from(i) + 0.5) * CELL_M,
        y: (f64::from(j) + 0.5) * CELL_M,
    }
}

/// A built-up core outside the central districts: centre and radius.
struct Core {
    district: &'static str,
    lon: f64,
    lat: f64,
    radius_m: f64,
}

/// Built-up cores of the outer districts (approximate, from public maps):
/// Baiyun's southern belt, Huangpu's old port and Science City, Panyu's
/// Shiqiao and Dashi, Huadu's Xinhua, Nansha's Jinzhou, Conghua's Jiekou,
/// Zengcheng's Licheng and Xintang.
const OUTER_CORES: &[Core] = &[
    Core {
        district: "440111",
        lon: 113.2700,
        lat: 23.1750,
        radius_m: 5000.0,
    },
    Core {
        district: "440112",
        lon: 113.4600,
        lat: 23.1050,
        radius_m: 4000.0,
    },
    Core {
        district: "440112",
        lon: 113.4800,
        lat: 23.1750,
        radius_m: 4000.0,
    },
    Core {
        district: "440113",
        lon: 113.3700,
        lat: 22.9450,
        radius_m: 5000.0,
    },
    Core {
        district: "440113",
        lon: 113.3150,
        lat: 23.0100,
        radius_m: 3000.0,
    },
    Core {
        district: "440114",
        lon: 113.2200,
        lat: 23.4000,
        radius_m: 4000.0,
    },
    Core {
        district: "440115",
        lon: 113.5400,
        lat: 22.7900,
        radius_m: 4000.0,
    },
    Core {
        district: "440117",
        lon: 113.5850,
        lat: 23.5500,
        radius_m: 2500.0,
    },
    Core {
        district: "440118",
        lon: 113.8150,
        lat: 23.2850,
        radius_m: 3500.0,
    },
    Core {
        district: "440118",
        lon: 113.6100,
        lat: 23.1350,
        radius_m: 3000.0,
    },
];

/// Centre and radius of the `small` city: the old city around Haizhu Square.
pub const SMALL_CENTRE: (f64, f64) = (113.2850, 23.1250);
/// Radius of the `small` city in metres.
pub const SMALL_RADIUS_M: f64 = 3500.0;

/// True if a built-up cell centre belongs to the city of `size`.
pub fn in_size(size: Size, district_code: &str, p: Xy) -> bool {
    match size {
        Size::Small => p.dist(Xy::from_lonlat(SMALL_CENTRE.0, SMALL_CENTRE.1)) <= SMALL_RADIUS_M,
        Size::Medium => CENTRAL.contains(&district_code),
        Size::Full => true,
    }
}

/// Derives every built-up grid of the city with its code, then keeps those of
/// `size`. Grids are ordered by code.
pub fn build(admin: &Admin, size: Size) -> Result<Vec<Grid>, CityError> {
    let rivers: Vec<(Vec<Xy>, f64)> = CHANNELS
        .iter()
        .map(|c| (c.points(), c.half_width_m))
        .collect();
    let mut taken: HashSet<(i32, i32)> = HashSet::new();
    // (street, community-less) cells, per street.
    let mut by_street: Vec<Vec<(i32, i32)>> = vec![Vec::new(); admin.streets.len()];
    for (d, district) in admin.districts.iter().enumerate() {
        let central = CENTRAL.contains(&district.code.as_str());
        let cores: Vec<(Xy, f64)> = OUTER_CORES
            .iter()
            .filter(|c| c.district == district.code)
            .map(|c| (Xy::from_lonlat(c.lon, c.lat), c.radius_m))
            .collect();
        if !central && cores.is_empty() {
            continue;
        }
        let (lo, hi) = geom::bbox(&district.rings);
        let (j0, j1) = (
            (lo.y / CELL_M).floor() as i32,
            (hi.y / CELL_M).ceil() as i32,
        );
        for j in j0..=j1 {
            let y = (f64::from(j) + 0.5) * CELL_M;
            for (x0, x1) in geom::scanline(&district.rings, y) {
                let i0 = (x0 / CELL_M - 0.5).ceil() as i32;
                let i1 = (x1 / CELL_M - 0.5).floor() as i32;
                for i in i0..=i1 {
                    let p = cell_centre(i, j);
                    if !(p.x >= x0 && p.x < x1) {
                        continue;
                    }
                    if !central && !cores.iter().any(|(c, r)| p.dist(*c) <= *r) {
                        continue;
                    }
                    if rivers
                        .iter()
                        .any(|(line, hw)| geom::dist_to_polyline(p, line) < *hw)
                    {
                        continue;
                    }
                    if !taken.insert((i, j)) {
                        continue;
                    }
                    by_street[admin.street_at(d, p)].push((i, j));
                }
            }
        }
    }
    let mut grids = Vec::new();
    for (s, cells) in by_street.iter_mut().enumerate() {
        if cells.is_empty() {
            continue;
        }
        let street = &admin.streets[s];
        let district = &admin.districts[street.district];
        let n = street.communities.len();
        if n == 0 {
            return Err(CityError::Data(format!(
                "street {} has no community",
                street.code
            )));
        }
        // Communities take equal angular sectors around the street seat, in
        // code order; numbers run row by row inside each community.
        cells.sort_by_key(|&(i, j)| (j, i));
        let mut per_comm: Vec<Vec<(i32, i32)>> = vec![Vec::new(); n];
        for &(i, j) in cells.iter() {
            let h = street.seat.heading_to(cell_centre(i, j));
            let k = ((h / 360.0 * n as f64) as usize).min(n - 1);
            per_comm[k].push((i, j));
        }
        for (k, cells) in per_comm.iter().enumerate() {
            let c = street.communities[k];
            if cells.len() > 999 {
                return Err(CityError::Data(format!(
                    "community {} would have {} grids",
                    admin.communities[c].code,
                    cells.len()
                )));
            }
            for (num, &(i, j)) in cells.iter().enumerate() {
                if !in_size(size, &district.code, cell_centre(i, j)) {
                    continue;
                }
                grids.push(Grid {
                    code: format!(
                        "{}{}{}{:03}",
                        district.code,
                        &street.code[6..9],
                        &admin.communities[c].code[9..12],
                        num + 1
                    ),
                    i,
                    j,
                    district: street.district,
                    street: s,
                    community: c,
                });
            }
        }
    }
    grids.sort_by(|a, b| a.code.cmp(&b.code));
    Ok(grids)
}
