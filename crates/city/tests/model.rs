//! Facts the city model must keep: real divisions and codes, grids that tile
//! the built-up area street by street, vehicles on roads, Smart Data Models
//! names, and determinism.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use city::{City, Size};
use geo::{BoundingRect, Contains, Intersects, Point, Rect};
use serde_json::Value;

/// A fixed observation time: 2026-07-01T00:00:00Z.
const AT: i64 = 1_782_864_000_000;

fn small() -> &'static City {
    static CITY: OnceLock<City> = OnceLock::new();
    CITY.get_or_init(|| City::build(Size::Small).expect("small city builds"))
}

fn entities() -> &'static Vec<Value> {
    static E: OnceLock<Vec<Value>> = OnceLock::new();
    E.get_or_init(|| small().entities(AT))
}

fn of_type(t: &str) -> Vec<&'static Value> {
    entities().iter().filter(|e| e["type"] == t).collect()
}

#[test]
fn eleven_districts_with_codes_and_census_population() {
    let c = small();
    let expect = [
        ("440103", "荔湾区", 1_238_305),
        ("440104", "越秀区", 1_038_643),
        ("440105", "海珠区", 1_819_037),
        ("440106", "天河区", 2_241_826),
        ("440111", "白云区", 3_742_991),
        ("440112", "黄埔区", 1_264_447),
        ("440113", "番禺区", 2_658_397),
        ("440114", "花都区", 1_642_360),
        ("440115", "南沙区", 846_584),
        ("440117", "从化区", 717_684),
        ("440118", "增城区", 1_466_331),
    ];
    let got: Vec<(&str, &str, u64)> = c
        .admin
        .districts
        .iter()
        .map(|d| (d.code.as_str(), d.name_zh.as_str(), d.population))
        .collect();
    assert_eq!(got, expect);
    let total: u64 = c.admin.districts.iter().map(|d| d.population).sum();
    assert_eq!(total, 18_676_605);
    let area: f64 = c.admin.districts.iter().map(|d| d.area_km2).sum();
    assert!(
        (area - 7434.40).abs() < 0.01,
        "official areas add up to {area}"
    );
}

#[test]
fn streets_and_communities_are_the_official_units() {
    let c = small();
    assert_eq!(c.admin.streets.len(), 178);
    assert_eq!(c.admin.communities.len(), 2851);
    for s in &c.admin.streets {
        assert_eq!(s.code.len(), 9);
        assert!(s.code.starts_with(&c.admin.districts[s.district].code));
        assert!(
            !s.communities.is_empty(),
            "street {} has communities",
            s.code
        );
    }
    for k in &c.admin.communities {
        assert_eq!(k.code.len(), 12);
        assert!(k.code.starts_with(&c.admin.streets[k.street].code));
    }
    let per_district: Vec<usize> = c.admin.districts.iter().map(|d| d.streets.len()).collect();
    assert_eq!(per_district.iter().sum::<usize>(), 178);
    assert_eq!(per_district[1], 18, "Yuexiu has 18 subdistricts");
}

#[test]
fn derived_street_areas_partition_each_district() {
    let c = small();
    for (d, district) in c.admin.districts.iter().enumerate() {
        let sum: f64 = district
            .streets
            .iter()
            .map(|&s| c.admin.streets[s].area_km2)
            .sum();
        let geom = geo::GeodesicArea::geodesic_area_unsigned(&district.boundary) / 1e6;
        assert!(
            (sum - geom).abs() / geom < 0.01,
            "district {d}: streets add up to {sum} km², polygon {geom} km²"
        );
        for &s in &district.streets {
            assert!(c.admin.streets[s].area_km2 > 0.0, "street {s} has an area");
        }
    }
}

