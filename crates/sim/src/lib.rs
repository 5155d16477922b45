//! A deterministic simulator of a living Guangzhou.
//!
//! [`Sim`] advances a simulated clock one second per [`Sim::step`] and
//! returns the NGSI-LD entity updates that second produced (normalized JSON
//! fragments for a batch upsert with `options=update`): taxis and buses
//! driving on the road graph with congestion that emerges from load, traffic
//! flow per main segment, sensors with daily cycles and noise, car-park
//! occupancy, streetlights, waste containers, urban-management cases
//! (部件/事件) at grid locations, traffic incidents, and the typhoon-and-flood
//! drill. Nothing here does I/O or reads a clock: the same city, seed, start
//! time and scenario give the same updates, step by step.

mod cases;
pub mod profile;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use city::assets::VehicleKind;
use city::geom::{Xy, round_to};
use city::ngsi::{self, id, lang, observed, prop, rel};
use city::rng::{Rng, fnv1a};
use city::roads::RoadClass;
use city::{City, water::CHANNELS};
use serde_json::{Value, json};

/// Errors of the simulator's options.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Unknown scenario name.
    #[error("unknown scenario `{0}` (expected normal or typhoon)")]
    UnknownScenario(String),
}

/// What happens in the simulated city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// An ordinary summer day, with its peaks, showers and incidents.
    Normal,
    /// The typhoon-and-flood drill: a typhoon passes over 12 simulated
    /// hours from the start: rain, storm surge and rising rivers, flooded
    /// roads that close, blocked traffic, alerts. [`Sim::start_typhoon`]
    /// starts the same drill at any time.
    Typhoon,
}

impl FromStr for Scenario {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Scenario, SimError> {
        match s {
            "normal" => Ok(Scenario::Normal),
            "typhoon" => Ok(Scenario::Typhoon),
            o => Err(SimError::UnknownScenario(o.to_string())),
        }
    }
}

/// Settings of a simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Simulated start time (Unix ms).
    pub start_ms: i64,
    /// Scenario.
    pub scenario: Scenario,
    /// Seconds between two position reports of a moving vehicle.
    pub report_every_s: u64,
}

impl SimConfig {
    /// Defaults for `seed`, starting at `start_ms`.
    pub fn new(seed: u64, start_ms: i64) -> SimConfig {
        SimConfig {
            seed,
            start_ms,
            scenario: Scenario::Normal,
            report_every_s: 5,
        }
    }
}

/// How many real vehicles each simulated vehicle stands for when the load
/// of a segment is computed.
const VEHICLE_WEIGHT: f64 = 20.0;
/// Jam density, vehicles per km per lane.
const JAM_DENSITY: f64 = 120.0;
/// Background density at full demand, vehicles per km per lane (the traffic
/// the simulated fleet does not represent).
const BACKGROUND_DENSITY: f64 = 45.0;

#[derive(Debug, Clone)]
struct VehicleState {
    edge: usize,
    offset_m: f64,
    route_pos: usize,
    /// Drivers differ: a factor on the segment speed.
    temper: f64,
    /// Position of this taxi in the on-duty order: lower comes out first.
    duty: f64,
    speed_ms: f64,
    phase: u64,
    /// Seconds still to wait at a bus stop.
    dwell_s: u32,
}

/// Counters of what the simulator produced.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    /// Updates produced.
    pub updates: u64,
    /// Vehicle reports.
    pub vehicle_reports: u64,
    /// Urban-management cases reported.
    pub cases: u64,
    /// Traffic incidents.
    pub incidents: u64,
    /// Road segments flooded at the moment.
    pub flooded_segments: usize,
    /// Segments congested at the last count.
    pub congested_segments: usize,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    city: Arc<City>,
    cfg: SimConfig,
    rng: Rng,
    tick: u64,
    vehicles: Vec<VehicleState>,
    /// Simulated vehicles on duty per segment, counted every 10 s.
    load: Vec<u32>,
    /// Vehicles that entered each segment since its last flow report.
    entered: Vec<u32>,
    /// Current speed per segment, m/s.
    seg_speed: Vec<f64>,
    /// Incident on a segment until this time.
    blocked_until: Vec<i64>,
    /// Flooded (closed) segments.
    flooded: Vec<bool>,
    /// Rainfall threshold (mm over the last 3 h) that floods a segment, for
    /// low-lying segments near the river.
    flood_threshold: Vec<Option<f64>>,
    /// Alerts to close: (time, seq) → id.
    closing: BTreeMap<(i64, u64), String>,
    seq: u64,
    /// Rain in mm/h now, and the rolling 3-hour total in mm.
    rain_mmh: f64,
    rain_3h: f64,
    shower_until: i64,
    /// The open warning-level alert of each gauge.
    gauge_alerted: Vec<Option<String>>,
    lights_on: Vec<bool>,
    /// Each streetlight's switching delay, hours.
    light_lag: Vec<f64>,
    bin_fill: Vec<f64>,
    /// Open flood alerts by segment.
    flood_alerts: BTreeMap<usize, String>,
    /// The tick at which the typhoon drill started, if it did.
    typhoon_from: Option<u64>,
    stats: SimStats,
}

