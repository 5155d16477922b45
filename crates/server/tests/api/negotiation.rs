//! Content negotiation: Accept (406), Content-Type (415), where the @context
//! goes in JSON, JSON-LD and GeoJSON responses.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{CORE, Server, link, vehicle};

const ID: &str = "urn:ngsi-ld:Vehicle:N1";

#[tokio::test]
async fn accept_chooses_the_response_media_type() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    let cases: [(Option<&str>, u16, Option<&str>); 14] = [
        (None, 200, Some("application/json")),
        (Some("*/*"), 200, Some("application/json")),
        (Some("application/*"), 200, Some("application/json")),
        (Some("application/json"), 200, Some("application/json")),
        (
            Some("application/ld+json"),
            200,
            Some("application/ld+json"),
        ),
        (
            Some("application/geo+json"),
            200,
            Some("application/geo+json"),
        ),
        (
            Some("application/ld+json, application/json"),
            200,
            Some("application/json"),
        ),
        (
            Some("application/geo+json, application/json"),
            200,
            Some("application/json"),
        ),
        (
            Some("application/json;q=0.1, application/ld+json;q=0.9"),
            200,
            Some("application/ld+json"),
        ),
        (
            Some("application/json;q=0, */*"),
            200,
            Some("application/ld+json"),
        ),
        (
            Some("application/json;q=abc"),
            200,
            Some("application/json"),
        ),
        (
            Some("text/html, application/ld+json;q=0.5"),
            200,
            Some("application/ld+json"),
        ),
        (Some("application/xml"), 406, None),
        (Some("text/plain"), 406, None),
    ];
    for (accept, status, ct) in cases {
        let mut req = s.req(Method::GET, &format!("/entities/{ID}"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await;
        assert_eq!(r.status, status, "Accept {accept:?}: {}", r.text);
        if let Some(ct) = ct {
            assert_eq!(r.header("content-type"), Some(ct), "Accept {accept:?}");
        }
        // A 406 lists the available representations (clause 6.3.4).
        if status == 406 {
            let detail = r.body["detail"].as_str().unwrap_or_default();
            for mime in [
                "application/json",
                "application/ld+json",
                "application/geo+json",
            ] {
                assert!(detail.contains(mime), "{detail}");
            }
        }
    }
    // geo+json is only offered for entity retrieval and query.
    let r = s
        .req(Method::GET, "/types")
        .header("accept", "application/geo+json")
        .send()
        .await;
    assert_eq!(r.status, 406);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    let available = detail.split_once("available: ").map(|(_, a)| a);
    assert_eq!(
        available,
        Some("application/json, application/ld+json"),
        "{detail}"
    );
    let r = s
        .req(Method::GET, "/types")
        .header("accept", "application/geo+json, application/json")
        .send()
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn json_responses_carry_the_context_in_a_link_header() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    for path in [
        format!("/entities/{ID}"),
        "/entities?type=Vehicle".to_string(),
        "/types".into(),
        "/attributes".into(),
    ] {
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(r.header("link"), Some(link(CORE).as_str()), "{path}");
        assert!(!r.text.contains("@context"), "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn ld_json_responses_carry_the_context_in_the_body() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    s.create(vehicle("urn:ngsi-ld:Vehicle:second", 2)).await;
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header("accept", "application/ld+json")
        .send()
        .await;
    assert_eq!(r.body["@context"], CORE);
    assert_eq!(r.body["speed"]["value"], 1);
    let r = s
        .req(Method::GET, "/entities?type=Vehicle")
        .header("accept", "application/ld+json")
        .send()
        .await;
    // Every entity of the array carries it, after its own members.
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.text);
    for item in r.body.as_array().unwrap() {
        assert_eq!(item["@context"], CORE, "{}", r.text);
        assert_eq!(item["type"], "Vehicle", "{}", r.text);
    }
    // An inline context comes back as it was given.
    let ctx = json!({"Truck": "https://t.example/Truck"});
    let r = s
        .req(Method::POST, "/entityOperations/query")
        .header("accept", "application/ld+json")
        .ld(&json!({"type": "Query", "entities": [{"type": "Vehicle"}], "@context": ctx}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body[0]["@context"], ctx, "{}", r.text);
}

#[tokio::test]
async fn geo_json_gives_features() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    s.create(json!({"id": "urn:n:2", "type": "Vehicle", "speed": 2,
                    "area": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 1]}}}))
        .await;
    let r = s
        .req(Method::GET, &format!("/entities/{ID}"))
        .header("accept", "application/geo+json")
        .send()
        .await;
    assert_eq!(r.header("content-type"), Some("application/geo+json"));
    assert_eq!(r.body["type"], "Feature");
    assert_eq!(r.body["id"], ID);
    assert_eq!(
        r.body["geometry"],
        json!({"type": "Point", "coordinates": [113.26, 23.13]})
    );
    assert_eq!(r.body["properties"]["type"], "Vehicle");
    assert_eq!(
        r.body["properties"]["speed"],
        json!({"type": "Property", "value": 1})
    );
    assert!(r.body["properties"]["location"].is_object());
    assert_eq!(r.body["@context"], CORE);
    let r = s
        .req(
            Method::GET,
            "/entities?type=Vehicle&geometryProperty=area&options=keyValues",
        )
        .header("accept", "application/geo+json")
        .send()
        .await;
    assert_eq!(r.body["type"], "FeatureCollection", "{}", r.text);
    let features = r.body["features"].as_array().unwrap();
    assert_eq!(features.len(), 2);
    let f2 = features.iter().find(|f| f["id"] == "urn:n:2").unwrap();
    assert_eq!(
        f2["geometry"],
        json!({"type": "Point", "coordinates": [1, 1]})
    );
    assert_eq!(f2["properties"]["speed"], 2);
    let f1 = features.iter().find(|f| f["id"] == ID).unwrap();
    assert_eq!(f1["geometry"], serde_json::Value::Null);
}

