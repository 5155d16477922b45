//! Context source registrations (clauses 5.9, 5.10, 6.8, 6.9): the
//! registry and discovery. The cases follow the ETSI test procedures
//! 033–037 (see docs/conformance.md).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Server, enc, link, serve_document};

/// A context naming the test vocabulary, as the ETSI suite's does: some
/// terms mapped, the rest left to the core context's default vocabulary.
fn terms() -> Value {
    json!({"@context": {
        "Vehicle": "https://ngsi-ld-test-suite/context#Vehicle",
        "Building": "https://ngsi-ld-test-suite/context#Building",
        "OffStreetParking": "https://ngsi-ld-test-suite/context#OffStreetParking",
        "brandName": "https://ngsi-ld-test-suite/context#brandName",
        "speed": "https://ngsi-ld-test-suite/context#speed",
        "name": "https://ngsi-ld-test-suite/context#name"
    }})
}

/// The base registration of the ETSI data files.
fn registration(id: &str) -> Value {
    json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": [
            {"entities": [{"id": "urn:ngsi-ld:Vehicle:A456", "type": "Vehicle"}],
             "propertyNames": ["brandName", "speed"],
             "relationshipNames": ["isParked"]},
            {"entities": [{"idPattern": ".*downtown$", "type": "OffStreetParking"},
                          {"idPattern": ".*47$", "type": "OffStreetParking"}],
             "propertyNames": ["availableSpotNumber", "totalSpotNumber"],
             "relationshipNames": ["isNextToBuilding"]}
        ],
        "endpoint": "http://my.csource.org:1026"
    })
}