impl Sim {
    /// A simulator over `city`.
    pub fn new(city: Arc<City>, cfg: SimConfig) -> Sim {
        let mut rng = Rng::stream(cfg.seed, "sim");
        let net = &city.roads;
        let vehicles = city
            .assets
            .vehicles
            .iter()
            .map(|v| VehicleState {
                edge: v.edge,
                offset_m: v.offset_m,
                route_pos: v.route_pos,
                temper: rng.range_f64(0.8, 1.1),
                duty: rng.f64(),
                speed_ms: 0.0,
                phase: rng.below(1 << 16) as u64,
                dwell_s: 0,
            })
            .collect();
        let rivers: Vec<Vec<Xy>> = CHANNELS.iter().take(3).map(|c| c.points()).collect();
        let flood_threshold = (0..net.segments.len())
            .map(|s| {
                let [a, b] = net.segment_line(s);
                let mid = a.lerp(b, 0.5);
                let near = rivers
                    .iter()
                    .any(|l| city::geom::dist_to_polyline(mid, l) < 700.0);
                (near && rng.chance(0.4)).then(|| rng.range_f64(60.0, 160.0))
            })
            .collect();
        let n_seg = net.segments.len();
        let seg_speed = net
            .segments
            .iter()
            .map(|s| f64::from(s.speed_kmh) / 3.6)
            .collect();
        let mut load = vec![0; n_seg];
        for v in &city.assets.vehicles {
            load[net.edges[v.edge].segment] += 1;
        }
        let bin_fill = (0..city.assets.bins.len())
            .map(|_| rng.range_f64(0.05, 0.6))
            .collect();
        Sim {
            gauge_alerted: vec![None; city.assets.gauges.len()],
            lights_on: vec![false; city.assets.streetlights.len()],
            light_lag: city
                .assets
                .streetlights
                .iter()
                .map(|l| (fnv1a(l.code.as_bytes()) % 600) as f64 / 3600.0)
                .collect(),
            bin_fill,
            flood_alerts: BTreeMap::new(),
            typhoon_from: (cfg.scenario == Scenario::Typhoon).then_some(0),
            vehicles,
            load,
            entered: vec![0; n_seg],
            seg_speed,
            blocked_until: vec![i64::MIN; n_seg],
            flooded: vec![false; n_seg],
            flood_threshold,
            closing: BTreeMap::new(),
            seq: 0,
            rain_mmh: 0.0,
            rain_3h: 0.0,
            shower_until: i64::MIN,
            stats: SimStats::default(),
            tick: 0,
            rng: Rng::stream(cfg.seed, "events"),
            city,
            cfg,
        }
    }

