//! The model as NGSI-LD entities (normalized form, `serde_json::Value`).
//!
//! Types and attribute names follow the FIWARE Smart Data Models where one
//! fits (Vehicle, RoadSegment, Road, TrafficFlowObserved, OffStreetParking,
//! AirQualityObserved, WeatherObserved, WaterObserved, Streetlight,
//! WasteContainer, PointOfInterest, Device, GtfsRoute, GtfsStop, Alert). The
//! administrative areas have no Smart Data Model: they are `District`,
//! `Township` (街道/镇), `Community` and `UnitGrid`. Names are
//! LanguageProperties with `zh` and `en`. Ids are
//! `urn:ngsi-ld:<Type>:<code>`. The documents carry no `@context`: sent as
//! `application/json` without a Link header, they expand with the core
//! context, as the Smart Data Models' own examples do.

use geo::{MultiPolygon, Polygon};
use serde_json::{Map, Value, json};

use crate::City;
use crate::admin::StreetKind;
use crate::assets::{ParkingUse, VehicleKind};
use crate::geom::{Xy, round_to, round6};

/// `urn:ngsi-ld:<type>:<code>`.
pub fn id(kind: &str, code: &str) -> String {
    format!("urn:ngsi-ld:{kind}:{code}")
}

/// A Property.
pub fn prop(value: impl Into<Value>) -> Value {
    json!({"type": "Property", "value": value.into()})
}

/// A Property with a UN/CEFACT unit code.
pub fn prop_unit(value: impl Into<Value>, unit: &str) -> Value {
    json!({"type": "Property", "value": value.into(), "unitCode": unit})
}

/// A Property with an observation time (and an optional unit code).
pub fn observed(value: impl Into<Value>, unit: Option<&str>, at: &str) -> Value {
    let mut v = json!({"type": "Property", "value": value.into(), "observedAt": at});
    if let Some(u) = unit {
        v["unitCode"] = json!(u);
    }
    v
}

/// A Relationship.
pub fn rel(object: &str) -> Value {
    json!({"type": "Relationship", "object": object})
}

/// A GeoProperty.
pub fn geo_prop(geometry: Value) -> Value {
    json!({"type": "GeoProperty", "value": geometry})
}

/// A LanguageProperty with Chinese and English.
pub fn lang(zh: &str, en: &str) -> Value {
    json!({"type": "LanguageProperty", "languageMap": {"zh": zh, "en": en}})
}

/// A GeoJSON Point.
pub fn point(p: Xy) -> Value {
    json!({"type": "Point", "coordinates": p.lonlat()})
}

/// A GeoJSON LineString.
pub fn line(points: &[Xy]) -> Value {
    let coords: Vec<[f64; 2]> = points.iter().map(|p| p.lonlat()).collect();
    json!({"type": "LineString", "coordinates": coords})
}

fn ring(ls: &geo::LineString<f64>) -> Vec<[f64; 2]> {
    ls.0.iter().map(|c| [round6(c.x), round6(c.y)]).collect()
}

fn polygon_coords(p: &Polygon<f64>) -> Vec<Vec<[f64; 2]>> {
    std::iter::once(p.exterior())
        .chain(p.interiors())
        .map(ring)
        .collect()
}

/// A GeoJSON (Multi)Polygon; a single polygon is written as a Polygon.
pub fn multipolygon(mp: &MultiPolygon<f64>) -> Value {
    if mp.0.len() == 1 {
        json!({"type": "Polygon", "coordinates": polygon_coords(&mp.0[0])})
    } else {
        let polys: Vec<_> = mp.0.iter().map(polygon_coords).collect();
        json!({"type": "MultiPolygon", "coordinates": polys})
    }
}

/// ISO 8601 UTC timestamp of a Unix time in milliseconds.
pub fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses an RFC 3339 timestamp (`2026-07-01T08:00:00+08:00`,
/// `2026-07-01T00:00Z`; seconds optional, fractions ignored) to Unix ms.
pub fn parse_iso(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if s.get(4..5)? != "-" || s.get(7..8)? != "-" || !matches!(s.get(10..11)?, "T" | "t" | " ") {
        return None;
    }
    let (hh, mm) = (num(11..13)?, num(14..16)?);
    let mut rest = s.get(16..)?;
    let mut ss = 0;
    if let Some(r) = rest.strip_prefix(':') {
        ss = num(17..19)?;
        rest = r.get(2..)?;
        if let Some(r) = rest.strip_prefix('.') {
            rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
        }
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.get(3..4)? != ":" {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) - offset_min * 60) * 1000)
}

