//! Administrative divisions: the 11 districts (real boundaries), their 178
//! streets/towns and 2,851 communities (real codes), and the derived street
//! areas (a weighted centroidal Voronoi partition of each district; no open
//! street boundaries exist, see `docs/city.md`).

use geo::orient::{Direction, Orient};
use geo::{BooleanOps, GeodesicArea, MultiPolygon, Polygon};
use serde_json::Value;

use crate::CityError;
use crate::geom::{self, Xy};
use crate::rng::Rng;

const DISTRICTS_GEOJSON: &str = include_str!("../data/districts.geojson");
const DISTRICTS_CSV: &str = include_str!("../data/districts.csv");
const STREETS_CSV: &str = include_str!("../data/streets.csv");
const COMMUNITIES_CSV: &str = include_str!("../data/communities.csv");

/// A district (区) of Guangzhou.
#[derive(Debug, Clone)]
pub struct District {
    /// GB/T 2260 code, e.g. `440104`.
    pub code: String,
    /// Chinese name, e.g. 越秀区.
    pub name_zh: String,
    /// English name, e.g. Yuexiu District.
    pub name_en: String,
    /// Resident population at the 2020 census.
    pub population: u64,
    /// Official land area in km².
    pub area_km2: f64,
    /// Boundary in WGS84 (converted from GCJ-02 by the data package).
    pub boundary: MultiPolygon<f64>,
    /// The boundary's rings in local metres.
    pub rings: Vec<Vec<Xy>>,
    /// Approximate centre of the district's urban core (the district
    /// government area), from public maps.
    pub core: Xy,
    /// Indexes of the district's streets in `Admin::streets`.
    pub streets: Vec<usize>,
}

/// The kind of a township-level unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreetKind {
    /// 街道: an urban subdistrict.
    Subdistrict,
    /// 镇: a town.
    Town,
    /// A forest farm or reservoir area.
    SpecialArea,
}

/// A township-level unit (街道 / 镇): real code and name, derived area.
#[derive(Debug, Clone)]
pub struct Street {
    /// 9-digit NBS code.
    pub code: String,
    /// Chinese name.
    pub name_zh: String,
    /// Subdistrict, town or special area.
    pub kind: StreetKind,
    /// Index of the district in `Admin::districts`.
    pub district: usize,
    /// The derived seat (generator of the street's Voronoi cell).
    pub seat: Xy,
    /// The derived street area: the seat's Voronoi cell clipped to the district.
    pub area: MultiPolygon<f64>,
    /// Geodesic area of `area` in km².
    pub area_km2: f64,
    /// Indexes of the street's communities in `Admin::communities`.
    pub communities: Vec<usize>,
}

/// A village-level unit (社区居委会 / 村委会).
#[derive(Debug, Clone)]
pub struct Community {
    /// 12-digit NBS code.
    pub code: String,
    /// Chinese name (kept exactly as published).
    pub name_zh: String,
    /// `residents_committee`, `village_committee` or `other`.
    pub kind: String,
    /// Index of the street in `Admin::streets`.
    pub street: usize,
}

/// All administrative divisions.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The 11 districts, by code.
    pub districts: Vec<District>,
    /// The 178 streets/towns, by code.
    pub streets: Vec<Street>,
    /// The 2,851 communities, by code.
    pub communities: Vec<Community>,
}

/// Approximate urban-core centres (lon, lat) by district, from public maps
/// (accurate to about a kilometre; they only weight the street seats).
const CORES: [(&str, f64, f64); 11] = [
    ("440103", 113.2440, 23.1260),
    ("440104", 113.2760, 23.1290),
    ("440105", 113.2900, 23.0960),
    ("440106", 113.3450, 23.1300),
    ("440111", 113.2700, 23.1700),
    ("440112", 113.4600, 23.1100),
    ("440113", 113.3700, 22.9450),
    ("440114", 113.2200, 23.4000),
    ("440115", 113.5400, 22.7900),
    ("440117", 113.5850, 23.5500),
    ("440118", 113.8150, 23.2850),
];