#[tokio::test]
async fn content_type_of_request_bodies() {
    let s = Server::start().await;
    let cases = [
        ("application/json", 201),
        ("application/json; charset=utf-8", 201),
        ("text/plain", 415),
        ("application/xml", 415),
        ("application/merge-patch+json", 415),
    ];
    for (i, (ct, status)) in cases.into_iter().enumerate() {
        let body = json!({"id": format!("urn:n:{i}"), "type": "T"}).to_string();
        let r = s.req(Method::POST, "/entities").body(ct, body).send().await;
        assert_eq!(r.status, status, "{ct}: {}", r.text);
    }
    let r = s
        .req(Method::POST, "/entities")
        .header("content-length", "2")
        .send()
        .await;
    assert_eq!(r.status, 415, "no Content-Type: {}", r.text);
    s.create(vehicle(ID, 1)).await;
    for (method, path) in [
        (Method::PATCH, format!("/entities/{ID}/attrs")),
        (Method::POST, format!("/entities/{ID}/attrs")),
        (Method::PUT, format!("/entities/{ID}/attrs/speed")),
        (Method::PUT, format!("/entities/{ID}")),
        (Method::POST, "/entityOperations/upsert".to_string()),
        (Method::POST, "/entityOperations/query".to_string()),
    ] {
        let r = s
            .req(method.clone(), &path)
            .body("text/plain", "{}")
            .send()
            .await;
        assert_eq!(r.status, 415, "{method} {path}");
    }
}

#[tokio::test]
async fn geo_json_with_prefer_body_json_puts_the_context_in_a_link_header() {
    let s = Server::start().await;
    s.create(vehicle(ID, 1)).await;
    for path in [
        format!("/entities/{ID}"),
        "/entities?type=Vehicle".to_string(),
    ] {
        let r = s
            .req(Method::GET, &path)
            .header("accept", "application/geo+json")
            .header("prefer", "body=json")
            .send()
            .await;
        assert_eq!(
            r.header("content-type"),
            Some("application/geo+json"),
            "{path}"
        );
        assert!(r.body.get("@context").is_none(), "{path}: {}", r.text);
        assert_eq!(r.header("link"), Some(link(CORE).as_str()), "{path}");
        let r = s
            .req(Method::GET, &path)
            .header("accept", "application/geo+json")
            .header("prefer", "body=ld+json")
            .send()
            .await;
        assert_eq!(r.body["@context"], CORE, "{path}");
    }
}

/// The geometry of a Feature (clause 4.5.16, ETSI 4516_01, 4517_01): the
/// default instance of a multi-attribute, null for a value that is no
/// geometry; the simplified properties hold the `dataset` map; and
/// geometryProperty asks for GeoJSON (clauses 5.7.1.4 and 5.7.2.4, ETSI
/// 5711_01_02, 019_27_01).
#[tokio::test]
async fn geo_json_geometry_of_multi_attributes_and_non_geometries() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:g:1", "type": "Vehicle", "speed": 5, "location": [
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [9.0, 9.0]}, "datasetId": "urn:ds:gps"},
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}},
    ]}))
    .await;
    let geo = |path: String| {
        let s = &s;
        async move {
            s.req(Method::GET, &path)
                .header("accept", "application/geo+json")
                .send()
                .await
        }
    };
    let point = json!({"type": "Point", "coordinates": [1.0, 2.0]});
    let r = geo("/entities/urn:g:1".into()).await;
    assert_eq!(r.body["geometry"], point, "{}", r.text);
    let r = geo("/entities/urn:g:1?options=keyValues".into()).await;
    assert_eq!(r.body["geometry"], point, "{}", r.text);
    assert_eq!(
        r.body["properties"]["location"],
        json!({"dataset": {"@none": point, "urn:ds:gps": {"type": "Point", "coordinates": [9.0, 9.0]}}})
    );
    let r = geo("/entities?type=Vehicle&options=concise".into()).await;
    assert_eq!(r.body["features"][0]["geometry"], point, "{}", r.text);
    let r = geo("/entities/urn:g:1?geometryProperty=speed".into()).await;
    assert_eq!(r.body["geometry"], Value::Null, "{}", r.text);
    for path in [
        "/entities/urn:g:1?geometryProperty=location",
        "/entities?type=Vehicle&geometryProperty=location",
    ] {
        s.get(path).await.problem(400, "BadRequestData");
    }
}
