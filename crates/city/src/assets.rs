//! City assets placed plausibly and deterministically: the real major
//! hospitals at approximate positions, and generated parking facilities,
//! monitoring stations, water gauges, cameras, streetlights, waste
//! containers, fire stations, emergency shelters, bus lines, buses and taxis.

use std::collections::HashSet;

use crate::admin::Admin;
use crate::geom::Xy;
use crate::grid::{CELL_M, Grid};
use crate::rng::Rng;
use crate::roads::{RoadClass, RoadNetwork};
use crate::water::CHANNELS;
use crate::{CityError, Size};

/// Seed of every placement stream (the model does not depend on the
/// simulator's seed).
const SEED: u64 = 0x5955_414E_4721;

/// Kinds of point of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoiKind {
    /// 医院.
    Hospital,
    /// 消防站.
    FireStation,
    /// 应急避难场所.
    Shelter,
}

impl PoiKind {
    /// Category value used in the entities.
    pub fn category(self) -> &'static str {
        match self {
            PoiKind::Hospital => "hospital",
            PoiKind::FireStation => "fireStation",
            PoiKind::Shelter => "emergencyShelter",
        }
    }
}

/// A point of interest.
#[derive(Debug, Clone)]
pub struct Poi {
    /// Identifier code.
    pub code: String,
    /// Kind.
    pub kind: PoiKind,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Position.
    pub pos: Xy,
    /// Capacity (beds, people), if meaningful.
    pub capacity: Option<u32>,
}

/// What a car park mostly serves: it shapes its daily occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkingUse {
    /// Shops and leisure: peaks in the afternoon and evening.
    Commercial,
    /// Offices: peaks in working hours.
    Office,
    /// Housing: full at night.
    Residential,
}

/// An off-street car park.
#[derive(Debug, Clone)]
pub struct Parking {
    /// Identifier code.
    pub code: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Position.
    pub pos: Xy,
    /// Total spots.
    pub total: u32,
    /// Use.
    pub usage: ParkingUse,
}

/// A fixed monitoring station (air quality or weather) or gauge.
#[derive(Debug, Clone)]
pub struct Station {
    /// Identifier code.
    pub code: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Position.
    pub pos: Xy,
    /// District index (stations) or channel index (gauges).
    pub area: usize,
    /// Baseline (PM2.5 µg/m³ for air, mean level m for water).
    pub base: f64,
}

/// A thing on a road: camera or streetlight.
#[derive(Debug, Clone)]
pub struct RoadDevice {
    /// Identifier code.
    pub code: String,
    /// Position.
    pub pos: Xy,
    /// Segment index.
    pub segment: usize,
}

/// A waste container.
#[derive(Debug, Clone)]
pub struct WasteBin {
    /// Identifier code.
    pub code: String,
    /// Position.
    pub pos: Xy,
    /// Grid index.
    pub grid: usize,
}

/// A bus line: an out-and-back route on the graph.
#[derive(Debug, Clone)]
pub struct BusLine {
    /// Identifier code.
    pub code: String,
    /// Public number.
    pub number: u32,
    /// Directed edges, out then back.
    pub route: Vec<usize>,
    /// Stops: indexes into `route` of the edges at whose end a stop is
    /// (about every 500 m, and at both termini), ascending.
    pub stops: Vec<usize>,
}

/// Taxi or bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleKind {
    /// 出租车.
    Taxi,
    /// 公交车.
    Bus,
}

/// A vehicle at its initial position.
#[derive(Debug, Clone)]
pub struct Vehicle {
    /// Identifier code.
    pub code: String,
    /// Kind.
    pub kind: VehicleKind,
    /// Plate.
    pub plate: String,
    /// Bus line index, for buses.
    pub line: Option<usize>,
    /// Index in the line's route, for buses.
    pub route_pos: usize,
    /// Current directed edge.
    pub edge: usize,
    /// Metres along the edge.
    pub offset_m: f64,
}