/// Approximate seats (lon, lat) of the subdistricts of the four central
/// districts, placed from public maps at the centre of each subdistrict's
/// neighbourhood (accurate to about a kilometre). The outer districts'
/// seats are derived (see `Admin::place_seats`).
const KNOWN_SEATS: &[(&str, f64, f64)] = &[
    // 荔湾 Liwan
    ("440103001", 113.2430, 23.1080),
    ("440103002", 113.2500, 23.1180),
    ("440103003", 113.2470, 23.1220),
    ("440103004", 113.2410, 23.1250),
    ("440103005", 113.2380, 23.1210),
    ("440103006", 113.2370, 23.1290),
    ("440103007", 113.2460, 23.1300),
    ("440103008", 113.2380, 23.1360),
    ("440103009", 113.2320, 23.1350),
    ("440103010", 113.2280, 23.1400),
    ("440103011", 113.2450, 23.1450),
    ("440103012", 113.2500, 23.1480),
    ("440103013", 113.2250, 23.1280),
    ("440103014", 113.2400, 23.0750),
    ("440103015", 113.2350, 23.0950),
    ("440103016", 113.2250, 23.0950),
    ("440103017", 113.2250, 23.1100),
    ("440103018", 113.2330, 23.1030),
    ("440103019", 113.2220, 23.0850),
    ("440103020", 113.2050, 23.0850),
    ("440103021", 113.2150, 23.0700),
    ("440103022", 113.2100, 23.1000),
    // 越秀 Yuexiu
    ("440104001", 113.2620, 23.1380),
    ("440104003", 113.2710, 23.1240),
    ("440104004", 113.2620, 23.1310),
    ("440104005", 113.2580, 23.1450),
    ("440104007", 113.2580, 23.1260),
    ("440104010", 113.2570, 23.1200),
    ("440104011", 113.2920, 23.1260),
    ("440104012", 113.2980, 23.1300),
    ("440104013", 113.3000, 23.1360),
    ("440104014", 113.2920, 23.1400),
    ("440104015", 113.2830, 23.1420),
    ("440104016", 113.2830, 23.1360),
    ("440104017", 113.2760, 23.1210),
    ("440104018", 113.2820, 23.1220),
    ("440104019", 113.2860, 23.1290),
    ("440104020", 113.2750, 23.1500),
    ("440104021", 113.2850, 23.1550),
    ("440104022", 113.2550, 23.1600),
    // 海珠 Haizhu
    ("440105001", 113.3300, 23.1000),
    ("440105002", 113.3050, 23.0980),
    ("440105003", 113.2720, 23.0950),
    ("440105004", 113.2700, 23.1030),
    ("440105005", 113.2850, 23.1100),
    ("440105006", 113.2900, 23.1030),
    ("440105007", 113.2720, 23.1100),
    ("440105008", 113.2600, 23.1100),
    ("440105009", 113.2620, 23.1020),
    ("440105010", 113.2550, 23.0930),
    ("440105011", 113.2500, 23.0850),
    ("440105012", 113.2800, 23.0850),
    ("440105013", 113.2650, 23.0750),
    ("440105014", 113.3050, 23.0850),
    ("440105015", 113.3650, 23.0980),
    ("440105016", 113.2950, 23.0700),
    ("440105017", 113.3250, 23.0800),
    ("440105018", 113.3900, 23.0750),
    // 天河 Tianhe
    ("440106001", 113.3500, 23.1580),
    ("440106002", 113.3650, 23.1220),
    ("440106003", 113.3950, 23.1250),
    ("440106004", 113.3150, 23.1500),
    ("440106006", 113.3400, 23.1370),
    ("440106007", 113.3200, 23.1550),
    ("440106008", 113.3250, 23.1350),
    ("440106009", 113.3250, 23.1480),
    ("440106010", 113.3350, 23.1700),
    ("440106011", 113.3800, 23.1350),
    ("440106012", 113.3600, 23.1350),
    ("440106013", 113.3300, 23.1180),
    ("440106014", 113.3200, 23.1250),
    ("440106015", 113.3550, 23.1800),
    ("440106016", 113.4050, 23.1350),
    ("440106017", 113.3750, 23.1700),
    ("440106018", 113.3750, 23.2000),
    ("440106019", 113.4000, 23.1850),
    ("440106020", 113.4100, 23.1200),
    ("440106021", 113.4200, 23.1250),
    ("440106022", 113.3950, 23.1550),
];