    /// The simulated time now (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.cfg.start_ms + self.tick as i64 * 1000
    }

    /// Counters so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// The city simulated.
    pub fn city(&self) -> &City {
        &self.city
    }

    /// Where each vehicle is: (vehicle index, directed edge, metres along).
    pub fn vehicle_positions(&self) -> Vec<(usize, usize, f64)> {
        self.vehicles
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.edge, v.offset_m))
            .collect()
    }

    /// Starts (or restarts) the typhoon-and-flood drill now: the storm
    /// replays from its beginning. Deterministic like everything else: the
    /// same seed and the same trigger step give the same drill.
    pub fn start_typhoon(&mut self) {
        self.typhoon_from = Some(self.tick);
    }

    /// True while a typhoon drill has been started.
    pub fn typhoon_active(&self) -> bool {
        self.typhoon_from.is_some()
    }

    /// Rain now, mm/h.
    pub fn rain_mm_per_h(&self) -> f64 {
        self.rain_mmh
    }

    /// Advances the clock by one second and returns the updates.
    pub fn step(&mut self) -> Vec<Value> {
        self.tick += 1;
        let now = self.now_ms();
        let at = ngsi::iso(now);
        let h = profile::local_hour(now);
        let mut out = Vec::new();
        self.weather_tick(now);
        self.traffic_tick(now, h);
        self.move_vehicles(now, h);
        self.report_vehicles(&at, h, &mut out);
        self.report_flows(now, &at, &mut out);
        self.report_sensors(&at, h, &mut out);
        cases::tick(self, now, &at, h, &mut out);
        self.close_alerts(now, &at, &mut out);
        self.stats.updates += out.len() as u64;
        out
    }

    /// The typhoon's rain (mm/h), wind (m/s) and storm surge (m) at hour
    /// `t` of the drill.
    fn typhoon(&self) -> (f64, f64, f64) {
        let Some(from) = self.typhoon_from else {
            return (0.0, 0.0, 0.0);
        };
        let t = (self.tick - from) as f64 / 3600.0;
        let envelope = |peak: f64, width: f64| (-((t - peak) / width).powi(2)).exp();
        (
            75.0 * envelope(5.5, 2.2),
            30.0 * envelope(5.0, 3.0),
            2.2 * envelope(6.5, 2.5),
        )
    }

    fn weather_tick(&mut self, now: i64) {
        let (storm_rain, _, _) = self.typhoon();
        // Summer afternoon showers in the normal scenario.
        let h = profile::local_hour(now);
        if storm_rain == 0.0
            && now > self.shower_until
            && (13.0..19.0).contains(&h)
            && self.rng.chance(1.0 / 7200.0)
        {
            self.shower_until = now + (1800.0 + self.rng.f64() * 3600.0) as i64 * 1000;
        }
        let shower = if now < self.shower_until { 18.0 } else { 0.0 };
        self.rain_mmh = storm_rain.max(shower);
        // Rolling 3-hour total as an exponential window.
        self.rain_3h += self.rain_mmh / 3600.0 - self.rain_3h / (3.0 * 3600.0);
    }

    fn traffic_tick(&mut self, now: i64, h: f64) {
        if !self.tick.is_multiple_of(10) {
            return;
        }
        let demand = profile::traffic(h);
        let city = Arc::clone(&self.city);
        let net = &city.roads;
        // Only vehicles on duty load the roads; parked taxis do not.
        self.load.iter_mut().for_each(|l| *l = 0);
        for (i, v) in self.vehicles.iter().enumerate() {
            if self.active(v, city.assets.vehicles[i].kind, h) {
                self.load[net.edges[v.edge].segment] += 1;
            }
        }
        let mut congested = 0;
        let mut flooded = 0;
        let rain_slow = 1.0 - (self.rain_mmh / 200.0).min(0.3);
        for (s, seg) in net.segments.iter().enumerate() {
            if let Some(th) = self.flood_threshold[s] {
                let was = self.flooded[s];
                let now_flooded = if was {
                    self.rain_3h > th * 0.6
                } else {
                    self.rain_3h > th
                };
                self.flooded[s] = now_flooded;
                if now_flooded {
                    flooded += 1;
                }
            }
            let free = f64::from(seg.speed_kmh) / 3.6;
            let lane_km = (seg.length_m / 1000.0) * f64::from(seg.lanes) * 2.0;
            let bg = match seg.class {
                RoadClass::Expressway | RoadClass::Arterial => BACKGROUND_DENSITY,
                RoadClass::Secondary => BACKGROUND_DENSITY * 0.7,
                RoadClass::Local => BACKGROUND_DENSITY * 0.3,
            } * demand;
            let density = bg + f64::from(self.load[s]) * VEHICLE_WEIGHT / lane_km;
            let mut v = free * (1.0 - density / JAM_DENSITY).max(0.05) * rain_slow;
            if self.blocked_until[s] > now {
                v *= 0.25;
            }
            if self.flooded[s] {
                v = 0.0;
            }
            if v < 0.4 * free {
                congested += 1;
            }
            self.seg_speed[s] = v;
        }
        self.stats.congested_segments = congested;
        self.stats.flooded_segments = flooded;
    }

    fn active(&self, v: &VehicleState, kind: VehicleKind, h: f64) -> bool {
        match kind {
            VehicleKind::Bus => (6.0..23.5).contains(&h),
            VehicleKind::Taxi => v.duty < 0.35 + 0.6 * profile::traffic(h),
        }
    }

    fn move_vehicles(&mut self, _now: i64, h: f64) {
        let city = Arc::clone(&self.city);
        let net = &city.roads;
        for i in 0..self.vehicles.len() {
            let kind = city.assets.vehicles[i].kind;
            let v = &self.vehicles[i];
            if !self.active(v, kind, h) {
                self.vehicles[i].speed_ms = 0.0;
                continue;
            }
            if v.dwell_s > 0 {
                let v = &mut self.vehicles[i];
                v.dwell_s -= 1;
                v.speed_ms = 0.0;
                continue;
            }
            let seg = net.edges[v.edge].segment;
            // A flooded segment still lets a vehicle already on it crawl out.
            let target =
                (self.seg_speed[seg] * v.temper).max(if self.flooded[seg] { 1.0 } else { 0.5 });
            let v = &mut self.vehicles[i];
            // Accelerate or brake towards the target.
            v.speed_ms += (target - v.speed_ms).clamp(-3.0, 2.0);
            v.offset_m += v.speed_ms;
            let len = net.segments[seg].length_m;
            if v.offset_m < len {
                continue;
            }
            let rest = v.offset_m - len;
            let next = match city.assets.vehicles[i].line {
                Some(l) => {
                    let line = &city.assets.bus_lines[l];
                    // A stop at the end of this edge: passengers board for
                    // 15 to 40 seconds.
                    if line.stops.binary_search(&v.route_pos).is_ok() {
                        v.dwell_s = 15 + self.rng.below(26) as u32;
                        v.speed_ms = 0.0;
                    }
                    v.route_pos = (v.route_pos + 1) % line.route.len();
                    Some(line.route[v.route_pos])
                }
                None => {
                    let here = net.edges[v.edge];
                    let options: Vec<(usize, f64)> = net.out[here.to]
                        .iter()
                        .filter(|&&e| net.edges[e].to != here.from || net.out[here.to].len() == 1)
                        .filter(|&&e| !self.flooded[net.edges[e].segment])
                        .map(|&e| {
                            let w = match net.segments[net.edges[e].segment].class {
                                RoadClass::Expressway | RoadClass::Arterial => 3.0,
                                RoadClass::Secondary => 2.0,
                                RoadClass::Local => 1.0,
                            };
                            (e, w)
                        })
                        .collect();
                    let total: f64 = options.iter().map(|o| o.1).sum();
                    let mut r = self.rng.f64() * total;
                    options
                        .iter()
                        .find(|o| {
                            r -= o.1;
                            r <= 0.0
                        })
                        .or(options.last())
                        .map(|o| o.0)
                }
            };
            match next {
                Some(e) => {
                    let v = &mut self.vehicles[i];
                    let new = net.edges[e].segment;
                    v.edge = e;
                    v.offset_m = rest.min(net.segments[new].length_m);
                    self.entered[new] += 1;
                }
                None => {
                    // Nowhere to go (every way out flooded): wait at the end.
                    let v = &mut self.vehicles[i];
                    v.offset_m = len;
                    v.speed_ms = 0.0;
                }
            }
        }
    }

    fn report_vehicles(&mut self, at: &str, h: f64, out: &mut Vec<Value>) {
        let city = Arc::clone(&self.city);
        let net = &city.roads;
        let every = self.cfg.report_every_s.max(1);
        for (i, v) in self.vehicles.iter().enumerate() {
            let kind = city.assets.vehicles[i].kind;
            let active = self.active(v, kind, h);
            // Parked vehicles report once a minute, moving ones every few
            // seconds.
            let period = if active { every } else { 60 };
            if !(self.tick + v.phase).is_multiple_of(period) {
                continue;
            }
            let (pos, heading) = net.position(v.edge, v.offset_m);
            let seg = &net.segments[net.edges[v.edge].segment];
            let status = if active { "onRoute" } else { "parked" };
            out.push(json!({
                "id": ngsi::vehicle_id(&city.assets.vehicles[i].code),
                "type": "Vehicle",
                "location": {"type": "GeoProperty", "value": ngsi::point(pos), "observedAt": at},
                "speed": observed(round_to(v.speed_ms * 3.6, 1), Some("KMH"), at),
                "heading": observed(round_to(heading, 1), None, at),
                "serviceStatus": prop(status),
                "refRoadSegment": rel(&ngsi::segment_id(&seg.code)),
            }));
            self.stats.vehicle_reports += 1;
        }
    }

    fn report_flows(&mut self, now: i64, at: &str, out: &mut Vec<Value>) {
        const WINDOW: u64 = 300;
        let net = &self.city.roads;
        let from = ngsi::iso(now - WINDOW as i64 * 1000);
        let demand = profile::traffic(profile::local_hour(now));
        for (s, seg) in net.segments.iter().enumerate() {
            if !seg.class.is_main() || !(self.tick + s as u64).is_multiple_of(WINDOW) {
                continue;
            }
            let free = f64::from(seg.speed_kmh) / 3.6;
            let v = self.seg_speed[s];
            let lane_km = (seg.length_m / 1000.0) * f64::from(seg.lanes) * 2.0;
            let density =
                BACKGROUND_DENSITY * demand + f64::from(self.load[s]) * VEHICLE_WEIGHT / lane_km;
            // Flow = density × speed (vehicles per hour, both directions).
            let intensity = if self.flooded[s] {
                0.0
            } else {
                (density * v * 3.6 * f64::from(seg.lanes) * 2.0
                    + f64::from(self.entered[s]) * VEHICLE_WEIGHT * 12.0)
                    .round()
            };
            self.entered[s] = 0;
            out.push(json!({
                "id": id("TrafficFlowObserved", &seg.code),
                "type": "TrafficFlowObserved",
                "intensity": observed(intensity, None, at),
                "averageVehicleSpeed": observed(round_to(v * 3.6, 1), Some("KMH"), at),
                "occupancy": observed(round_to((density / JAM_DENSITY).min(1.0), 3), None, at),
                "congested": observed(v < 0.4 * free, None, at),
                "dateObserved": prop(at),
                "dateObservedFrom": prop(from.as_str()),
                "dateObservedTo": prop(at),
            }));
        }
    }

    fn report_sensors(&mut self, at: &str, h: f64, out: &mut Vec<Value>) {
        let city = Arc::clone(&self.city);
        let a = &city.assets;
        let t = self.tick;
        let (storm_rain, storm_wind, surge) = self.typhoon();
        let traffic = profile::traffic(h);
        let sun = profile::sun(h);
        let washout = 1.0 - (self.rain_mmh / 40.0).min(0.6);
        for (k, s) in a.air_stations.iter().enumerate() {
            if !(t + k as u64 * 37).is_multiple_of(600) {
                continue;
            }
            let n = 1.0 + 0.12 * self.rng.normal();
            let pm25 = (s.base * (0.6 + 0.7 * traffic) * washout * n).max(3.0);
            let no2 =
                ((15.0 + 45.0 * traffic) * washout * (1.0 + 0.1 * self.rng.normal())).max(2.0);
            let o3 = ((20.0 + 110.0 * sun) * (1.0 + 0.1 * self.rng.normal())).max(2.0);
            out.push(json!({
                "id": id("AirQualityObserved", &s.code),
                "type": "AirQualityObserved",
                "dateObserved": prop(at),
                "pm25": observed(round_to(pm25, 1), Some("GQ"), at),
                "pm10": observed(round_to(pm25 * 1.6, 1), Some("GQ"), at),
                "no2": observed(round_to(no2, 1), Some("GQ"), at),
                "o3": observed(round_to(o3, 1), Some("GQ"), at),
                "airQualityIndex": observed(aqi_pm25(pm25).max(aqi_o3(o3)), None, at),
            }));
        }
        let season = Season::at(self.now_ms());
        for (k, s) in a.weather_stations.iter().enumerate() {
            if !(t + k as u64 * 53).is_multiple_of(600) {
                continue;
            }
            let temp = season.temperature + 4.0 * ((h - 8.0) / 24.0 * std::f64::consts::TAU).sin()
                - self.rain_mmh / 15.0
                + 0.4 * self.rng.normal();
            let rain = (self.rain_mmh * (1.0 + 0.2 * self.rng.normal())).max(0.0);
            let wind = (2.5 + storm_wind + 0.8 * self.rng.normal()).max(0.0);
            let humidity = (season.humidity - 0.15 * sun + self.rain_mmh / 100.0).min(1.0);
            let pressure = 1006.0 - 35.0 * (storm_wind / 30.0) + self.rng.normal();
            out.push(json!({
                "id": id("WeatherObserved", &s.code),
                "type": "WeatherObserved",
                "dateObserved": prop(at),
                "temperature": observed(round_to(temp, 1), Some("CEL"), at),
                "relativeHumidity": observed(round_to(humidity, 2), None, at),
                "precipitation": observed(round_to(rain, 1), Some("MMT"), at),
                "windSpeed": observed(round_to(wind, 1), Some("MTS"), at),
                "windDirection": observed(if storm_rain > 0.0 { 90 } else { 135 }, Some("DD"), at),
                "atmosphericPressure": observed(round_to(pressure, 1), Some("A97"), at),
            }));
        }
        let now = self.now_ms();
        for (k, g) in a.gauges.iter().enumerate() {
            if !(t + k as u64 * 11).is_multiple_of(300) {
                continue;
            }
            // Semidiurnal tide (M2, 12.42 h), delayed upstream; storm surge
            // and run-off on top in the drill.
            let ch = &CHANNELS[g.area];
            let phase = g.pos.x / 20_000.0;
            let tide =
                0.75 * ((now as f64 / 3_600_000.0 / 12.42 + phase) * std::f64::consts::TAU).sin();
            let runoff = self.rain_3h / 120.0;
            let height = (g.base
                + tide
                + surge * if ch.slug == "liuxi" { 0.5 } else { 1.0 }
                + runoff
                + 0.02 * self.rng.normal())
            .max(0.05);
            out.push(json!({
                "id": id("WaterObserved", &g.code),
                "type": "WaterObserved",
                "dateObserved": prop(at),
                "height": observed(round_to(height, 2), Some("MTR"), at),
                "flow": observed(round_to(2000.0 + 1500.0 * tide.abs() + 800.0 * runoff, 0), Some("MQS"), at),
            }));
            let warning = g.base + 1.6;
            if height > warning && self.gauge_alerted[k].is_none() {
                let alert = self.alert(
                    "weather",
                    "flood",
                    "high",
                    (
                        &format!("{}超警戒水位", g.name_zh),
                        &format!("{} above warning level", g.name_en),
                    ),
                    g.pos,
                    at,
                );
                self.gauge_alerted[k] = alert["id"].as_str().map(str::to_string);
                out.push(alert);
            } else if height < warning - 0.3 {
                // The water is back below warning level: the alert ends.
                if let Some(alert_id) = self.gauge_alerted[k].take() {
                    out.push(json!({"id": alert_id, "type": "Alert", "validTo": prop(at)}));
                }
            }
        }
        for (k, p) in a.parkings.iter().enumerate() {
            if !(t + k as u64 * 7).is_multiple_of(300) {
                continue;
            }
            let occ = (profile::parking(p.usage, h) + 0.05 * self.rng.normal()).clamp(0.0, 1.0);
            let free = (f64::from(p.total) * (1.0 - occ)).round() as u32;
            out.push(json!({
                "id": id("OffStreetParking", &p.code),
                "type": "OffStreetParking",
                "availableSpotNumber": observed(free, None, at),
            }));
        }
        // Streetlights switch at dusk and dawn, each a few minutes apart, and
        // earlier under storm clouds.
        let dark_now = profile::dark(h) || storm_rain > 20.0;
        for (k, l) in a.streetlights.iter().enumerate() {
            let lag = self.light_lag[k];
            let want = profile::dark(h - lag) && dark_now || storm_rain > 20.0;
            if want != self.lights_on[k] {
                self.lights_on[k] = want;
                out.push(json!({
                    "id": id("Streetlight", &l.code),
                    "type": "Streetlight",
                    "powerState": observed(if want { "on" } else { "off" }, None, at),
                }));
            }
        }
        for (k, b) in a.bins.iter().enumerate() {
            // About 4 % of capacity an hour in the day, emptied on the early
            // round (05:00–07:00) at a time of its own.
            let round = 5.0 + (fnv1a(b.code.as_bytes()) % 7200) as f64 / 3600.0;
            if (h - round).abs() < 0.5 / 3600.0 {
                self.bin_fill[k] = 0.03;
            } else {
                self.bin_fill[k] = (self.bin_fill[k] + (0.01 + 0.05 * traffic) / 3600.0).min(1.0);
            }
            if (t + k as u64 * 13).is_multiple_of(1800) {
                out.push(json!({
                    "id": id("WasteContainer", &b.code),
                    "type": "WasteContainer",
                    "fillingLevel": observed(round_to(self.bin_fill[k], 2), None, at),
                }));
            }
        }
    }

    /// A new Alert entity (SDM Alert), closed later by the caller's
    /// schedule if it has one.
    fn alert(
        &mut self,
        category: &str,
        sub: &str,
        severity: &str,
        (zh, en): (&str, &str),
        pos: Xy,
        at: &str,
    ) -> Value {
        self.seq += 1;
        json!({
            "id": id("Alert", &format!("{}-{:08}", sub, self.seq)),
            "type": "Alert",
            "category": prop(category),
            "subCategory": prop(sub),
            "severity": prop(severity),
            "name": lang(zh, en),
            "description": prop(en),
            "alertSource": prop("urn:ngsi-ld:Simulator:wuyang"),
            "dateIssued": prop(at),
            "validFrom": prop(at),
            "location": ngsi::geo_prop(ngsi::point(pos)),
        })
    }

    fn schedule_close(&mut self, at_ms: i64, id: String) {
        self.seq += 1;
        self.closing.insert((at_ms, self.seq), id);
    }

    fn close_alerts(&mut self, now: i64, at: &str, out: &mut Vec<Value>) {
        while let Some(entry) = self.closing.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            out.push(json!({
                "id": id,
                "type": "Alert",
                "validTo": prop(at),
                "caseStatus": prop("closed"),
            }));
        }
    }
}