#[test]
fn grids_have_unique_15_digit_codes_matching_their_units() {
    let c = small();
    assert!(
        (2000..8000).contains(&c.grids.len()),
        "a small city has a few thousand grids, not {}",
        c.grids.len()
    );
    let mut seen = HashSet::new();
    for g in &c.grids {
        assert_eq!(g.code.len(), 15, "{}", g.code);
        assert!(g.code.bytes().all(|b| b.is_ascii_digit()));
        assert!(
            seen.insert(g.code.clone()),
            "duplicate grid code {}",
            g.code
        );
        let street = &c.admin.streets[g.street];
        let community = &c.admin.communities[g.community];
        assert_eq!(community.street, g.street);
        assert_eq!(street.district, g.district);
        assert_eq!(&g.code[..9], street.code);
        assert_eq!(&g.code[9..12], &community.code[9..12]);
        assert_ne!(&g.code[12..], "000");
    }
}

#[test]
fn every_grid_lies_in_its_district_and_in_exactly_one_street() {
    let c = small();
    let boxes: Vec<Option<Rect<f64>>> = c
        .admin
        .streets
        .iter()
        .map(|s| s.area.bounding_rect())
        .collect();
    for g in &c.grids {
        let [lon, lat] = g.centre().lonlat();
        let p = Point::new(lon, lat);
        assert!(
            c.admin.districts[g.district].boundary.contains(&p),
            "grid {} centre outside its district",
            g.code
        );
        let holders: Vec<usize> = (0..c.admin.streets.len())
            .filter(|&s| boxes[s].is_some_and(|b| b.intersects(&p)))
            .filter(|&s| c.admin.streets[s].area.contains(&p))
            .collect();
        assert_eq!(
            holders,
            vec![g.street],
            "grid {} streets {holders:?}",
            g.code
        );
    }
}

#[test]
fn grid_codes_do_not_depend_on_the_city_size() {
    let medium = City::build(Size::Medium).unwrap();
    let codes: HashMap<&str, (i32, i32)> = medium
        .grids
        .iter()
        .map(|g| (g.code.as_str(), (g.i, g.j)))
        .collect();
    assert!(medium.grids.len() > 3 * small().grids.len());
    for g in &small().grids {
        if ["440103", "440104", "440105", "440106"].contains(&&g.code[..6]) {
            assert_eq!(codes.get(g.code.as_str()), Some(&(g.i, g.j)), "{}", g.code);
        }
    }
}

#[test]
fn every_vehicle_is_on_a_road_segment() {
    let c = small();
    let net = &c.roads;
    assert!(c.assets.vehicles.len() >= 400);
    for v in &c.assets.vehicles {
        let edge = net.edges[v.edge];
        assert!(net.in_main[edge.from] && net.in_main[edge.to]);
        let seg = &net.segments[edge.segment];
        assert!((0.0..=seg.length_m).contains(&v.offset_m));
        let (p, _) = net.position(v.edge, v.offset_m);
        assert!(city::roads::dist_to_segment(net, edge.segment, p) < 0.01);
    }
    let buses = c
        .assets
        .vehicles
        .iter()
        .filter(|v| v.kind == city::assets::VehicleKind::Bus)
        .count();
    assert!(buses > 0);
}

#[test]
fn bus_routes_are_connected_paths() {
    let c = small();
    assert!(!c.assets.bus_lines.is_empty());
    for l in &c.assets.bus_lines {
        for w in l.route.windows(2) {
            assert_eq!(
                c.roads.edges[w[0]].to, c.roads.edges[w[1]].from,
                "line {}",
                l.code
            );
        }
        let first = c.roads.edges[l.route[0]].from;
        let last = c.roads.edges[*l.route.last().unwrap()].to;
        assert_eq!(first, last, "line {} returns to its terminus", l.code);
        assert!(
            l.stops.windows(2).all(|w| w[0] < w[1]),
            "stops in route order"
        );
        assert_eq!(
            l.stops.last(),
            Some(&(l.route.len() - 1)),
            "a stop at the terminus"
        );
        let route_m: f64 = l
            .route
            .iter()
            .map(|&e| c.roads.segments[c.roads.edges[e].segment].length_m)
            .sum();
        assert!(
            l.stops.len() as f64 >= route_m / 1500.0,
            "line {} has stops",
            l.code
        );
    }
}