/// All assets.
#[derive(Debug, Clone, Default)]
pub struct Assets {
    /// Hospitals, fire stations, shelters.
    pub pois: Vec<Poi>,
    /// Car parks.
    pub parkings: Vec<Parking>,
    /// Air-quality stations.
    pub air_stations: Vec<Station>,
    /// Weather stations.
    pub weather_stations: Vec<Station>,
    /// Water-level gauges.
    pub gauges: Vec<Station>,
    /// Traffic cameras.
    pub cameras: Vec<RoadDevice>,
    /// Streetlights.
    pub streetlights: Vec<RoadDevice>,
    /// Waste containers.
    pub bins: Vec<WasteBin>,
    /// Bus lines.
    pub bus_lines: Vec<BusLine>,
    /// Taxis and buses.
    pub vehicles: Vec<Vehicle>,
}

/// Major hospitals with approximate positions (lon, lat) from public maps.
const HOSPITALS: &[(&str, &str, f64, f64, u32)] = &[
    (
        "中山大学附属第一医院",
        "First Affiliated Hospital of Sun Yat-sen University",
        113.2880,
        23.1300,
        3000,
    ),
    (
        "广东省人民医院",
        "Guangdong Provincial People's Hospital",
        113.2890,
        23.1260,
        3800,
    ),
    (
        "中山大学孙逸仙纪念医院",
        "Sun Yat-sen Memorial Hospital",
        113.2720,
        23.1220,
        2000,
    ),
    (
        "广州市第一人民医院",
        "Guangzhou First People's Hospital",
        113.2630,
        23.1360,
        1800,
    ),
    (
        "广州医科大学附属第一医院",
        "First Affiliated Hospital of Guangzhou Medical University",
        113.2640,
        23.1200,
        1600,
    ),
    (
        "广东省中医院",
        "Guangdong Provincial Hospital of Chinese Medicine",
        113.2740,
        23.1280,
        1500,
    ),
    (
        "广州市红十字会医院",
        "Guangzhou Red Cross Hospital",
        113.2720,
        23.0980,
        1000,
    ),
    (
        "南方医科大学南方医院",
        "Nanfang Hospital, Southern Medical University",
        113.3270,
        23.1880,
        2500,
    ),
    (
        "暨南大学附属第一医院",
        "First Affiliated Hospital of Jinan University",
        113.3420,
        23.1330,
        1500,
    ),
    (
        "中山大学附属第三医院",
        "Third Affiliated Hospital of Sun Yat-sen University",
        113.3440,
        23.1390,
        2000,
    ),
    (
        "番禺区中心医院",
        "Panyu Central Hospital",
        113.3650,
        22.9420,
        1500,
    ),
    (
        "花都区人民医院",
        "Huadu District People's Hospital",
        113.2200,
        23.4030,
        1200,
    ),
    (
        "增城区人民医院",
        "Zengcheng District People's Hospital",
        113.8250,
        23.2920,
        1000,
    ),
    (
        "从化区中心医院",
        "Conghua Central Hospital",
        113.5880,
        23.5500,
        800,
    ),
    (
        "广州市第一人民医院南沙医院",
        "Nansha Hospital of Guangzhou First People's Hospital",
        113.5450,
        22.8000,
        1000,
    ),
];