/// The four central districts, urban throughout.
pub const CENTRAL: [&str; 4] = ["440103", "440104", "440105", "440106"];

fn csv_rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').collect())
}

fn field<'a>(row: &[&'a str], i: usize, file: &str) -> Result<&'a str, CityError> {
    row.get(i)
        .copied()
        .ok_or_else(|| CityError::Data(format!("{file}: missing column {i}")))
}

fn parse_ring(v: &Value) -> Result<geo::LineString<f64>, CityError> {
    let pts = v
        .as_array()
        .ok_or_else(|| CityError::Data("ring is not an array".into()))?;
    pts.iter()
        .map(|p| {
            match (
                p.get(0).and_then(Value::as_f64),
                p.get(1).and_then(Value::as_f64),
            ) {
                (Some(x), Some(y)) => Ok(geo::Coord { x, y }),
                _ => Err(CityError::Data("bad coordinate".into())),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(geo::LineString::new)
}

fn parse_polygon(v: &Value) -> Result<Polygon<f64>, CityError> {
    let rings = v
        .as_array()
        .ok_or_else(|| CityError::Data("polygon is not an array".into()))?;
    let mut it = rings.iter();
    let ext = parse_ring(
        it.next()
            .ok_or_else(|| CityError::Data("empty polygon".into()))?,
    )?;
    let holes = it.map(parse_ring).collect::<Result<Vec<_>, _>>()?;
    Ok(Polygon::new(ext, holes))
}

fn parse_geometry(g: &Value) -> Result<MultiPolygon<f64>, CityError> {
    let coords = &g["coordinates"];
    match g["type"].as_str() {
        Some("Polygon") => Ok(MultiPolygon(vec![parse_polygon(coords)?])),
        Some("MultiPolygon") => coords
            .as_array()
            .ok_or_else(|| CityError::Data("bad MultiPolygon".into()))?
            .iter()
            .map(parse_polygon)
            .collect::<Result<Vec<_>, _>>()
            .map(MultiPolygon),
        other => Err(CityError::Data(format!("unexpected geometry {other:?}"))),
    }
}

impl Admin {
    /// Parses the embedded data and derives the street areas.
    pub fn load() -> Result<Admin, CityError> {
        let gj: Value = serde_json::from_str(DISTRICTS_GEOJSON)
            .map_err(|e| CityError::Data(format!("districts.geojson: {e}")))?;
        let features = gj["features"]
            .as_array()
            .ok_or_else(|| CityError::Data("districts.geojson: no features".into()))?;
        let mut districts = Vec::new();
        for row in csv_rows(DISTRICTS_CSV) {
            let f = "districts.csv";
            let code = field(&row, 0, f)?.to_string();
            let feature = features
                .iter()
                .find(|ft| ft["properties"]["code"].as_str() == Some(&code))
                .ok_or_else(|| CityError::Data(format!("no boundary for {code}")))?;
            // RFC 7946 winding (exterior counter-clockwise), which the
            // geodesic area needs.
            let boundary = parse_geometry(&feature["geometry"])?.orient(Direction::Default);
            let (_, lon, lat) = CORES
                .iter()
                .find(|c| c.0 == code)
                .copied()
                .ok_or_else(|| CityError::Data(format!("no core for {code}")))?;
            districts.push(District {
                name_zh: field(&row, 1, f)?.to_string(),
                name_en: field(&row, 2, f)?.to_string(),
                population: field(&row, 4, f)?
                    .parse()
                    .map_err(|e| CityError::Data(format!("{f}: {e}")))?,
                area_km2: field(&row, 5, f)?
                    .parse()
                    .map_err(|e| CityError::Data(format!("{f}: {e}")))?,
                rings: geom::rings_xy(&boundary),
                boundary,
                core: Xy::from_lonlat(lon, lat),
                streets: Vec::new(),
                code,
            });
        }
        districts.sort_by(|a, b| a.code.cmp(&b.code));

        let mut streets = Vec::new();
        for row in csv_rows(STREETS_CSV) {
            let f = "streets.csv";
            let dcode = field(&row, 4, f)?;
            let district = districts
                .iter()
                .position(|d| d.code == dcode)
                .ok_or_else(|| CityError::Data(format!("{f}: unknown district {dcode}")))?;
            streets.push(Street {
                code: field(&row, 0, f)?.to_string(),
                name_zh: field(&row, 2, f)?.to_string(),
                kind: match field(&row, 3, f)? {
                    "subdistrict" => StreetKind::Subdistrict,
                    "town" => StreetKind::Town,
                    _ => StreetKind::SpecialArea,
                },
                district,
                seat: Xy { x: 0.0, y: 0.0 },
                area: MultiPolygon(vec![]),
                area_km2: 0.0,
                communities: Vec::new(),
            });
        }
        streets.sort_by(|a, b| a.code.cmp(&b.code));
        for (i, s) in streets.iter().enumerate() {
            districts[s.district].streets.push(i);
        }

        let mut communities = Vec::new();
        for row in csv_rows(COMMUNITIES_CSV) {
            let f = "communities.csv";
            let scode = field(&row, 3, f)?;
            let street = streets
                .binary_search_by(|s| s.code.as_str().cmp(scode))
                .map_err(|_| CityError::Data(format!("{f}: unknown street {scode}")))?;
            communities.push(Community {
                code: field(&row, 0, f)?.to_string(),
                name_zh: field(&row, 1, f)?.to_string(),
                kind: field(&row, 2, f)?.to_string(),
                street,
            });
        }
        communities.sort_by(|a, b| a.code.cmp(&b.code));
        for (i, c) in communities.iter().enumerate() {
            streets[c.street].communities.push(i);
        }

        let mut admin = Admin {
            districts,
            streets,
            communities,
        };
        for d in 0..admin.districts.len() {
            admin.place_seats(d)?;
        }
        Ok(admin)
    }

    /// Places the street seats of district `d` by weighted k-means (Lloyd's
    /// algorithm) over sample points inside the district, with weights that
    /// grow towards the urban core, so that streets are small near the core
    /// and large in the countryside. Subdistricts (街道) take the seats
    /// nearest the core, towns the outer ones.
    fn place_seats(&mut self, d: usize) -> Result<(), CityError> {
        let district = &self.districts[d];
        let k = district.streets.len();
        let central = CENTRAL.contains(&district.code.as_str());
        let (lo, hi) = geom::bbox(&district.rings);
        let area_m2 = district.area_km2 * 1e6;
        let step = (area_m2 / 4000.0).sqrt();
        let mut samples: Vec<(Xy, f64)> = Vec::new();
        let mut y = lo.y + step / 2.0;
        while y < hi.y {
            for (x0, x1) in geom::scanline(&district.rings, y) {
                let first = ((x0 - lo.x - step / 2.0) / step).ceil().max(0.0);
                let mut x = lo.x + step / 2.0 + first * step;
                while x < x1 {
                    if x >= x0 {
                        let p = Xy { x, y };
                        let dcore = p.dist(district.core);
                        let w = if central {
                            1.0 + 3.0 * (-dcore / 3000.0).exp()
                        } else {
                            1.0 + 40.0 * (-dcore / 4000.0).exp()
                        };
                        samples.push((p, w));
                    }
                    x += step;
                }
            }
            y += step;
        }
        if samples.len() < k {
            return Err(CityError::Data(format!(
                "district {} has too few samples",
                district.code
            )));
        }
        if let Some(known) = self.known_seats(d, &samples) {
            self.cut_cells(d, &known);
            return Ok(());
        }
        // k-means++ initialisation from a fixed stream, then Lloyd iterations.
        let mut rng = Rng::stream(2026, &district.code);
        let mut seats = vec![samples[rng.below(samples.len())].0];
        while seats.len() < k {
            let d2: Vec<f64> = samples
                .iter()
                .map(|(p, w)| w * seats.iter().map(|s| p.dist2(*s)).fold(f64::MAX, f64::min))
                .collect();
            let total: f64 = d2.iter().sum();
            let mut r = rng.f64() * total;
            let mut pick = samples.len() - 1;
            for (i, v) in d2.iter().enumerate() {
                r -= v;
                if r <= 0.0 {
                    pick = i;
                    break;
                }
            }
            seats.push(samples[pick].0);
        }
        for _ in 0..15 {
            let mut acc = vec![(0.0, 0.0, 0.0); k];
            for (p, w) in &samples {
                let j = nearest(&seats, *p);
                acc[j].0 += p.x * w;
                acc[j].1 += p.y * w;
                acc[j].2 += w;
            }
            for (s, (sx, sy, sw)) in seats.iter_mut().zip(acc) {
                if sw > 0.0 {
                    *s = Xy {
                        x: sx / sw,
                        y: sy / sw,
                    };
                }
            }
        }
        // Subdistricts first (by code), then towns and special areas; seats by
        // distance to the core.
        let core = district.core;
        seats.sort_by(|a, b| a.dist(core).total_cmp(&b.dist(core)));
        let mut order = district.streets.clone();
        order.sort_by_key(|&s| {
            (
                self.streets[s].kind != StreetKind::Subdistrict,
                self.streets[s].code.clone(),
            )
        });
        let seats: Vec<(usize, Xy)> = order.into_iter().zip(seats).collect();
        self.cut_cells(d, &seats);
        Ok(())
    }

    /// The known seats of district `d`'s streets; a seat that falls outside
    /// the polygon (the map and the boundary disagree by a few hundred
    /// metres) moves to the nearest sample point inside. `None` unless every
    /// street has a distinct one.
    fn known_seats(&self, d: usize, samples: &[(Xy, f64)]) -> Option<Vec<(usize, Xy)>> {
        let points: Vec<Xy> = samples.iter().map(|s| s.0).collect();
        let mut seats = Vec::new();
        for &s in &self.districts[d].streets {
            let &(_, lon, lat) = KNOWN_SEATS.iter().find(|k| k.0 == self.streets[s].code)?;
            let p = Xy::from_lonlat(lon, lat);
            let inside = geom::scanline(&self.districts[d].rings, p.y)
                .iter()
                .any(|&(x0, x1)| x0 <= p.x && p.x < x1);
            // A sample point lies on a lattice like the grid centres; the
            // small offset keeps grid centres off the Voronoi bisectors.
            let snapped = if inside {
                p
            } else {
                let q = points[nearest(&points, p)];
                Xy {
                    x: q.x + 0.37,
                    y: q.y + 0.61,
                }
            };
            if seats.iter().any(|(_, p)| *p == snapped) {
                return None;
            }
            seats.push((s, snapped));
        }
        Some(seats)
    }

    /// Gives each street of district `d` its seat and its area: the seat's
    /// Voronoi cell clipped to the district.
    fn cut_cells(&mut self, d: usize, seats: &[(usize, Xy)]) {
        let district = &self.districts[d];
        let (lo, hi) = geom::bbox(&district.rings);
        let boundary = district.boundary.clone();
        let pad = 5000.0;
        let frame = [
            Xy {
                x: lo.x - pad,
                y: lo.y - pad,
            },
            Xy {
                x: hi.x + pad,
                y: lo.y - pad,
            },
            Xy {
                x: hi.x + pad,
                y: hi.y + pad,
            },
            Xy {
                x: lo.x - pad,
                y: hi.y + pad,
            },
        ];
        for (i, &(s, seat)) in seats.iter().enumerate() {
            let mut cell = frame.to_vec();
            for (j, (_, other)) in seats.iter().enumerate() {
                if j != i {
                    cell = geom::clip_nearer(&cell, seat, *other);
                }
            }
            let cell = MultiPolygon(vec![geom::polygon_lonlat(&cell)]);
            let area = cell.intersection(&boundary);
            let street = &mut self.streets[s];
            street.area_km2 = area.geodesic_area_unsigned() / 1e6;
            street.area = area;
            street.seat = seat;
        }
    }

    /// The street of district `d` whose derived area contains point `p`
    /// (the nearest seat: that is what a Voronoi cell is).
    pub fn street_at(&self, d: usize, p: Xy) -> usize {
        let ds = &self.districts[d].streets;
        let seats: Vec<Xy> = ds.iter().map(|&s| self.streets[s].seat).collect();
        ds[nearest(&seats, p)]
    }
}

/// Index of the point of `pts` nearest to `p` (lowest index on ties).
pub fn nearest(pts: &[Xy], p: Xy) -> usize {
    let mut best = 0;
    let mut bd = f64::MAX;
    for (i, q) in pts.iter().enumerate() {
        let d = q.dist2(p);
        if d < bd {
            bd = d;
            best = i;
        }
    }
    best
}
