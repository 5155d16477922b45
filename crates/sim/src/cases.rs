//! Urban-management cases (数字城管 部件/事件, after the national standard
//! GB/T 30428.2 / CJ/T 214 categories), traffic incidents and flooded-road
//! alerts. Cases are `Alert` entities with the case class in extra
//! attributes; they close after a handling time.

use city::geom::Xy;
use city::ngsi::{id, lang, prop, rel};
use serde_json::{Value, json};

use crate::Sim;

/// A case class: (事件/部件, 大类 zh/en, 小类 zh/en, SDM Alert category,
/// weight in the normal scenario, weight in the typhoon drill).
type CaseClass = (
    &'static str,
    (&'static str, &'static str),
    (&'static str, &'static str),
    &'static str,
    f64,
    f64,
);

const CLASSES: &[CaseClass] = &[
    (
        "event",
        ("市容环境", "City appearance"),
        ("暴露垃圾", "Exposed garbage"),
        "environment",
        25.0,
        10.0,
    ),
    (
        "event",
        ("街面秩序", "Street order"),
        ("占道经营", "Street vending on the road"),
        "security",
        18.0,
        2.0,
    ),
    (
        "event",
        ("街面秩序", "Street order"),
        ("乱堆物料", "Materials piled on the street"),
        "security",
        8.0,
        4.0,
    ),
    (
        "event",
        ("宣传广告", "Advertising"),
        ("非法小广告", "Illegal small ads"),
        "environment",
        14.0,
        1.0,
    ),
    (
        "event",
        ("施工管理", "Construction"),
        ("施工废弃料", "Construction waste"),
        "environment",
        6.0,
        2.0,
    ),
    (
        "event",
        ("突发事件", "Emergencies"),
        ("道路积水", "Waterlogged road"),
        "weather",
        2.0,
        40.0,
    ),
    (
        "component",
        ("公用设施", "Public facilities"),
        ("井盖", "Manhole cover damaged or missing"),
        "security",
        8.0,
        10.0,
    ),
    (
        "component",
        ("市容环境", "City appearance"),
        ("垃圾箱", "Litter bin damaged"),
        "environment",
        6.0,
        4.0,
    ),
    (
        "component",
        ("道路交通", "Road traffic"),
        ("路灯", "Streetlight out"),
        "traffic",
        5.0,
        10.0,
    ),
    (
        "component",
        ("园林绿化", "Landscaping"),
        ("行道树", "Street tree damaged or fallen"),
        "environment",
        4.0,
        30.0,
    ),
];

/// Cases per grid per day in the normal scenario (before the daily cycle).
const CASES_PER_GRID_DAY: f64 = 0.03;
/// Traffic incidents per main segment per day at full demand.
const INCIDENTS_PER_SEGMENT_DAY: f64 = 0.02;