fn building(id: &str, extra: Value) -> Value {
    let mut r = json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Building"}],
                         "propertyNames": ["name", "subCategory"],
                         "relationshipNames": ["locatedAt"]}],
        "endpoint": "http://my.csource.org:1026"
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// Registers `body` with `context` (a URL) in the Link header and expects
/// 201.
async fn register(s: &Server, body: &Value, context: &str) {
    let r = s
        .req(Method::POST, "/csourceRegistrations")
        .header("Link", &link(context))
        .json(body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Registers two Building registrations with the same interval (of
/// 2020-08-01T22:07Z to 2021-08-01T21:07Z), as observationInterval and as
/// managementInterval.
async fn register_intervals(s: &Server, observed: &str, managed: &str) {
    let interval = json!({"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"});
    for (id, member) in [
        (observed, "observationInterval"),
        (managed, "managementInterval"),
    ] {
        let mut extra = json!({});
        extra[member] = interval.clone();
        register(s, &building(id, extra), jsonld::CORE_CONTEXT_URL).await;
    }
}

async fn query(s: &Server, context: &str, params: &str) -> Vec<String> {
    let r = s
        .req(Method::GET, &format!("/csourceRegistrations?{params}"))
        .header("Link", &link(context))
        .send()
        .await;
    assert_eq!(r.status, 200, "{params}: {}", r.text);
    let mut ids = crate::support::ids_of(&r.body);
    ids.sort();
    ids
}

#[tokio::test]
async fn a_registration_reads_back_as_registered_compacted_with_the_readers_context() {
    let s = Server::start().await;
    let ctx = serve_document(terms()).await;
    let id = "urn:ngsi-ld:ContextSourceRegistration:round-trip";
    let mut given = registration(id);
    given["expiresAt"] = json!("2035-11-29T14:53:15Z");
    given["location"] = json!({"type": "Point", "coordinates": [113.26, 23.13]});
    given["mode"] = json!("exclusive");
    given["operations"] = json!(["queryEntity", "queryTemporal", "updateOps"]);
    given["csourceProperty1"] = json!("aValue");
    let mut body = given.clone();
    body["@context"] = json!([ctx]);
    // ETSI 033_01: application/ld+json with the @context in the body.
    let r = s
        .req(Method::POST, "/csourceRegistrations")
        .ld(&body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.text.is_empty());
    assert_eq!(
        r.header("location"),
        Some(format!("/ngsi-ld/v1/csourceRegistrations/{id}").as_str())
    );
    let r = s
        .req(Method::GET, &format!("/csourceRegistrations/{}", enc(id)))
        .header("Link", &link(&ctx))
        .header("Accept", "application/ld+json")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut got = r.body.clone();
    assert_eq!(got["@context"], json!(ctx), "{}", r.text);
    got.as_object_mut().unwrap().remove("@context");
    assert_eq!(got, given);
    // Without a Link header the core context compacts: mapped terms come
    // back as IRIs, default-vocabulary ones as they were.
    let r = s.get(&format!("/csourceRegistrations/{}", enc(id))).await;
    assert_eq!(r.status, 200);
    let info = &r.body["information"][0];
    assert_eq!(
        info["entities"][0]["type"],
        json!("https://ngsi-ld-test-suite/context#Vehicle")
    );
    assert_eq!(
        info["propertyNames"],
        json!([
            "https://ngsi-ld-test-suite/context#brandName",
            "https://ngsi-ld-test-suite/context#speed"
        ])
    );
    assert_eq!(info["relationshipNames"], json!(["isParked"]));
    assert!(r.body.get("createdAt").is_none());
    // ETSI 033_05: a type registered without a context is in the default
    // vocabulary; a reader whose context maps the term elsewhere gets it
    // as a compact IRI.
    let plain = "urn:ngsi-ld:ContextSourceRegistration:plain";
    let r = s
        .post(
            "/csourceRegistrations",
            &json!({"id": plain, "type": "ContextSourceRegistration",
                    "information": [{"entities": [{"type": "Building"}]}],
                    "endpoint": "http://my.csource.org:1026"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .req(
            Method::GET,
            &format!("/csourceRegistrations/{}", enc(plain)),
        )
        .header("Link", &link(&ctx))
        .send()
        .await;
    assert_eq!(
        r.body["information"][0]["entities"][0]["type"],
        json!("ngsi-ld:default-context/Building"),
        "{}",
        r.text
    );
    // options=sysAttrs adds the system attributes.
    let r = s
        .get(&format!(
            "/csourceRegistrations/{}?options=sysAttrs",
            enc(id)
        ))
        .await;
    assert!(r.body["createdAt"].is_string() && r.body["modifiedAt"].is_string());
}

#[tokio::test]
async fn registering_checks_the_document_and_the_media_type_rules() {
    let s = Server::start().await;
    // ETSI 033_11: without an id the broker names the registration.
    let mut no_id = registration("x");
    no_id.as_object_mut().unwrap().remove("id");
    let r = s.post("/csourceRegistrations", &no_id).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    assert!(id.starts_with("urn:ngsi-ld:ContextSourceRegistration:"));
    assert_eq!(
        s.get(&format!("/csourceRegistrations/{}", enc(id)))
            .await
            .status,
        200
    );
    // ETSI 033_03: twice is 409.
    let dup = registration("urn:ngsi-ld:ContextSourceRegistration:dup");
    assert_eq!(s.post("/csourceRegistrations", &dup).await.status, 201);
    s.post("/csourceRegistrations", &dup)
        .await
        .problem(409, "AlreadyExists");
    // ETSI 033_02, 033_10 and the type rules of clause 5.2.9.
    let base = registration("urn:ngsi-ld:ContextSourceRegistration:bad");
    let mut cases = Vec::new();
    for (member, value) in [
        ("information", json!(null)),
        ("information", json!([])),
        (
            "information",
            json!([{"entities": [{"id": "urn:ngsi-ld:A:1"}]}]),
        ),
        ("information", json!([{"entities": [{"type": "T,U"}]}])),
        (
            "information",
            json!([{"entities": [{"type": ["Building", "a b"]}]}]),
        ),
        ("endpoint", json!("nowhere")),
        ("endpoint", json!("http://")),
        ("endpoint", json!("urn:ngsi-ld:source")),
        ("endpoint", json!("mqtt://broker:1883/x")),
        ("expiresAt", json!("2018-11-29T14:53:15Z")),
        ("expiresAt", json!(" 2040-11-29T14:53:15Z")),
        ("type", json!("Registration")),
        ("mode", json!("often")),
        ("operations", json!(["teleport"])),
        (
            "location",
            json!({"type": "Point", "coordinates": [200, 0]}),
        ),
    ] {
        let mut d = base.clone();
        d[member] = value;
        cases.push(d);
    }
    let mut no_endpoint = base.clone();
    no_endpoint.as_object_mut().unwrap().remove("endpoint");
    cases.push(no_endpoint);
    for d in &cases {
        s.post("/csourceRegistrations", d)
            .await
            .problem(400, "BadRequestData");
    }
    // None of them was stored.
    assert_eq!(
        s.get("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:bad")
            .await
            .status,
        404
    );
    // ETSI 033_06, 033_08, 033_09: where the @context may be.
    let mut with_ctx = base.clone();
    with_ctx["@context"] = json!(jsonld::CORE_CONTEXT_URL);
    s.post("/csourceRegistrations", &with_ctx)
        .await
        .problem(400, "BadRequestData");
    s.req(Method::POST, "/csourceRegistrations")
        .ld(&base)
        .send()
        .await
        .problem(400, "BadRequestData");
    s.req(Method::POST, "/csourceRegistrations")
        .header("Link", &link(jsonld::CORE_CONTEXT_URL))
        .ld(&with_ctx)
        .send()
        .await
        .problem(400, "BadRequestData");
    // Invalid JSON is an InvalidRequest.
    s.req(Method::POST, "/csourceRegistrations")
        .body("application/json", "{\"id\": \"urn:a:b\",, }")
        .send()
        .await
        .problem(400, "InvalidRequest");
}

#[tokio::test]
async fn an_update_replaces_members_and_a_delete_removes_the_registration() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:ContextSourceRegistration:update";
    let path = format!("/csourceRegistrations/{}", enc(id));
    let mut d = registration(id);
    d["expiresAt"] = json!("2035-11-29T14:53:15Z");
    assert_eq!(s.post("/csourceRegistrations", &d).await.status, 201);
    // ETSI 034_01 and 034_05.
    s.patch(
        &path,
        &json!({"endpoint": "http://my.new.csource.org:1026"}),
    )
    .await
    .no_content();
    s.patch(&path, &json!({"expiresAt": null}))
        .await
        .no_content();
    let got = s.get(&path).await.body;
    assert_eq!(got["endpoint"], json!("http://my.new.csource.org:1026"));
    assert!(got.get("expiresAt").is_none(), "{got}");
    assert_eq!(got["information"], registration(id)["information"]);
    // information is replaced whole.
    s.patch(
        &path,
        &json!({"information": [{"propertyNames": ["speed"]}]}),
    )
    .await
    .no_content();
    assert_eq!(
        s.get(&path).await.body["information"],
        json!([{"propertyNames": ["speed"]}])
    );
    // ETSI 034_02, 034_03, 034_04, 034_06.
    s.patch(
        "/csourceRegistrations/invalidURI",
        &json!({"endpoint": "http://a.b"}),
    )
    .await
    .problem(400, "BadRequestData");
    s.patch(&path, &json!({"type": "building"}))
        .await
        .problem(400, "BadRequestData");
    s.patch(&path, &json!({"information": null}))
        .await
        .problem(400, "BadRequestData");
    s.patch(&path, &json!({"expiresAt": "2001-01-01T00:00:00Z"}))
        .await
        .problem(400, "BadRequestData");
    s.patch(
        "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:none",
        &json!({"endpoint": "http://a.b"}),
    )
    .await
    .problem(404, "ResourceNotFound");
    s.req(Method::PATCH, &path)
        .body("application/json", "{\"endpoint\":,,}")
        .send()
        .await
        .problem(400, "InvalidRequest");
    let r = s
        .req(Method::PATCH, "/csourceRegistrations/")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, 405);
    // The failed updates changed nothing.
    assert_eq!(
        s.get(&path).await.body["endpoint"],
        json!("http://my.new.csource.org:1026")
    );
    // ETSI 035.
    s.delete(&path).await.no_content();
    s.get(&path).await.problem(404, "ResourceNotFound");
    s.delete(&path).await.problem(404, "ResourceNotFound");
    s.delete("/csourceRegistrations/invalidURI")
        .await
        .problem(400, "BadRequestData");
    let r = s.req(Method::DELETE, "/csourceRegistrations/").send().await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn discovery_selects_registrations_by_entities_attributes_and_properties() {
    let s = Server::start().await;
    let ctx = serve_document(terms()).await;
    let base = "urn:ngsi-ld:ContextSourceRegistration:base";
    let detailed = "urn:ngsi-ld:ContextSourceRegistration:detailed";
    let props = "urn:ngsi-ld:ContextSourceRegistration:props";
    let only_props = "urn:ngsi-ld:ContextSourceRegistration:only-props";
    register(&s, &registration(base), &ctx).await;
    register(&s, &building(detailed, json!({})), &ctx).await;
    register(
        &s,
        &building(
            props,
            json!({"csourceProperty1": "aValue", "csourceProperty2": "anotherValue",
                   "information": [{"entities": [{"type": "Building"}]}]}),
        ),
        &ctx,
    )
    .await;
    register(
        &s,
        &json!({"id": only_props, "type": "ContextSourceRegistration",
                "information": [{"propertyNames": ["name", "subCategory"]}],
                "endpoint": "http://my.csource.org:1026"}),
        &ctx,
    )
    .await;
    // ETSI 037_01, 037_06, 037_08. A RegistrationInfo without entities
    // matches any entity (clause 5.12).
    assert_eq!(
        query(&s, &ctx, "type=Building").await,
        [detailed, only_props, props]
    );
    assert_eq!(query(&s, &ctx, "type=Vehicle").await, [base, only_props]);
    assert_eq!(
        query(&s, &ctx, "attrs=name").await,
        [detailed, only_props, props]
    );
    assert_eq!(
        query(&s, &ctx, "type=Building&attrs=name,locatedAt").await,
        [detailed, only_props, props]
    );
    assert_eq!(query(&s, &ctx, "type=Building&attrs=speed").await, [props]);
    assert_eq!(query(&s, &ctx, "type=Vehicle,Building").await.len(), 4);
    // ETSI 037_04, 037_05, 037_10: ids and idPatterns on both sides.
    let cases: [(&str, &[&str]); 6] = [
        (
            "type=Vehicle&id=urn:ngsi-ld:Vehicle:A456",
            &[base, only_props],
        ),
        ("type=Vehicle&id=urn:ngsi-ld:Vehicle:B1", &[only_props]),
        (
            "type=OffStreetParking&idPattern=.*downtown$",
            &[base, only_props],
        ),
        (
            "type=OffStreetParking&id=urn:ngsi-ld:OffStreetParking:47",
            &[base, only_props],
        ),
        (
            "type=OffStreetParking&id=urn:ngsi-ld:OffStreetParking:48",
            &[only_props],
        ),
        (
            "id=urn:ngsi-ld:Building:1,urn:ngsi-ld:Building:2",
            &[detailed, only_props, props],
        ),
    ];
    for (params, expected) in cases {
        assert_eq!(query(&s, &ctx, params).await, expected, "{params}");
    }
    // The type as an IRI, without a Link header.
    let r = s
        .get(&format!(
            "/csourceRegistrations?type={}",
            enc("https://ngsi-ld-test-suite/context#Building")
        ))
        .await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(3), "{}", r.text);
    // The whole registration comes back, every RegistrationInfo.
    let r = s
        .req(Method::GET, "/csourceRegistrations?type=OffStreetParking")
        .header("Link", &link(&ctx))
        .send()
        .await;
    assert_eq!(r.body[0]["information"], registration(base)["information"]);
    // pick and omit (clause 4.21) choose the members shown.
    let r = s
        .req(
            Method::GET,
            "/csourceRegistrations?type=Vehicle&pick=id,endpoint",
        )
        .header("Link", &link(&ctx))
        .send()
        .await;
    assert_eq!(
        r.body,
        json!([{"id": base, "endpoint": "http://my.csource.org:1026"},
               {"id": only_props, "endpoint": "http://my.csource.org:1026"}]),
        "{}",
        r.text
    );
    let r = s
        .req(
            Method::GET,
            "/csourceRegistrations?type=Building&omit=information,mode,operations,endpoint,type",
        )
        .header("Link", &link(&ctx))
        .send()
        .await;
    assert_eq!(
        r.body,
        json!([{"id": detailed}, {"id": only_props},
               {"id": props, "csourceProperty1": "aValue", "csourceProperty2": "anotherValue"}]),
        "{}",
        r.text
    );
    s.get("/csourceRegistrations?type=Building&pick=id&omit=type")
        .await
        .problem(400, "BadRequestData");
    // ETSI 037_10: q and csf on Context Source Properties.
    let q = enc("csourceProperty1==\"aValue\"");
    assert_eq!(query(&s, &ctx, &format!("q={q}")).await, [props]);
    assert_eq!(query(&s, &ctx, &format!("csf={q}")).await, [props]);
    let other = enc("csourceProperty2==\"aValue\"");
    assert!(query(&s, &ctx, &format!("csf={other}")).await.is_empty());
    let endpoint = enc("endpoint==\"http://my.csource.org:1026\"");
    assert_eq!(query(&s, &ctx, &format!("csf={endpoint}")).await.len(), 4);
    // ETSI 037_02, 037_03: too wide or invalid queries.
    for params in [
        "",
        "id=invalidUri",
        "q=(invalidQuery",
        "georel=within",
        "timerel=before",
        "type=Building&timerel=later&timeAt=2020-01-01T00:00:00Z",
        "type=Building&georel=near;maxDistance==10&geometry=Point&coordinates=[1,2]&geoproperty=elsewhere",
    ] {
        s.get(&format!("/csourceRegistrations?{params}"))
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn discovery_by_place_time_and_scope() {
    let s = Server::start().await;
    let ctx = jsonld::CORE_CONTEXT_URL;
    let near = "urn:ngsi-ld:ContextSourceRegistration:tianhe";
    let far = "urn:ngsi-ld:ContextSourceRegistration:beijing";
    let observed = "urn:ngsi-ld:ContextSourceRegistration:observed";
    let managed = "urn:ngsi-ld:ContextSourceRegistration:managed";
    register(
        &s,
        &building(
            near,
            json!({"location": {"type": "Point", "coordinates": [113.33, 23.13]},
                   "scope": ["/Guangzhou/Tianhe"]}),
        ),
        ctx,
    )
    .await;
    register(
        &s,
        &building(
            far,
            json!({"location": {"type": "Point", "coordinates": [116.40, 39.90]},
                   "scope": "/Beijing"}),
        ),
        ctx,
    )
    .await;
    register_intervals(&s, observed, managed).await;
    // ETSI 037_07: near and within on location.
    assert_eq!(
        query(
            &s,
            ctx,
            "type=Building&georel=near;maxDistance==2000&geometry=Point&coordinates=[113.33,23.14]"
        )
        .await,
        [near]
    );
    let polygon = enc("[[[113,23],[114,23],[114,24],[113,24],[113,23]]]");
    assert_eq!(
        query(
            &s,
            ctx,
            &format!("georel=within&geometry=Polygon&coordinates={polygon}&geoproperty=location")
        )
        .await,
        [near]
    );
    assert_eq!(
        query(&s, ctx, &format!("scopeQ={}", enc("/Guangzhou/#"))).await,
        [near]
    );
    // ETSI 037_09: a temporal query tests the interval its timeproperty
    // names; without one only registrations without intervals match.
    let before = "type=Building&timerel=before&timeAt=2021-08-01T22:00:00Z";
    assert_eq!(query(&s, ctx, before).await, [observed]);
    assert_eq!(
        query(&s, ctx, &format!("{before}&timeproperty=observedAt")).await,
        [observed]
    );
    assert_eq!(
        query(&s, ctx, &format!("{before}&timeproperty=modifiedAt")).await,
        [managed]
    );
    assert!(
        query(
            &s,
            ctx,
            "type=Building&timerel=after&timeAt=2022-01-01T00:00:00Z"
        )
        .await
        .is_empty()
    );
    assert_eq!(query(&s, ctx, "type=Building").await, [far, near]);
}

#[tokio::test]
async fn discovery_pages_and_counts() {
    let s = Server::start().await;
    let ctx = jsonld::CORE_CONTEXT_URL;
    for n in 1..=3 {
        register(
            &s,
            &building(
                &format!("urn:ngsi-ld:ContextSourceRegistration:page{n}"),
                json!({}),
            ),
            ctx,
        )
        .await;
    }
    // ETSI 037_11.
    let r = s
        .get("/csourceRegistrations?type=Building&limit=1&offset=2&count=true")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        crate::support::ids_of(&r.body),
        ["urn:ngsi-ld:ContextSourceRegistration:page3"]
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("3"));
    let links: Vec<&str> = r
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.contains("json-ld#context"))
        .collect();
    assert_eq!(
        links,
        [
            "</ngsi-ld/v1/csourceRegistrations?type=Building&count=true&limit=1&offset=1>;rel=\"prev\";type=\"application/ld+json\""
        ]
    );
    let r = s.get("/csourceRegistrations?type=Building&limit=1").await;
    let next: Vec<&str> = r
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.contains("rel=\"next\""))
        .collect();
    assert_eq!(
        next,
        [
            "</ngsi-ld/v1/csourceRegistrations?type=Building&limit=1&offset=1>;rel=\"next\";type=\"application/ld+json\""
        ]
    );
    assert_eq!(
        s.get("/csourceRegistrations?type=Building&limit=15")
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    s.get("/csourceRegistrations?type=Building&limit=1000")
        .await
        .problem(403, "TooManyResults");
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_registrations() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:ContextSourceRegistration:panyu";
    let r = s
        .req(Method::POST, "/csourceRegistrations")
        .header("NGSILD-Tenant", "panyu")
        .json(&building(id, json!({})))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let path = format!("/csourceRegistrations/{}", enc(id));
    s.get(&path).await.problem(404, "ResourceNotFound");
    assert_eq!(
        s.req(Method::GET, &path)
            .header("NGSILD-Tenant", "panyu")
            .send()
            .await
            .status,
        200
    );
    let r = s.get("/csourceRegistrations?type=Building").await;
    assert_eq!(r.body, json!([]));
    s.delete(&path).await.problem(404, "ResourceNotFound");
}

/// ETSI 033_11 reads the id of a created registration from a header it
/// looks up as `Location`, spelled so: names go out title-cased.
#[tokio::test]
async fn the_location_header_is_title_cased() {
    let s = Server::start().await;
    let mut body = registration("x");
    body.as_object_mut().unwrap().remove("id");
    let body = body.to_string();
    let answer = crate::support::raw(
        &s,
        &format!(
            "POST /ngsi-ld/v1/csourceRegistrations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        answer.contains(
            "\r\nLocation: /ngsi-ld/v1/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:"
        ),
        "{answer}"
    );
}

/// A subscription to registrations of type Building (clause 5.11).
fn csr_subscription(id: &str, uri: &str) -> Value {
    json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
    })
}

/// ETSI 038–042: the operations on subscriptions to registrations.
#[tokio::test]
async fn registration_subscriptions_are_created_read_listed_updated_and_deleted() {
    let s = Server::start().await;
    let id = "urn:ngsi-ld:Subscription:csr-crud";
    let path = format!("/csourceSubscriptions/{}", enc(id));
    let body = csr_subscription(id, "http://localhost:1/notify");
    let r = s.post("/csourceSubscriptions", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.header("location"),
        Some(format!("/ngsi-ld/v1/csourceSubscriptions/{id}").as_str())
    );
    s.post("/csourceSubscriptions", &body)
        .await
        .problem(409, "AlreadyExists");
    let got = s.get(&path).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["entities"], json!([{"type": "Building"}]));
    assert_eq!(got.body["status"], json!("active"));
    // ETSI 038_01: nothing the client did not give but status.
    assert!(
        got.body.get("notificationTrigger").is_none(),
        "{}",
        got.text
    );
    // ETSI 038_08, 038_09: invalid ones.
    for bad in [
        json!({"type": "Subscription", "entities": [{"type": "Building"}]}),
        json!({"type": "Nothing", "entities": [{"type": "Building"}],
               "notification": {"endpoint": {"uri": "http://a.b/c"}}}),
        json!({"type": "Subscription", "entities": [{"type": "Building"}], "q": "(bad",
               "notification": {"endpoint": {"uri": "http://a.b/c"}}}),
        json!({"type": "Subscription", "watchedAttributes": [],
               "notification": {"endpoint": {"uri": "http://a.b/c"}}}),
        json!({"type": "Subscription", "entities": [{"type": "Building"}],
               "expiresAt": "2001-01-01T00:00:00Z",
               "notification": {"endpoint": {"uri": "http://a.b/c"}}}),
        json!({"type": "Subscription", "entities": [{"type": "Building"}],
               "geoQ": {"geometry": "Point", "coordinates": [1, 2], "georel": "near;maxDistance==5",
                        "geoproperty": "elsewhere"},
               "notification": {"endpoint": {"uri": "http://a.b/c"}}}),
    ] {
        s.post("/csourceSubscriptions", &bad)
            .await
            .problem(400, "BadRequestData");
    }
    // ETSI 039: update; isActive false pauses it.
    s.patch(&path, &json!({"isActive": false}))
        .await
        .no_content();
    assert_eq!(s.get(&path).await.body["status"], json!("paused"));
    s.patch(
        "/csourceSubscriptions/invalidURI",
        &json!({"isActive": true}),
    )
    .await
    .problem(400, "BadRequestData");
    s.patch(
        "/csourceSubscriptions/urn:ngsi-ld:Subscription:none",
        &json!({"isActive": true}),
    )
    .await
    .problem(404, "ResourceNotFound");
    // ETSI 041: listing with paging.
    let other = "urn:ngsi-ld:Subscription:csr-crud-2";
    assert_eq!(
        s.post(
            "/csourceSubscriptions",
            &csr_subscription(other, "http://localhost:1/notify")
        )
        .await
        .status,
        201
    );
    let r = s.get("/csourceSubscriptions?limit=1&count=true").await;
    assert_eq!(crate::support::ids_of(&r.body), [id]);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("2"));
    // Subscriptions to entities and to registrations are apart.
    assert_eq!(s.get("/subscriptions").await.body, json!([]));
    // ETSI 042.
    s.delete(&path).await.no_content();
    s.get(&path).await.problem(404, "ResourceNotFound");
    s.delete("/csourceSubscriptions/invalidURI")
        .await
        .problem(400, "BadRequestData");
}