fn entity(kind: &str, code: &str, attrs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(id(kind, code)));
    m.insert("type".into(), json!(kind));
    for (k, v) in attrs {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// The id of a vehicle.
pub fn vehicle_id(code: &str) -> String {
    id("Vehicle", code)
}

/// The id of a road segment.
pub fn segment_id(code: &str) -> String {
    id("RoadSegment", code)
}

/// Every entity of the city; observations are stamped `at_ms`.
pub fn entities(city: &City, at_ms: i64) -> Vec<Value> {
    let at = iso(at_ms);
    let admin = &city.admin;
    let mut out = Vec::new();

    for d in &admin.districts {
        out.push(entity(
            "District",
            &d.code,
            vec![
                ("name", lang(&d.name_zh, &d.name_en)),
                ("code", prop(d.code.as_str())),
                ("population", prop(d.population)),
                ("area", prop_unit(d.area_km2, "KMK")),
                ("location", geo_prop(multipolygon(&d.boundary))),
            ],
        ));
    }
    for s in &admin.streets {
        let d = &admin.districts[s.district];
        let (kind_en, category) = match s.kind {
            StreetKind::Subdistrict => ("Subdistrict", "subdistrict"),
            StreetKind::Town => ("Town", "town"),
            StreetKind::SpecialArea => ("Special area", "specialArea"),
        };
        out.push(entity(
            "Township",
            &s.code,
            vec![
                (
                    "name",
                    lang(
                        &s.name_zh,
                        &format!("{kind_en} {} of {}", &s.code[6..], d.name_en),
                    ),
                ),
                ("code", prop(s.code.as_str())),
                ("category", prop(category)),
                ("area", prop_unit(round_to(s.area_km2, 3), "KMK")),
                ("areaDerivation", prop("voronoi")),
                ("location", geo_prop(multipolygon(&s.area))),
                ("refDistrict", rel(&id("District", &d.code))),
            ],
        ));
    }
    // Community location: the centroid of its grids, when it has any.
    let mut acc = vec![(0.0, 0.0, 0usize); admin.communities.len()];
    for g in &city.grids {
        let c = g.centre();
        acc[g.community].0 += c.x;
        acc[g.community].1 += c.y;
        acc[g.community].2 += 1;
    }
    for (ci, c) in admin.communities.iter().enumerate() {
        let s = &admin.streets[c.street];
        let mut attrs = vec![
            (
                "name",
                lang(
                    &c.name_zh,
                    &format!(
                        "Community {} of street {}, {}",
                        &c.code[9..],
                        &s.code[6..],
                        admin.districts[s.district].name_en
                    ),
                ),
            ),
            ("code", prop(c.code.as_str())),
            ("category", prop(c.kind.as_str())),
            ("refTownship", rel(&id("Township", &s.code))),
            (
                "refDistrict",
                rel(&id("District", &admin.districts[s.district].code)),
            ),
        ];
        let (x, y, n) = acc[ci];
        if n > 0 {
            let p = Xy {
                x: x / n as f64,
                y: y / n as f64,
            };
            attrs.push(("location", geo_prop(point(p))));
        }
        out.push(entity("Community", &c.code, attrs));
    }
    for g in &city.grids {
        let s = &admin.streets[g.street];
        out.push(entity(
            "UnitGrid",
            &g.code,
            vec![
                ("code", prop(g.code.as_str())),
                ("area", prop_unit(10_000, "MTK")),
                (
                    "location",
                    geo_prop(json!({"type": "Polygon", "coordinates": [g.ring_lonlat()]})),
                ),
                (
                    "refCommunity",
                    rel(&id("Community", &admin.communities[g.community].code)),
                ),
                ("refTownship", rel(&id("Township", &s.code))),
                (
                    "refDistrict",
                    rel(&id("District", &admin.districts[g.district].code)),
                ),
            ],
        ));
    }

    let roads = &city.roads;
    for r in crate::roads_data::MAJOR_ROADS {
        out.push(entity(
            "Road",
            r.slug,
            vec![
                ("name", lang(r.name_zh, r.name_en)),
                ("roadClass", prop(r.class.sdm())),
                ("functionalClass", prop(r.class.as_str())),
            ],
        ));
    }
    for (s, seg) in roads.segments.iter().enumerate() {
        let [a, b] = roads.segment_line(s);
        let mut attrs = vec![
            ("name", lang(&seg.name_zh, &seg.name_en)),
            ("roadClass", prop(seg.class.sdm())),
            ("functionalClass", prop(seg.class.as_str())),
            ("totalLaneNumber", prop(seg.lanes * 2)),
            ("laneUsage", prop(json!(["forward", "backward"]))),
            ("maximumAllowedSpeed", prop_unit(seg.speed_kmh, "KMH")),
            ("length", prop_unit(round_to(seg.length_m, 1), "MTR")),
            ("startPoint", geo_prop(point(a))),
            ("endPoint", geo_prop(point(b))),
            ("location", geo_prop(line(&[a, b]))),
        ];
        if let Some(r) = seg.road {
            attrs.push(("refRoad", rel(&id("Road", r))));
        }
        out.push(entity("RoadSegment", &seg.code, attrs));
        if seg.class.is_main() {
            out.push(entity(
                "TrafficFlowObserved",
                &seg.code,
                vec![
                    ("refRoadSegment", rel(&segment_id(&seg.code))),
                    ("location", geo_prop(line(&[a, b]))),
                    ("intensity", observed(0, None, &at)),
                    (
                        "averageVehicleSpeed",
                        observed(seg.speed_kmh, Some("KMH"), &at),
                    ),
                    ("occupancy", observed(0.0, None, &at)),
                    ("congested", observed(false, None, &at)),
                    ("dateObserved", prop(at.as_str())),
                ],
            ));
        }
    }

    let a = &city.assets;
    for p in &a.pois {
        let mut attrs = vec![
            ("name", lang(&p.name_zh, &p.name_en)),
            ("category", prop(json!([p.kind.category()]))),
            ("location", geo_prop(point(p.pos))),
        ];
        if let Some(c) = p.capacity {
            attrs.push(("capacity", prop(c)));
        }
        out.push(entity("PointOfInterest", &p.code, attrs));
    }
    for p in &a.parkings {
        let usage = match p.usage {
            ParkingUse::Commercial => "commercial",
            ParkingUse::Office => "office",
            ParkingUse::Residential => "residential",
        };
        out.push(entity(
            "OffStreetParking",
            &p.code,
            vec![
                ("name", lang(&p.name_zh, &p.name_en)),
                ("category", prop(json!(["public", usage]))),
                ("allowedVehicleType", prop(json!(["car"]))),
                ("totalSpotNumber", prop(p.total)),
                ("availableSpotNumber", observed(p.total, None, &at)),
                ("status", prop(json!(["open"]))),
                ("location", geo_prop(point(p.pos))),
            ],
        ));
    }
    for s in &a.air_stations {
        out.push(entity(
            "AirQualityObserved",
            &s.code,
            vec![
                ("name", lang(&s.name_zh, &s.name_en)),
                ("location", geo_prop(point(s.pos))),
                ("dateObserved", prop(at.as_str())),
                ("pm25", observed(s.base, Some("GQ"), &at)),
                ("pm10", observed(round_to(s.base * 1.6, 1), Some("GQ"), &at)),
                ("no2", observed(35.0, Some("GQ"), &at)),
                ("o3", observed(60.0, Some("GQ"), &at)),
                ("so2", observed(7.0, Some("GQ"), &at)),
                ("co", observed(0.8, Some("GP"), &at)),
                ("airQualityIndex", observed(50, None, &at)),
            ],
        ));
    }
    for s in &a.weather_stations {
        out.push(entity(
            "WeatherObserved",
            &s.code,
            vec![
                ("name", lang(&s.name_zh, &s.name_en)),
                ("location", geo_prop(point(s.pos))),
                ("dateObserved", prop(at.as_str())),
                ("temperature", observed(28.0, Some("CEL"), &at)),
                ("relativeHumidity", observed(0.75, None, &at)),
                ("precipitation", observed(0.0, Some("MMT"), &at)),
                ("windSpeed", observed(2.0, Some("MTS"), &at)),
                ("windDirection", observed(135, Some("DD"), &at)),
                ("atmosphericPressure", observed(1008.0, Some("A97"), &at)),
            ],
        ));
    }
    for g in &a.gauges {
        out.push(entity(
            "WaterObserved",
            &g.code,
            vec![
                ("name", lang(&g.name_zh, &g.name_en)),
                ("location", geo_prop(point(g.pos))),
                ("dateObserved", prop(at.as_str())),
                ("height", observed(g.base, Some("MTR"), &at)),
                ("flow", observed(2000.0, Some("MQS"), &at)),
            ],
        ));
    }
    for c in &a.cameras {
        let seg = &roads.segments[c.segment];
        out.push(entity(
            "Device",
            &c.code,
            vec![
                (
                    "name",
                    lang(
                        &format!("{}监控摄像机", seg.name_zh),
                        &format!("Traffic camera, {}", seg.name_en),
                    ),
                ),
                ("category", prop(json!(["sensor"]))),
                ("controlledProperty", prop(json!(["trafficFlow"]))),
                ("deviceState", prop("ok")),
                ("controlledAsset", rel(&segment_id(&seg.code))),
                ("location", geo_prop(point(c.pos))),
            ],
        ));
    }
    for l in &a.streetlights {
        out.push(entity(
            "Streetlight",
            &l.code,
            vec![
                ("location", geo_prop(point(l.pos))),
                ("status", prop("ok")),
                ("powerState", observed("off", None, &at)),
                ("lanternHeight", prop_unit(10, "MTR")),
                (
                    "refRoadSegment",
                    rel(&segment_id(&roads.segments[l.segment].code)),
                ),
            ],
        ));
    }
    for b in &a.bins {
        out.push(entity(
            "WasteContainer",
            &b.code,
            vec![
                ("location", geo_prop(point(b.pos))),
                ("fillingLevel", observed(0.2, None, &at)),
                ("status", prop("ok")),
                (
                    "refUnitGrid",
                    rel(&id("UnitGrid", &city.grids[b.grid].code)),
                ),
            ],
        ));
    }
    for l in &a.bus_lines {
        out.push(entity(
            "GtfsRoute",
            &l.code,
            vec![
                (
                    "name",
                    lang(
                        &format!("{}路", l.number),
                        &format!("Bus line {}", l.number),
                    ),
                ),
                ("shortName", prop(l.number.to_string())),
                ("routeType", prop("3")),
            ],
        ));
    }
    for l in &a.bus_lines {
        let route_id = id("GtfsRoute", &l.code);
        for (k, &pos) in l.stops.iter().enumerate() {
            let node = roads.edges[l.route[pos]].to;
            out.push(entity(
                "GtfsStop",
                &format!("{}-{:02}", l.code, k + 1),
                vec![
                    (
                        "name",
                        lang(
                            &format!("{}路第{}站", l.number, k + 1),
                            &format!("Bus line {} stop {}", l.number, k + 1),
                        ),
                    ),
                    ("code", prop(format!("{}-{:02}", l.number, k + 1))),
                    ("location", geo_prop(point(roads.nodes[node].pos))),
                    ("refRoute", rel(&route_id)),
                ],
            ));
        }
    }
    for v in &a.vehicles {
        let (pos, heading) = roads.position(v.edge, v.offset_m);
        let seg = &roads.segments[roads.edges[v.edge].segment];
        let (vtype, zh, en) = match v.kind {
            VehicleKind::Taxi => ("car", "出租车", "Taxi"),
            VehicleKind::Bus => ("bus", "公交车", "Bus"),
        };
        let mut attrs = vec![
            (
                "name",
                lang(&format!("{zh} {}", v.plate), &format!("{en} {}", v.plate)),
            ),
            ("vehicleType", prop(vtype)),
            ("category", prop(json!(["public", "tracked"]))),
            ("vehiclePlateIdentifier", prop(v.plate.as_str())),
            (
                "location",
                json!({"type": "GeoProperty", "value": point(pos), "observedAt": at}),
            ),
            ("speed", observed(0.0, Some("KMH"), &at)),
            ("heading", observed(round_to(heading, 1), None, &at)),
            ("serviceStatus", prop("onRoute")),
            ("refRoadSegment", rel(&segment_id(&seg.code))),
        ];
        if let Some(l) = v.line {
            attrs.push(("refRoute", rel(&id("GtfsRoute", &a.bus_lines[l].code))));
        }
        out.push(entity("Vehicle", &v.code, attrs));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_782_864_000_000;
        assert_eq!(iso(ms), "2026-07-01T00:00:00Z");
        assert_eq!(parse_iso("2026-07-01T00:00:00Z"), Some(ms));
        assert_eq!(parse_iso("2026-07-01T08:00+08:00"), Some(ms));
        assert_eq!(parse_iso("2026-07-01T08:00:00.250+08:00"), Some(ms));
        assert_eq!(
            parse_iso("2024-02-29T12:34:56Z").map(iso).as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        for bad in [
            "",
            "2026-07-01",
            "2026-13-01T00:00Z",
            "2026-07-01T00:00",
            "2026-07-01T00:00+8",
            "x026-07-01T00:00Z",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