/// China's IAQI for PM2.5 (HJ 633-2012, 24-hour breakpoints).
fn aqi_pm25(c: f64) -> u32 {
    iaqi(c, &[0.0, 35.0, 75.0, 115.0, 150.0, 250.0, 350.0, 500.0])
}

/// China's IAQI for O3 (1-hour breakpoints).
fn aqi_o3(c: f64) -> u32 {
    iaqi(c, &[0.0, 160.0, 200.0, 300.0, 400.0, 800.0, 1000.0, 1200.0])
}

fn iaqi(c: f64, bp: &[f64; 8]) -> u32 {
    const I: [f64; 8] = [0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0];
    for k in 1..8 {
        if c <= bp[k] {
            return (I[k - 1] + (I[k] - I[k - 1]) * (c - bp[k - 1]) / (bp[k] - bp[k - 1])).round()
                as u32;
        }
    }
    500
}

/// A stable digest of a sequence of update batches (FNV-1a of their JSON),
/// for determinism checks.
pub fn digest(batches: &[Vec<Value>]) -> u64 {
    let mut h = 0u64;
    for b in batches {
        for v in b {
            h = fnv1a(&[h.to_le_bytes().as_slice(), v.to_string().as_bytes()].concat());
        }
    }
    h
}

/// Guangzhou's seasonal climate: the daily mean temperature runs from
/// about 14 °C in mid-January to about 29 °C in late July (1991–2020
/// normals), and the air is driest in winter.
struct Season {
    /// Daily mean temperature, °C.
    temperature: f64,
    /// Relative humidity at sunrise (0–1), before the day dries it.
    humidity: f64,
}

