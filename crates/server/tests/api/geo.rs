//! Geo-queries: every georel, a non-default geoproperty, and the errors.

use serde_json::{Value, json};

use crate::support::{Server, enc, ids_of, sorted};

const PARK: &str = "[[[2.3,48.8],[2.4,48.8],[2.4,48.9],[2.3,48.9],[2.3,48.8]]]";
const AROUND_PARIS: &str = "[[[2,48.5],[3,48.5],[3,49.2],[2,49.2],[2,48.5]]]";

fn place(id: &str, geometry: Value) -> Value {
    json!({"id": id, "type": "Place", "location": {"type": "GeoProperty", "value": geometry}})
}

async fn places() -> Server {
    let s = Server::start().await;
    s.create(place(
        "urn:g:paris",
        json!({"type": "Point", "coordinates": [2.35, 48.85]}),
    ))
    .await;
    s.create(place(
        "urn:g:lyon",
        json!({"type": "Point", "coordinates": [4.83, 45.76]}),
    ))
    .await;
    let park: Value = serde_json::from_str(PARK).unwrap();
    s.create(place(
        "urn:g:park",
        json!({"type": "Polygon", "coordinates": park}),
    ))
    .await;
    s.create(place(
        "urn:g:road",
        json!({"type": "LineString", "coordinates": [[2.0, 48.0], [5.0, 46.0]]}),
    ))
    .await;
    let mut far = place(
        "urn:g:far",
        json!({"type": "Point", "coordinates": [100.0, 10.0]}),
    );
    far["area"] =
        json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}});
    s.create(far).await;
    s
}

fn geo(georel: &str, geometry: &str, coordinates: &str) -> String {
    format!(
        "type=Place&georel={}&geometry={geometry}&coordinates={}",
        enc(georel),
        enc(coordinates)
    )
}

#[tokio::test]
async fn every_georel() {
    let s = places().await;
    let cases: Vec<(String, &[&str])> = vec![
        (
            geo("near;maxDistance==1000", "Point", "[2.35,48.85]"),
            &["urn:g:paris", "urn:g:park"],
        ),
        (
            geo("near;minDistance==200000", "Point", "[2.35,48.85]"),
            &["urn:g:far", "urn:g:lyon"],
        ),
        (
            geo("within", "Polygon", AROUND_PARIS),
            &["urn:g:paris", "urn:g:park"],
        ),
        (geo("contains", "Point", "[2.32,48.82]"), &["urn:g:park"]),
        (
            geo("intersects", "LineString", "[[2.25,48.83],[2.45,48.83]]"),
            &["urn:g:park"],
        ),
        (geo("equals", "Point", "[4.83,45.76]"), &["urn:g:lyon"]),
        (
            geo("disjoint", "Polygon", AROUND_PARIS),
            &["urn:g:far", "urn:g:lyon", "urn:g:road"],
        ),
        (
            geo(
                "overlaps",
                "Polygon",
                "[[[2.35,48.85],[2.5,48.85],[2.5,49],[2.35,49],[2.35,48.85]]]",
            ),
            &["urn:g:park"],
        ),
        (
            format!(
                "{}&geoproperty=area",
                geo("near;maxDistance==10", "Point", "[2.35,48.85]")
            ),
            &["urn:g:far"],
        ),
        (
            format!("{}&q=nothing", geo("within", "Polygon", AROUND_PARIS)),
            &[],
        ),
    ];
    for (query, expected) in &cases {
        assert_eq!(sorted(s.ids(query).await), *expected, "{query}");
    }
}

#[tokio::test]
async fn geo_query_in_a_post_query() {
    let s = places().await;
    let body = json!({"type": "Query", "entities": [{"type": "Place"}],
                      "geoQ": {"georel": "near;maxDistance==1000", "geometry": "Point", "coordinates": [4.83, 45.76]}});
    let r = s.post("/entityOperations/query", &body).await;
    assert_eq!(sorted(ids_of(&r.body)), ["urn:g:lyon"], "{}", r.text);
    let body = json!({"type": "Query", "geoQ": {"georel": "near;maxDistance==10", "geometry": "Point",
                      "coordinates": [2.35, 48.85], "geoproperty": "area"}});
    let r = s.post("/entityOperations/query", &body).await;
    assert_eq!(ids_of(&r.body), ["urn:g:far"], "{}", r.text);
}

#[tokio::test]
async fn invalid_geo_queries() {
    let s = places().await;
    for query in [
        "type=Place&georel=near%3BmaxDistance%3D%3D10".to_string(),
        "type=Place&geometry=Point&coordinates=%5B1,2%5D".to_string(),
        geo("close", "Point", "[1,2]"),
        geo("near", "Point", "[1,2]"),
        geo("near;maxDistance==-1", "Point", "[1,2]"),
        // A PositiveNumber excludes 0 (clause 4.10, ETSI 019_30_01).
        geo("near;maxDistance==0", "Point", "[1,2]"),
        geo("within", "Circle", "[1,2]"),
        geo("within", "Point", "[1]"),
        geo("within", "Polygon", "[[[0,0],[1,0],[1,1]]]"),
        geo("within", "Point", "not json"),
    ] {
        s.get(&format!("/entities?{query}"))
            .await
            .problem(400, "BadRequestData");
    }
}