#[test]
fn named_roads_are_in_the_network() {
    let c = small();
    for slug in [
        "neihuan",
        "huancheng",
        "huanan",
        "guangyuan",
        "jichang",
        "zhongshandadao",
    ] {
        assert!(
            c.roads.segments.iter().any(|s| s.road == Some(slug)),
            "{slug} missing"
        );
    }
    let main = c.roads.in_main.iter().filter(|&&m| m).count();
    assert!(
        main * 10 > c.roads.nodes.len() * 9,
        "most of the network is connected"
    );
}

#[test]
fn entities_have_unique_ngsi_ld_ids() {
    let mut ids = HashSet::new();
    for e in entities() {
        let id = e["id"].as_str().unwrap();
        let t = e["type"].as_str().unwrap();
        assert!(id.starts_with(&format!("urn:ngsi-ld:{t}:")), "{id}");
        assert!(ids.insert(id), "duplicate id {id}");
    }
    assert_eq!(of_type("District").len(), 11);
    assert_eq!(of_type("Township").len(), 178);
    assert_eq!(of_type("Community").len(), 2851);
    assert_eq!(of_type("UnitGrid").len(), small().grids.len());
}

fn has(e: &Value, attrs: &[&str]) {
    for a in attrs {
        assert!(e.get(*a).is_some(), "{} lacks {a}", e["id"]);
    }
}

#[test]
fn entities_use_smart_data_models_names() {
    let district = &of_type("District")[1];
    assert_eq!(district["id"], "urn:ngsi-ld:District:440104");
    assert_eq!(district["name"]["type"], "LanguageProperty");
    assert_eq!(district["name"]["languageMap"]["zh"], "越秀区");
    assert_eq!(district["name"]["languageMap"]["en"], "Yuexiu District");
    assert_eq!(district["population"]["value"], 1_038_643);

    for v in of_type("Vehicle") {
        has(
            v,
            &[
                "vehicleType",
                "category",
                "location",
                "speed",
                "heading",
                "vehiclePlateIdentifier",
                "serviceStatus",
            ],
        );
        assert!(["car", "bus"].contains(&v["vehicleType"]["value"].as_str().unwrap()));
    }
    for s in of_type("RoadSegment") {
        has(
            s,
            &[
                "name",
                "roadClass",
                "totalLaneNumber",
                "maximumAllowedSpeed",
                "length",
                "startPoint",
                "endPoint",
                "location",
            ],
        );
        assert_eq!(s["location"]["value"]["type"], "LineString");
        assert_eq!(s["maximumAllowedSpeed"]["unitCode"], "KMH");
    }
    for t in of_type("TrafficFlowObserved") {
        has(
            t,
            &[
                "refRoadSegment",
                "intensity",
                "averageVehicleSpeed",
                "occupancy",
                "congested",
                "dateObserved",
            ],
        );
    }
    for a in of_type("AirQualityObserved") {
        has(
            a,
            &[
                "dateObserved",
                "pm25",
                "pm10",
                "no2",
                "o3",
                "airQualityIndex",
                "location",
            ],
        );
    }
    for w in of_type("WeatherObserved") {
        has(
            w,
            &[
                "temperature",
                "relativeHumidity",
                "precipitation",
                "windSpeed",
                "dateObserved",
            ],
        );
    }
    for w in of_type("WaterObserved") {
        has(w, &["height", "flow", "dateObserved", "location"]);
    }
    for p in of_type("OffStreetParking") {
        has(
            p,
            &[
                "totalSpotNumber",
                "availableSpotNumber",
                "allowedVehicleType",
                "location",
            ],
        );
    }
    for l in of_type("Streetlight") {
        has(l, &["status", "powerState", "location"]);
    }
    for b in of_type("WasteContainer") {
        has(b, &["fillingLevel", "status", "location"]);
    }
    for d in of_type("Device") {
        has(d, &["category", "controlledProperty", "location"]);
    }
    assert!(of_type("PointOfInterest").len() >= 15);
    for kind in [
        "AirQualityObserved",
        "WeatherObserved",
        "WaterObserved",
        "OffStreetParking",
        "Streetlight",
        "WasteContainer",
        "Device",
        "TrafficFlowObserved",
    ] {
        assert!(!of_type(kind).is_empty(), "no {kind}");
    }
}