impl Season {
    fn at(epoch_ms: i64) -> Self {
        const YEAR_DAYS: f64 = 365.2425;
        // Days since January 1st (1970 began a year; the remainder drifts
        // by less than a day over centuries).
        let day = (epoch_ms as f64 / 86_400_000.0).rem_euclid(YEAR_DAYS);
        // 1 in mid-January, -1 in mid-July.
        let winter = ((day - 15.0) / YEAR_DAYS * std::f64::consts::TAU).cos();
        Self {
            temperature: 21.4 - 7.5 * winter,
            humidity: 0.76 - 0.06 * winter,
        }
    }
}

#[cfg(test)]
mod season_tests {
    use super::Season;

    #[test]
    fn winter_is_cool_and_summer_hot() {
        // 2026-01-15, 2026-07-16 and 2026-11-28 at 00:00 UTC.
        let january = Season::at(1_768_435_200_000);
        let july = Season::at(1_784_160_000_000);
        let november = Season::at(1_795_824_000_000);
        assert!(
            (13.5..14.5).contains(&january.temperature),
            "{}",
            january.temperature
        );
        assert!(
            (28.5..29.5).contains(&july.temperature),
            "{}",
            july.temperature
        );
        assert!(
            (16.0..20.0).contains(&november.temperature),
            "{}",
            november.temperature
        );
        assert!(january.humidity < july.humidity);
    }
}