/// Fleet sizes per city size: taxis, bus lines, buses per line.
fn fleet(size: Size) -> (usize, usize, usize) {
    match size {
        Size::Small => (400, 8, 6),
        Size::Medium => (2500, 30, 8),
        Size::Full => (8000, 80, 8),
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

fn jitter(rng: &mut Rng, p: Xy, r: f64) -> Xy {
    Xy {
        x: p.x + rng.range_f64(-r, r),
        y: p.y + rng.range_f64(-r, r),
    }
}

/// Places every asset.
pub fn place(
    admin: &Admin,
    grids: &[Grid],
    roads: &RoadNetwork,
    size: Size,
) -> Result<Assets, CityError> {
    if grids.is_empty() {
        return Err(CityError::Data("no grids to place assets on".into()));
    }
    let mut a = Assets::default();
    let built: HashSet<(i32, i32)> = grids.iter().map(|g| (g.i, g.j)).collect();
    let near_built = |p: Xy| {
        let (ci, cj) = ((p.x / CELL_M).floor() as i32, (p.y / CELL_M).floor() as i32);
        (-3..=3).any(|di| (-3..=3).any(|dj| built.contains(&(ci + di, cj + dj))))
    };

    for (k, &(zh, en, lon, lat, beds)) in HOSPITALS.iter().enumerate() {
        a.pois.push(Poi {
            code: format!("hospital-{:03}", k + 1),
            kind: PoiKind::Hospital,
            name_zh: zh.to_string(),
            name_en: en.to_string(),
            pos: Xy::from_lonlat(lon, lat),
            capacity: Some(beds),
        });
    }
    let mut rng = Rng::stream(SEED, "poi");
    for (kind, per, zh, en, cap) in [
        (PoiKind::FireStation, 800, "消防站", "Fire Station", None),
        (
            PoiKind::Shelter,
            300,
            "应急避难场所",
            "Emergency Shelter",
            Some(2000),
        ),
    ] {
        let n = (grids.len() / per).max(3);
        for k in 0..n {
            let g = pick(&mut rng, grids);
            let street = &admin.streets[g.street];
            a.pois.push(Poi {
                code: format!("{}-{:04}", kind.category(), k + 1),
                kind,
                name_zh: format!("{}{zh}{}", street.name_zh, k + 1),
                name_en: format!("{en} {} ({})", k + 1, admin.districts[g.district].name_en),
                pos: g.centre(),
                capacity: cap.map(|c: u32| c / 2 + rng.below(c as usize) as u32),
            });
        }
    }

    let mut rng = Rng::stream(SEED, "parking");
    for k in 0..(grids.len() / 40).max(5) {
        let g = pick(&mut rng, grids);
        let usage = match rng.below(3) {
            0 => ParkingUse::Commercial,
            1 => ParkingUse::Office,
            _ => ParkingUse::Residential,
        };
        a.parkings.push(Parking {
            code: format!("P{:05}", k + 1),
            name_zh: format!("{}停车场{}", admin.streets[g.street].name_zh, k + 1),
            name_en: format!(
                "Car park {} ({})",
                k + 1,
                admin.districts[g.district].name_en
            ),
            pos: jitter(&mut rng, g.centre(), 40.0),
            total: 80 + rng.below(1100) as u32,
            usage,
        });
    }

    // One air-quality and one weather station per district at its core,
    // plus extra air stations over the built-up grids.
    let mut rng = Rng::stream(SEED, "stations");
    for (d, district) in admin.districts.iter().enumerate() {
        let base = if crate::admin::CENTRAL.contains(&district.code.as_str()) {
            32.0
        } else {
            26.0
        };
        a.air_stations.push(Station {
            code: format!("{}-01", district.code),
            name_zh: format!("{}空气质量监测站", district.name_zh),
            name_en: format!("{} air-quality station", district.name_en),
            pos: district.core,
            area: d,
            base,
        });
        a.weather_stations.push(Station {
            code: district.code.clone(),
            name_zh: format!("{}气象站", district.name_zh),
            name_en: format!("{} weather station", district.name_en),
            pos: jitter(&mut rng, district.core, 800.0),
            area: d,
            base: 0.0,
        });
    }
    for k in 0..grids.len() / 600 {
        let g = pick(&mut rng, grids);
        a.air_stations.push(Station {
            code: format!("{}-{:02}", admin.districts[g.district].code, k + 2),
            name_zh: format!("{}微型空气监测点", admin.streets[g.street].name_zh),
            name_en: format!(
                "Air micro-station {} ({})",
                k + 2,
                admin.districts[g.district].name_en
            ),
            pos: g.centre(),
            area: g.district,
            base: 30.0,
        });
    }

    // Water-level gauges every few kilometres along each channel.
    for (c, ch) in CHANNELS.iter().enumerate() {
        let line = ch.points();
        let mut k = 0;
        for w in line.windows(2) {
            let n = (w[0].dist(w[1]) / ch.sensor_spacing_m).ceil().max(1.0) as usize;
            for s in 0..n {
                k += 1;
                a.gauges.push(Station {
                    code: format!("{}-{:02}", ch.slug, k),
                    name_zh: format!("{}水位站{}", ch.name_zh, k),
                    name_en: format!("{} gauge {}", ch.name_en, k),
                    pos: w[0].lerp(w[1], s as f64 / n as f64),
                    area: c,
                    base: ch.mean_level_m,
                });
            }
        }
    }

    // Cameras on the main segments near the built-up area; streetlights on
    // the generated streets; waste containers in the grids.
    let mut rng = Rng::stream(SEED, "road-devices");
    for (s, seg) in roads.segments.iter().enumerate() {
        let [p, q] = roads.segment_line(s);
        if seg.class.is_main() && near_built(p) {
            a.cameras.push(RoadDevice {
                code: format!("cam-{}", seg.code),
                pos: p.lerp(q, 0.1),
                segment: s,
            });
        }
    }
    let local: Vec<usize> = (0..roads.segments.len())
        .filter(|&s| roads.segments[s].road.is_none())
        .collect();
    if !local.is_empty() {
        for k in 0..grids.len() / 2 {
            let s = *pick(&mut rng, &local);
            let [p, q] = roads.segment_line(s);
            a.streetlights.push(RoadDevice {
                code: format!("SL{:06}", k + 1),
                pos: p.lerp(q, rng.f64()),
                segment: s,
            });
        }
    }
    for k in 0..grids.len() / 4 {
        let gi = rng.below(grids.len());
        a.bins.push(WasteBin {
            code: format!("WC{:06}", k + 1),
            pos: jitter(&mut rng, grids[gi].centre(), 40.0),
            grid: gi,
        });
    }

    place_vehicles(&mut a, roads, size, &near_built)?;
    Ok(a)
}

fn place_vehicles(
    a: &mut Assets,
    roads: &RoadNetwork,
    size: Size,
    near_built: &dyn Fn(Xy) -> bool,
) -> Result<(), CityError> {
    let (taxis, lines, per_line) = fleet(size);
    let mut rng = Rng::stream(SEED, "vehicles");
    let start_edges: Vec<usize> = roads
        .drivable_edges()
        .into_iter()
        .filter(|&e| near_built(roads.nodes[roads.edges[e].from].pos))
        .collect();
    if start_edges.is_empty() {
        return Err(CityError::Data(
            "no drivable road in the built-up area".into(),
        ));
    }
    // Bus termini: nodes of the generated streets in the main component.
    let termini: Vec<usize> = start_edges
        .iter()
        .map(|&e| roads.edges[e].from)
        .filter(|&n| {
            roads.out[n]
                .iter()
                .all(|&e| roads.segments[roads.edges[e].segment].class >= RoadClass::Secondary)
        })
        .collect();
    let mut number = 0;
    let mut attempts = 0;
    while a.bus_lines.len() < lines && attempts < lines * 20 && !termini.is_empty() {
        attempts += 1;
        let from = *pick(&mut rng, &termini);
        let to = *pick(&mut rng, &termini);
        if roads.nodes[from].pos.dist(roads.nodes[to].pos) < 2500.0 {
            continue;
        }
        let (Some(out), Some(back)) = (roads.route(from, to), roads.route(to, from)) else {
            continue;
        };
        number += 1;
        let back_len = back.len();
        let mut route = out;
        route.extend(back);
        let mut stops = Vec::new();
        let mut run = 0.0;
        let out_len = route.len() - back_len;
        for (k, &e) in route.iter().enumerate() {
            run += roads.segments[roads.edges[e].segment].length_m;
            if run >= 450.0 || k + 1 == out_len || k + 1 == route.len() {
                stops.push(k);
                run = 0.0;
            }
        }
        a.bus_lines.push(BusLine {
            code: format!("line-{number:03}"),
            number,
            route,
            stops,
        });
    }
    for (l, line) in a.bus_lines.iter().enumerate() {
        for b in 0..per_line {
            let route_pos = b * line.route.len() / per_line;
            a.vehicles.push(Vehicle {
                code: format!("bus-{:03}-{:02}", line.number, b + 1),
                kind: VehicleKind::Bus,
                plate: format!("粤A·B{:05}", l * 100 + b + 1),
                line: Some(l),
                route_pos,
                edge: line.route[route_pos],
                offset_m: 0.0,
            });
        }
    }
    for t in 0..taxis {
        let edge = *pick(&mut rng, &start_edges);
        let len = roads.segments[roads.edges[edge].segment].length_m;
        a.vehicles.push(Vehicle {
            code: format!("taxi-{:05}", t + 1),
            kind: VehicleKind::Taxi,
            plate: format!("粤A·T{:05}", 10_000 + t * 7 % 90_000),
            line: None,
            route_pos: 0,
            edge,
            offset_m: rng.f64() * len,
        });
    }
    Ok(())
}
