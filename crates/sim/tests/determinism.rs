//! The simulator is a pure function of its inputs.

use std::sync::{Arc, OnceLock};

use city::{City, Size};
use serde_json::Value;
use sim::{Scenario, Sim, SimConfig, digest};

/// 2026-07-01T00:00:00Z, 08:00 in Guangzhou: the morning peak.
const START: i64 = 1_782_864_000_000;

fn city() -> Arc<City> {
    static CITY: OnceLock<Arc<City>> = OnceLock::new();
    CITY.get_or_init(|| Arc::new(City::build(Size::Small).unwrap()))
        .clone()
}

fn run(seed: u64, scenario: Scenario, steps: usize) -> (Sim, Vec<Vec<Value>>) {
    let mut cfg = SimConfig::new(seed, START);
    cfg.scenario = scenario;
    let mut sim = Sim::new(city(), cfg);
    let batches = (0..steps).map(|_| sim.step()).collect();
    (sim, batches)
}

#[test]
fn same_seed_same_events_different_seed_different_events() {
    let (_, a) = run(42, Scenario::Normal, 600);
    let (_, b) = run(42, Scenario::Normal, 600);
    let (_, c) = run(43, Scenario::Normal, 600);
    assert_eq!(digest(&a), digest(&b));
    assert_ne!(digest(&a), digest(&c));
    assert!(a.iter().map(Vec::len).sum::<usize>() > 1000);
}

#[test]
fn vehicles_stay_on_roads_and_report_positions() {
    let (sim, batches) = run(7, Scenario::Normal, 300);
    let net = &sim.city().roads;
    for (_, e, off) in sim.vehicle_positions() {
        let seg = &net.segments[net.edges[e].segment];
        assert!((0.0..=seg.length_m).contains(&off));
        assert!(net.in_main[net.edges[e].from]);
    }
    let reports: Vec<&Value> = batches
        .iter()
        .flatten()
        .filter(|u| u["type"] == "Vehicle")
        .collect();
    assert!(reports.len() > 1000);
    let moving = reports
        .iter()
        .filter(|u| u["speed"]["value"].as_f64().unwrap_or(0.0) > 5.0)
        .count();
    assert!(
        moving > reports.len() / 4,
        "{moving} of {} moving",
        reports.len()
    );
    for r in reports {
        assert_eq!(r["location"]["value"]["type"], "Point");
        assert!(r["location"]["observedAt"].is_string());
    }
}

#[test]
fn updates_cover_traffic_and_sensors() {
    let (sim, batches) = run(1, Scenario::Normal, 900);
    let types: std::collections::BTreeSet<&str> = batches
        .iter()
        .flatten()
        .filter_map(|u| u["type"].as_str())
        .collect();
    for t in [
        "Vehicle",
        "TrafficFlowObserved",
        "AirQualityObserved",
        "WeatherObserved",
        "WaterObserved",
        "OffStreetParking",
        "WasteContainer",
    ] {
        assert!(types.contains(t), "no {t} update in 15 minutes: {types:?}");
    }
    assert!(sim.stats().updates > 0);
}

#[test]
fn the_typhoon_drill_floods_roads_and_raises_alerts() {
    // Six simulated hours bring the peak of the storm; vehicles report
    // rarely here to keep the test fast.
    let mut cfg = SimConfig::new(5, START);
    cfg.scenario = Scenario::Typhoon;
    cfg.report_every_s = 600;
    let mut sim = Sim::new(city(), cfg.clone());
    let mut alerts = Vec::new();
    let mut max_flooded = 0;
    let mut first = Vec::new();
    for step in 0..6 * 3600 {
        let batch = sim.step();
        if step < 600 {
            first.push(batch.clone());
        }
        max_flooded = max_flooded.max(sim.stats().flooded_segments);
        alerts.extend(
            batch
                .into_iter()
                .filter(|u| u["type"] == "Alert" && u.get("category").is_some()),
        );
    }
    assert!(max_flooded > 0, "no flooded road");
    assert!(alerts.iter().any(|a| a["subCategory"]["value"] == "flood"));
    assert!(
        alerts
            .iter()
            .any(|a| a["caseSubcategory"]["languageMap"]["zh"] == "道路积水")
    );
    let mut again = Sim::new(city(), cfg);
    let replay: Vec<Vec<Value>> = (0..600).map(|_| again.step()).collect();
    assert_eq!(
        digest(&first),
        digest(&replay),
        "the drill replays identically"
    );
}

#[test]
fn the_drill_starts_on_demand_and_replays() {
    let run = || {
        let mut sim = Sim::new(city(), SimConfig::new(9, START));
        let mut batches = Vec::new();
        for step in 0..700 {
            if step == 60 {
                assert!(!sim.typhoon_active());
                assert_eq!(sim.rain_mm_per_h(), 0.0);
                sim.start_typhoon();
            }
            batches.push(sim.step());
        }
        (sim, batches)
    };
    let (a, first) = run();
    let (_, second) = run();
    assert!(a.typhoon_active());
    assert!(a.rain_mm_per_h() > 0.0, "the storm has begun");
    assert_eq!(digest(&first), digest(&second));
}

#[test]
fn congestion_follows_the_rush_hour() {
    // 08:00 against 03:00 local time, ten simulated minutes each.
    let congested = |start: i64| {
        let mut sim = Sim::new(city(), SimConfig::new(3, start));
        (0..600).for_each(|_| {
            sim.step();
        });
        sim.stats().congested_segments
    };
    let peak = congested(START);
    let night = congested(START - 5 * 3_600_000);
    assert!(peak > 2 * night.max(1), "peak {peak}, night {night}");
}