#[test]
fn the_model_is_deterministic() {
    let again = City::build(Size::Small).unwrap().entities(AT);
    assert_eq!(again.len(), entities().len());
    let a = serde_json::to_string(&again).unwrap();
    let b = serde_json::to_string(entities()).unwrap();
    assert!(a == b, "two builds differ");
}

/// The default demo city stays small enough to load in a second or two,
/// with every kind of asset present.
#[test]
fn the_small_city_is_small_and_complete() {
    let mut by_type: HashMap<&str, usize> = HashMap::new();
    for e in entities() {
        *by_type.entry(e["type"].as_str().unwrap()).or_default() += 1;
    }
    let total = entities().len();
    assert!(
        (8_000..20_000).contains(&total),
        "{total} entities: {by_type:?}"
    );
    for (kind, at_least) in [
        ("Vehicle", 400),
        ("RoadSegment", 500),
        ("TrafficFlowObserved", 100),
        ("OffStreetParking", 50),
        ("AirQualityObserved", 11),
        ("WeatherObserved", 11),
        ("WaterObserved", 30),
        ("Streetlight", 1000),
        ("WasteContainer", 500),
        ("Device", 20),
        ("PointOfInterest", 20),
        ("GtfsRoute", 5),
        ("GtfsStop", 50),
        ("Road", 20),
    ] {
        let n = by_type.get(kind).copied().unwrap_or(0);
        assert!(n >= at_least, "{n} {kind}, expected at least {at_least}");
    }
}

/// The full city builds (the 999-grids-per-community limit holds), with
/// unique codes, grids in every district and every vehicle on the main
/// network. The polygon checks run on the small city above.
#[test]
fn the_full_city_builds_with_unique_codes() {
    let c = City::build(Size::Full).unwrap();
    assert!(c.grids.len() > 50_000, "{} grids", c.grids.len());
    let codes: HashSet<&str> = c.grids.iter().map(|g| g.code.as_str()).collect();
    assert_eq!(codes.len(), c.grids.len());
    assert!(c.grids.iter().all(|g| g.code.len() == 15));
    let districts: HashSet<&str> = c.grids.iter().map(|g| &g.code[..6]).collect();
    assert_eq!(districts.len(), 11, "every district has built-up grids");
    for v in &c.assets.vehicles {
        assert!(c.roads.in_main[c.roads.edges[v.edge].from]);
    }
    let n = c.entities(AT).len();
    assert!(n > 100_000, "{n} entities");
}

#[test]
fn only_bridges_cross_the_pearl_river() {
    let c = small();
    let rivers: Vec<Vec<city::geom::Xy>> = city::water::CHANNELS
        .iter()
        .take(3)
        .map(|ch| ch.points())
        .collect();
    let mut crossing_roads = HashSet::new();
    for (s, seg) in c.roads.segments.iter().enumerate() {
        let [a, b] = c.roads.segment_line(s);
        if city::water::crosses_water(&rivers, a, b) {
            assert!(
                seg.road.is_some(),
                "generated segment {} crosses the river",
                seg.code
            );
            crossing_roads.insert(seg.road.unwrap_or_default());
        }
    }
    for bridge in [
        "haizhuqiao",
        "jiangwanqiao",
        "liedeqiao",
        "renminqiao",
        "guangzhoudadao",
    ] {
        assert!(
            crossing_roads.contains(bridge),
            "{bridge} does not cross: {crossing_roads:?}"
        );
    }
}