pub(crate) fn tick(sim: &mut Sim, now: i64, at: &str, h: f64, out: &mut Vec<Value>) {
    let city = std::sync::Arc::clone(&sim.city);
    let typhoon = sim.typhoon_active() && sim.rain_mmh > 5.0;
    // Reports follow waking hours; the drill multiplies them.
    let daytime = if (7.0..22.0).contains(&h) { 1.4 } else { 0.3 };
    let storm = if typhoon { 6.0 } else { 1.0 };
    let rate = city.grids.len() as f64 * CASES_PER_GRID_DAY / 86_400.0 * daytime * storm;
    let mut n = poisson(sim, rate);
    while n > 0 {
        n -= 1;
        let total: f64 = CLASSES
            .iter()
            .map(|c| if typhoon { c.5 } else { c.4 })
            .sum();
        let mut r = sim.rng.f64() * total;
        let class = CLASSES
            .iter()
            .find(|c| {
                r -= if typhoon { c.5 } else { c.4 };
                r <= 0.0
            })
            .unwrap_or(&CLASSES[0]);
        let g = &city.grids[sim.rng.below(city.grids.len())];
        let c = g.centre();
        let pos = Xy {
            x: c.x + sim.rng.range_f64(-45.0, 45.0),
            y: c.y + sim.rng.range_f64(-45.0, 45.0),
        };
        let source = if sim.rng.chance(0.6) {
            "gridInspector"
        } else {
            "citizen"
        };
        let (kind, major, minor, category, _, _) = *class;
        let mut alert = sim.alert(category, "urbanManagementCase", "low", minor, pos, at);
        let alert_id = alert["id"].as_str().unwrap_or_default().to_string();
        alert["caseType"] = prop(kind);
        alert["caseCategory"] = lang(major.0, major.1);
        alert["caseSubcategory"] = lang(minor.0, minor.1);
        alert["caseStatus"] = prop("reported");
        alert["reportedBy"] = prop(source);
        alert["refUnitGrid"] = rel(&id("UnitGrid", &g.code));
        out.push(alert);
        sim.stats.cases += 1;
        // Handled within 1 to 8 hours.
        let close = now + (3600.0 * sim.rng.range_f64(1.0, 8.0)) as i64 * 1000;
        sim.schedule_close(close, alert_id);
    }

    // Traffic incidents on main segments, more likely in heavy traffic.
    let net = &city.roads;
    let main = net.segments.iter().filter(|s| s.class.is_main()).count();
    let demand = crate::profile::traffic(h);
    let rate = main as f64 * INCIDENTS_PER_SEGMENT_DAY / 86_400.0 * demand * storm.sqrt();
    if poisson(sim, rate) > 0 && main > 0 {
        let k = sim.rng.below(main);
        if let Some((s, seg)) = net
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.class.is_main())
            .nth(k)
        {
            let [a, b] = net.segment_line(s);
            let minutes = sim.rng.range_f64(20.0, 60.0);
            sim.blocked_until[s] = now + (minutes * 60_000.0) as i64;
            let at_point = a.lerp(b, sim.rng.f64());
            let mut alert = sim.alert(
                "traffic",
                "carAccident",
                "medium",
                (
                    &format!("{}交通事故", seg.name_zh),
                    &format!("Traffic accident on {}", seg.name_en),
                ),
                at_point,
                at,
            );
            alert["refRoadSegment"] = rel(&city::ngsi::segment_id(&seg.code));
            let alert_id = alert["id"].as_str().unwrap_or_default().to_string();
            out.push(alert);
            sim.stats.incidents += 1;
            sim.schedule_close(sim.blocked_until[s], alert_id);
        }
    }

    // Flooded roads: an alert when a segment floods, closed when it drains.
    if sim.tick.is_multiple_of(10) {
        for s in 0..net.segments.len() {
            let open = sim.flood_alerts.contains_key(&s);
            if sim.flooded[s] && !open {
                let seg = &net.segments[s];
                let [a, b] = net.segment_line(s);
                let mut alert = sim.alert(
                    "weather",
                    "flood",
                    "high",
                    (
                        &format!("{}水浸封闭", seg.name_zh),
                        &format!("{} flooded and closed", seg.name_en),
                    ),
                    a.lerp(b, 0.5),
                    at,
                );
                alert["refRoadSegment"] = rel(&city::ngsi::segment_id(&seg.code));
                let alert_id = alert["id"].as_str().unwrap_or_default().to_string();
                sim.flood_alerts.insert(s, alert_id);
                out.push(alert);
            } else if !sim.flooded[s]
                && open
                && let Some(alert_id) = sim.flood_alerts.remove(&s)
            {
                out.push(json!({"id": alert_id, "type": "Alert", "validTo": prop(at)}));
            }
        }
    }
}

/// A Poisson draw with a small mean (inversion).
fn poisson(sim: &mut Sim, mean: f64) -> u32 {
    let l = (-mean).exp();
    let mut k = 0;
    let mut p = sim.rng.f64();
    while p > l && k < 100 {
        k += 1;
        p *= sim.rng.f64();
    }
    k
}