/// ETSI 047: notifications about registrations, with their triggerReason.
#[tokio::test]
async fn registration_subscriptions_notify_newly_matching_updated_and_no_longer_matching() {
    use crate::subscriptions::{next, nothing, receiver};
    let s = Server::start().await;
    let (uri, mut rx) = receiver(axum::http::StatusCode::OK).await;
    let before = "urn:ngsi-ld:ContextSourceRegistration:before";
    register(&s, &building(before, json!({})), jsonld::CORE_CONTEXT_URL).await;
    let sub = "urn:ngsi-ld:Subscription:csr-notify";
    let mut body = csr_subscription(sub, &uri);
    body["watchedAttributes"] = json!(["name"]);
    let r = s.post("/csourceSubscriptions", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // What matches already is notified at once.
    let n = next(&mut rx).await;
    assert_eq!(n.body["type"], json!("ContextSourceNotification"));
    assert_eq!(n.body["subscriptionId"], json!(sub));
    assert_eq!(n.body["triggerReason"], json!("newlyMatching"));
    assert_eq!(crate::support::ids_of(&n.body["data"]), [before]);
    assert!(
        n.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // A new matching registration; one that does not match (another
    // type) tells nothing; only the matching RegistrationInfo is sent.
    let added = "urn:ngsi-ld:ContextSourceRegistration:added";
    let mut two_infos = building(added, json!({}));
    two_infos["information"]
        .as_array_mut()
        .unwrap()
        .push(json!({"entities": [{"type": "Bus"}]}));
    register(&s, &two_infos, jsonld::CORE_CONTEXT_URL).await;
    let n = next(&mut rx).await;
    assert_eq!(n.body["triggerReason"], json!("newlyMatching"));
    assert_eq!(crate::support::ids_of(&n.body["data"]), [added]);
    assert_eq!(
        n.body["data"][0]["information"],
        building(added, json!({}))["information"]
    );
    let mut bus = building("urn:ngsi-ld:ContextSourceRegistration:bus", json!({}));
    bus["information"] = json!([{"entities": [{"type": "Bus"}]}]);
    register(&s, &bus, jsonld::CORE_CONTEXT_URL).await;
    nothing(&mut rx, 300).await;
    // An update of a matching registration; then one that makes it match
    // no more.
    let path = format!("/csourceRegistrations/{}", enc(added));
    s.patch(&path, &json!({"endpoint": "http://new.example/ngsi-ld"}))
        .await
        .no_content();
    let n = next(&mut rx).await;
    assert_eq!(n.body["triggerReason"], json!("updated"));
    assert_eq!(
        n.body["data"][0]["endpoint"],
        json!("http://new.example/ngsi-ld")
    );
    s.patch(
        &path,
        &json!({"information": [{"entities": [{"type": "Bus"}]}]}),
    )
    .await
    .no_content();
    let n = next(&mut rx).await;
    assert_eq!(n.body["triggerReason"], json!("noLongerMatching"));
    // A deleted matching registration.
    s.delete(&format!("/csourceRegistrations/{}", enc(before)))
        .await
        .no_content();
    let n = next(&mut rx).await;
    assert_eq!(n.body["triggerReason"], json!("noLongerMatching"));
    assert_eq!(crate::support::ids_of(&n.body["data"]), [before]);
    // The delivery status is counted.
    let got = s
        .get(&format!("/csourceSubscriptions/{}", enc(sub)))
        .await
        .body;
    assert_eq!(got["notification"]["timesSent"], json!(5), "{got}");
    assert_eq!(got["notification"]["status"], json!("ok"), "{got}");
    // A paused subscription tells nothing.
    s.patch(
        &format!("/csourceSubscriptions/{}", enc(sub)),
        &json!({"isActive": false}),
    )
    .await
    .no_content();
    register(
        &s,
        &building("urn:ngsi-ld:ContextSourceRegistration:late", json!({})),
        jsonld::CORE_CONTEXT_URL,
    )
    .await;
    nothing(&mut rx, 300).await;
}

/// The attributes matched are "the combination of the watchedAttributes
/// and the attributes in the NotificationParams" (clause 5.12).
#[tokio::test]
async fn notification_attributes_select_registrations_too() {
    use crate::subscriptions::{next, nothing, receiver};
    let s = Server::start().await;
    let (uri, mut rx) = receiver(axum::http::StatusCode::OK).await;
    let mut body = csr_subscription("urn:ngsi-ld:Subscription:csr-attrs", &uri);
    body["notification"]["attributes"] = json!(["height"]);
    let r = s.post("/csourceSubscriptions", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    register(
        &s,
        &building("urn:ngsi-ld:ContextSourceRegistration:names", json!({})),
        jsonld::CORE_CONTEXT_URL,
    )
    .await;
    nothing(&mut rx, 300).await;
    let mut tall = building("urn:ngsi-ld:ContextSourceRegistration:tall", json!({}));
    tall["information"][0]["propertyNames"] = json!(["height"]);
    register(&s, &tall, jsonld::CORE_CONTEXT_URL).await;
    let n = next(&mut rx).await;
    assert_eq!(n.body["triggerReason"], json!("newlyMatching"));
    assert_eq!(
        crate::support::ids_of(&n.body["data"]),
        ["urn:ngsi-ld:ContextSourceRegistration:tall"]
    );
}

/// ETSI 047_10, 047_11: a temporalQ selects registrations by their
/// intervals, as a temporal discovery query does.
#[tokio::test]
async fn a_temporal_query_selects_registrations_by_their_intervals() {
    use crate::subscriptions::{next, nothing, receiver};
    let s = Server::start().await;
    let (uri, mut rx) = receiver(axum::http::StatusCode::OK).await;
    let observed = "urn:ngsi-ld:ContextSourceRegistration:t-observed";
    let managed = "urn:ngsi-ld:ContextSourceRegistration:t-managed";
    let latest = "urn:ngsi-ld:ContextSourceRegistration:t-latest";
    let ctx = jsonld::CORE_CONTEXT_URL;
    register_intervals(&s, observed, managed).await;
    register(&s, &building(latest, json!({})), ctx).await;
    let mut body = csr_subscription("urn:ngsi-ld:Subscription:csr-temporal", &uri);
    body["temporalQ"] = json!({"timerel": "before", "timeAt": "2021-08-01T22:00:00Z",
                                "timeproperty": "modifiedAt"});
    let r = s.post("/csourceSubscriptions", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let n = next(&mut rx).await;
    assert_eq!(crate::support::ids_of(&n.body["data"]), [managed]);
    nothing(&mut rx, 200).await;
    let got = s
        .get("/csourceSubscriptions/urn:ngsi-ld:Subscription:csr-temporal")
        .await
        .body;
    assert_eq!(got["temporalQ"], body["temporalQ"]);
    for bad in [
        json!({"timerel": "before"}),
        json!({"timerel": "whenever", "timeAt": "2021-08-01T22:00:00Z"}),
        json!({"timeAt": "2021-08-01T22:00:00Z"}),
        json!("before"),
    ] {
        let mut b = csr_subscription("urn:ngsi-ld:Subscription:csr-bad-temporal", &uri);
        b["temporalQ"] = bad;
        s.post("/csourceSubscriptions", &b)
            .await
            .problem(400, "BadRequestData");
    }
}

/// A registration whose expiresAt passes is deleted (clause 4.8), and a
/// subscription it matched hears noLongerMatching.
#[tokio::test]
async fn an_expired_registration_is_removed_and_its_subscribers_told() {
    use crate::subscriptions::{next, receiver};
    let s = Server::start().await;
    let (uri, mut rx) = receiver(axum::http::StatusCode::OK).await;
    let id = "urn:ngsi-ld:ContextSourceRegistration:expiring";
    let expires = ngsi_model::time::format_micros(ngsi_model::time::now_micros() + 1_500_000);
    register(
        &s,
        &building(id, json!({"expiresAt": expires})),
        jsonld::CORE_CONTEXT_URL,
    )
    .await;
    let r = s
        .post(
            "/csourceSubscriptions",
            &csr_subscription("urn:ngsi-ld:Subscription:csr-expiry", &uri),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let n = next(&mut rx).await;
    assert_eq!(n.body["triggerReason"], json!("newlyMatching"));
    let n = next(&mut rx).await;
    assert_eq!(
        n.body["triggerReason"],
        json!("noLongerMatching"),
        "{}",
        n.body
    );
    assert_eq!(crate::support::ids_of(&n.body["data"]), [id]);
    s.get(&format!("/csourceRegistrations/{}", enc(id)))
        .await
        .problem(404, "ResourceNotFound");
    // It is gone, not hidden: the same id registers again.
    register(&s, &building(id, json!({})), jsonld::CORE_CONTEXT_URL).await;
}
