//! Query Entities: selectors, type expressions, q, scopeQ, attrs,
//! pagination and counting, and POST /entityOperations/query.

use serde_json::{Value, json};

use crate::support::{MAX_LIMIT, Server, enc, ids_of, sorted};

async fn city() -> Server {
    let s = Server::start().await;
    s.create(json!({
        "id": "urn:q:1", "type": "Building", "scope": "/city/north",
        "name": "Tower", "height": 100, "tags": ["a", "b"], "open": true,
        "address": {"type": "Property", "value": {"city": "Paris", "zip": "75001"}},
        "owner": {"type": "Relationship", "object": "urn:p:1"},
        "temp": {"type": "Property", "value": 21, "observedAt": "2024-01-01T10:00:00Z",
                 "accuracy": {"type": "Property", "value": 0.9}},
        "built": {"type": "Property", "value": "2024-03-01T00:00:00Z"},
    }))
    .await;
    s.create(json!({
        "id": "urn:q:2", "type": "House", "scope": "/city/south",
        "name": "Cabin", "height": 20, "tags": ["c"], "open": false,
        "address": {"type": "Property", "value": {"city": "Lyon", "zip": "69001"}},
        "owner": {"type": "Relationship", "object": "urn:p:2"},
        "temp": {"type": "Property", "value": 15, "observedAt": "2023-06-01T10:00:00Z",
                 "accuracy": {"type": "Property", "value": 0.2}},
        "built": {"type": "Property", "value": "1990-03-01T00:00:00Z"},
    }))
    .await;
    s.create(json!({
        "id": "urn:q:3", "type": ["Building", "Landmark"], "scope": ["/other", "/city/north/east"],
        "name": "Eiffel", "height": 300,
    }))
    .await;
    s
}

/// Runs each `(query string, expected ids)` case and compares the ids as sets.
async fn check(s: &Server, cases: &[(&str, &[&str])]) {
    for (query, expected) in cases {
        let got = sorted(s.ids(query).await);
        assert_eq!(got, *expected, "query {query}");
    }
}

fn q(expr: &str) -> String {
    format!("q={}", enc(expr))
}

#[tokio::test]
async fn selectors_and_type_expressions() {
    let s = city().await;
    check(
        &s,
        &[
            ("id=urn:q:1,urn:q:3&type=Building", &["urn:q:1", "urn:q:3"]),
            ("id=urn:q:9&type=Building", &[]),
            (
                "idPattern=urn:q:[12]&type=Building,House",
                &["urn:q:1", "urn:q:2"],
            ),
            ("idPattern=.*3$&type=Building", &["urn:q:3"]),
            ("type=Building", &["urn:q:1", "urn:q:3"]),
            ("type=Landmark", &["urn:q:3"]),
            ("type=Building,House", &["urn:q:1", "urn:q:2", "urn:q:3"]),
            ("type=Building%7CHouse", &["urn:q:1", "urn:q:2", "urn:q:3"]),
            ("type=Building;Landmark", &["urn:q:3"]),
            ("type=(Building;Landmark)%7CHouse", &["urn:q:2", "urn:q:3"]),
            ("type=Nothing", &[]),
            ("attrs=owner", &["urn:q:1", "urn:q:2"]),
            ("type=Building&attrs=owner,nothing", &["urn:q:1"]),
            // The full IRI of a type is the same type.
            (
                &format!(
                    "type={}",
                    enc("https://uri.etsi.org/ngsi-ld/default-context/House")
                ),
                &["urn:q:2"],
            ),
        ],
    )
    .await;
    // attrs also projects (whether `scope` stays is not pinned: it is an
    // entity member, not an attribute).
    let r = s
        .get("/entities?type=House&attrs=height,nothing&options=keyValues")
        .await;
    let mut e = r.body[0].clone();
    e.as_object_mut().unwrap().remove("scope");
    assert_eq!(e, json!({"id": "urn:q:2", "type": "House", "height": 20}));
    // Errors.
    s.get("/entities").await.problem(400, "BadRequestData");
    s.get("/entities?type=(Building")
        .await
        .problem(400, "BadRequestData");
    s.get("/entities?idPattern=(")
        .await
        .problem(400, "BadRequestData");
    s.get("/entities?id=notauri")
        .await
        .problem(400, "BadRequestData");
}

#[tokio::test]
async fn q_language() {
    let s = city().await;
    let cases: Vec<(String, &[&str])> = vec![
        (q("height>50"), &["urn:q:1", "urn:q:3"]),
        (q("height==20"), &["urn:q:2"]),
        (q("height!=20"), &["urn:q:1", "urn:q:3"]),
        (q("height>=100"), &["urn:q:1", "urn:q:3"]),
        (q("height<=20"), &["urn:q:2"]),
        (q("height==10..150"), &["urn:q:1", "urn:q:2"]),
        (q("height!=10..150"), &["urn:q:3"]),
        (q("height==20,300"), &["urn:q:2", "urn:q:3"]),
        (q("name==\"Tower\""), &["urn:q:1"]),
        (q("name==\"Tower\",\"Cabin\""), &["urn:q:1", "urn:q:2"]),
        (q("name~=^T.*"), &["urn:q:1"]),
        (q("name~=(?i)eiffel"), &["urn:q:3"]),
        (q("name!~=^T.*"), &["urn:q:2", "urn:q:3"]),
        (q("open==true"), &["urn:q:1"]),
        (q("open==false"), &["urn:q:2"]),
        (q("tags==\"a\""), &["urn:q:1"]),
        (q("height>50;name==\"Eiffel\""), &["urn:q:3"]),
        (q("height<50|name==\"Eiffel\""), &["urn:q:2", "urn:q:3"]),
        (q("(height<50|height>200);name==\"Eiffel\""), &["urn:q:3"]),
        (
            q("height>10;(name==\"Cabin\"|name==\"Tower\")"),
            &["urn:q:1", "urn:q:2"],
        ),
        (q("address[city]==\"Paris\""), &["urn:q:1"]),
        (q("address[zip]~=^69"), &["urn:q:2"]),
        (q("temp.accuracy>0.5"), &["urn:q:1"]),
        (q("temp.observedAt>2023-12-31T00:00:00Z"), &["urn:q:1"]),
        (q("built<2000-01-01T00:00:00Z"), &["urn:q:2"]),
        (q("owner==urn:p:1"), &["urn:q:1"]),
        (q("owner==urn:p:1,urn:p:2"), &["urn:q:1", "urn:q:2"]),
        (q("owner"), &["urn:q:1", "urn:q:2"]),
        (q("!owner"), &["urn:q:3"]),
        (q("height==\"20\""), &[]),
        (q("nothing==1"), &[]),
    ];
    for (query, expected) in &cases {
        assert_eq!(sorted(s.ids(query).await), *expected, "{query}");
    }
    for bad in [
        "height>>1",
        "height==",
        "(height>1",
        "height>1;",
        "name~=\"unterminated",
    ] {
        s.get(&format!("/entities?{}", q(bad)))
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn scope_queries() {
    let s = city().await;
    let cases: Vec<(String, &[&str])> = vec![
        (format!("scopeQ={}", enc("/city/north")), &["urn:q:1"]),
        (
            format!("scopeQ={}", enc("/city/#")),
            &["urn:q:1", "urn:q:2", "urn:q:3"],
        ),
        (
            format!("scopeQ={}", enc("/city/north/#")),
            &["urn:q:1", "urn:q:3"],
        ),
        (
            format!("scopeQ={}", enc("/other,/city/south")),
            &["urn:q:2", "urn:q:3"],
        ),
        (
            format!("scopeQ={}", enc("/other;/city/north/east")),
            &["urn:q:3"],
        ),
        (
            format!("scopeQ={}", enc("/#")),
            &["urn:q:1", "urn:q:2", "urn:q:3"],
        ),
        (format!("scopeQ={}", enc("/nowhere")), &[]),
    ];
    for (query, expected) in &cases {
        let query = format!("type=Building,House&{query}");
        assert_eq!(sorted(s.ids(&query).await), *expected, "{query}");
    }
    for bad in ["/bad-level", "(/a", "/a;", "//"] {
        s.get(&format!("/entities?type=Building&scopeQ={}", enc(bad)))
            .await
            .problem(400, "BadRequestData");
    }
    // A scopeQ alone does not narrow a query enough (clause 5.7.2.4 lists
    // types, attrs, q and geo-queries), unless it is local.
    let only = format!("scopeQ={}", enc("/city/#"));
    s.get(&format!("/entities?{only}"))
        .await
        .problem(400, "BadRequestData");
    s.post(
        "/entityOperations/query",
        &json!({"type": "Query", "scopeQ": "/city/#"}),
    )
    .await
    .problem(400, "BadRequestData");
    assert_eq!(
        sorted(s.ids(&format!("{only}&local=true")).await),
        ["urn:q:1", "urn:q:2", "urn:q:3"]
    );
}

/// `orderBy` on a member of a compound value (clause 4.23.3, Example 4:
/// `address[city]`).
#[tokio::test]
async fn order_by_a_key_of_a_compound_value() {
    let s = city().await;
    let ordered = |order: &str| {
        let query = format!("type=Building,House&orderBy={}", enc(order));
        let s = &s;
        async move { s.ids(&query).await }
    };
    assert_eq!(
        ordered("address[city];desc").await,
        ["urn:q:1", "urn:q:2", "urn:q:3"]
    );
    assert_eq!(
        ordered("address[city]").await,
        ["urn:q:2", "urn:q:1", "urn:q:3"]
    );
    assert_eq!(
        ordered("address[zip];desc").await,
        ["urn:q:1", "urn:q:2", "urn:q:3"]
    );
    s.get(&format!(
        "/entities?type=Building&orderBy={}",
        enc("address[city")
    ))
    .await
    .problem(400, "BadRequestData");
}

#[tokio::test]
async fn pagination_and_count() {
    let s = city().await;
    let all = "type=Building,House";
    let mut seen = Vec::new();
    for offset in 0..3 {
        let r = s
            .get(&format!("/entities?{all}&limit=1&offset={offset}"))
            .await;
        assert_eq!(r.status, 200);
        let ids = ids_of(&r.body);
        assert_eq!(ids.len(), 1);
        seen.extend(ids);
    }
    assert_eq!(sorted(seen), ["urn:q:1", "urn:q:2", "urn:q:3"]);
    assert_eq!(
        s.ids(&format!("{all}&offset=3")).await,
        Vec::<String>::new()
    );
    let r = s.get(&format!("/entities?{all}&limit=2&count=true")).await;
    assert_eq!(r.header("ngsild-results-count"), Some("3"));
    assert_eq!(ids_of(&r.body).len(), 2);
    let r = s.get(&format!("/entities?{all}&count=false")).await;
    assert!(r.header("ngsild-results-count").is_none());
    let r = s.get(&format!("/entities?{all}&limit=0&count=true")).await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])));
    assert_eq!(r.header("ngsild-results-count"), Some("3"));
    s.get(&format!("/entities?{all}&limit={}", MAX_LIMIT + 1))
        .await
        .problem(403, "TooManyResults");
    assert_eq!(
        s.get(&format!("/entities?{all}&limit={MAX_LIMIT}"))
            .await
            .status,
        200
    );
    for bad in ["limit=0", "limit=-1", "limit=x", "offset=-1", "count=yes"] {
        s.get(&format!("/entities?{all}&{bad}"))
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn pagination_links_follow_the_suite_format() {
    let s = city().await;
    let r = s
        .get("/entities?type=Building,House&limit=1&offset=1&count=true")
        .await;
    let links: Vec<&str> = r
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let prev = "</ngsi-ld/v1/entities?count=true&limit=1&offset=0&type=Building%2CHouse>; rel=\"prev\";type=\"application/json\"";
    let next = "</ngsi-ld/v1/entities?count=true&limit=1&offset=2&type=Building%2CHouse>; rel=\"next\";type=\"application/json\"";
    let joined = links.join(", ");
    assert!(joined.contains(prev), "{joined}");
    assert!(joined.contains(next), "{joined}");
    let r = s
        .get("/entities?type=Building,House&limit=0&count=true")
        .await;
    let links: Vec<&str> = r
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        !links
            .iter()
            .any(|l| l.contains("rel=\"next\"") || l.contains("rel=\"prev\"")),
        "{links:?}"
    );
}

/// The paging links of POST /entityOperations/query carry the body's
/// query (clause 5.5.9.1): as GET parameters when it has that form, else
/// they point at the POST resource, to which the body is sent again.
#[tokio::test]
async fn post_query_paging_links_carry_the_body_query() {
    let s = city().await;
    for i in 4..9 {
        s.create(json!({"id": format!("urn:q:{i}"), "type": "House", "height": i * 10}))
            .await;
    }
    let body = json!({
        "type": "Query",
        "entities": [{"type": "House"}, {"type": "Landmark"}],
        "q": "height>25",
        "attrs": ["height"],
    });
    let mut seen = Vec::new();
    let first = s
        .post(
            "/entityOperations/query?limit=2&count=true&options=keyValues",
            &body,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("ngsild-results-count"), Some("6"));
    assert_eq!(first.paging_link("prev"), None);
    seen.extend(ids_of(&first.body));
    let mut next = first.paging_link("next").expect("a next link");
    assert!(next.starts_with("/entities?"), "{next}");
    let last = loop {
        let page = s.get(&next).await;
        assert_eq!(page.status, 200, "{next}: {}", page.text);
        seen.extend(ids_of(&page.body));
        // The keyValues view and attrs of the body are kept.
        for e in page.body.as_array().unwrap() {
            assert_eq!(e.as_object().unwrap().len(), 3, "{e}");
        }
        match page.paging_link("next") {
            Some(n) => next = n,
            None => break page,
        }
    };
    assert!(last.paging_link("prev").is_some());
    let mut expected: Vec<String> = (4..9)
        .filter(|i| i * 10 > 25)
        .map(|i| format!("urn:q:{i}"))
        .chain(["urn:q:3".into()])
        .collect();
    expected.sort();
    assert_eq!(sorted(seen), expected);

    // Selectors of different types with an id pattern: no GET form.
    let body = json!({
        "type": "Query",
        "entities": [{"type": "House", "idPattern": "urn:q:[4-8]"}, {"type": "Landmark"}],
    });
    let first = s.post("/entityOperations/query?limit=4", &body).await;
    assert_eq!(ids_of(&first.body).len(), 4, "{}", first.text);
    let next = first.paging_link("next").expect("a next link");
    assert_eq!(next, "/entityOperations/query?limit=4&offset=4");
    let second = s.post(&next, &body).await;
    let mut all = ids_of(&first.body);
    all.extend(ids_of(&second.body));
    assert_eq!(
        sorted(all),
        [
            "urn:q:3", "urn:q:4", "urn:q:5", "urn:q:6", "urn:q:7", "urn:q:8"
        ]
    );
    assert_eq!(second.paging_link("next"), None);
}

#[tokio::test]
async fn query_forms_and_projection() {
    let s = city().await;
    let r = s
        .get("/entities?id=urn:q:3&type=Building&options=keyValues")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:q:3", "type": ["Building", "Landmark"], "scope": ["/other", "/city/north/east"],
                "name": "Eiffel", "height": 300}])
    );
    let r = s
        .get("/entities?id=urn:q:3&type=Building&options=concise&pick=id,height")
        .await;
    assert_eq!(r.body, json!([{"id": "urn:q:3", "height": 300}]));
    let r = s
        .get("/entities?id=urn:q:3&type=Building&omit=name,scope,type")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:q:3", "height": {"type": "Property", "value": 300}}])
    );
}

#[tokio::test]
async fn post_query() {
    let s = city().await;
    let cases = [
        (
            json!({"type": "Query", "entities": [{"type": "Building"}], "q": "height>150"}),
            vec!["urn:q:3"],
        ),
        (
            json!({"type": "Query", "entities": [{"type": "House"}, {"id": "urn:q:1", "type": "Building"}]}),
            vec!["urn:q:1", "urn:q:2"],
        ),
        (
            json!({"type": "Query", "entities": [{"idPattern": "^urn:q:[23]$", "type": "Building"}]}),
            vec!["urn:q:3"],
        ),
        (
            json!({"type": "Query", "attrs": ["owner"]}),
            vec!["urn:q:1", "urn:q:2"],
        ),
        (
            json!({"type": "Query", "entities": [{"type": "Building,House"}], "scopeQ": "/city/south"}),
            vec!["urn:q:2"],
        ),
    ];
    for (body, expected) in cases {
        let r = s.post("/entityOperations/query", &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text);
        assert_eq!(sorted(ids_of(&r.body)), expected, "{body}");
    }
    let r = s
        .post(
            "/entityOperations/query?limit=1&count=true",
            &json!({"type": "Query", "entities": [{"type": "Building"}]}),
        )
        .await;
    assert_eq!(
        (ids_of(&r.body).len(), r.header("ngsild-results-count")),
        (1, Some("2"))
    );
    s.post(
        "/entityOperations/query",
        &json!({"type": "Other", "entities": [{"type": "Building"}]}),
    )
    .await
    .problem(400, "BadRequestData");
    s.post(
        "/entityOperations/query",
        &json!({"type": "Query", "q": "height>>"}),
    )
    .await
    .problem(400, "BadRequestData");
    // A selector member of the wrong kind is refused, not ignored (ignoring
    // `id` would widen the query to every Building).
    for selector in [
        json!({"id": 5, "type": "Building"}),
        json!({"type": ["Building"]}),
        json!({"id": "not a uri"}),
    ] {
        s.post(
            "/entityOperations/query",
            &json!({"type": "Query", "entities": [selector]}),
        )
        .await
        .problem(400, "BadRequestData");
    }
    s.post(
        "/entityOperations/query?bogus=1",
        &json!({"type": "Query", "q": "height>1"}),
    )
    .await
    .problem(400, "InvalidRequest");
}

#[tokio::test]
async fn q_inside_language_maps_and_the_default_page_size() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:l:1", "type": "Street",
                    "name": {"type": "LanguageProperty", "languageMap": {"en": "Big Road", "fr": "Grande Rue"}}}))
        .await;
    s.create(json!({"id": "urn:l:2", "type": "Street",
                    "name": {"type": "LanguageProperty", "languageMap": {"en": "Small Road"}}}))
        .await;
    assert_eq!(s.ids(&q("name[fr]==\"Grande Rue\"")).await, ["urn:l:1"]);
    assert_eq!(
        sorted(s.ids(&q("name[*]~=Road")).await),
        ["urn:l:1", "urn:l:2"]
    );
    // Unequal on any language: no value of any language may be equal
    // (clause 4.9, ETSI 019_29_07).
    assert_eq!(s.ids(&q("name[*]!=\"Grande Rue\"")).await, ["urn:l:2"]);
    assert_eq!(s.ids(&q("name[en]!=\"Big Road\"")).await, ["urn:l:2"]);
    // Without a language, the target value is the value of any language
    // (clause 4.9).
    assert_eq!(s.ids(&q("name==\"Grande Rue\"")).await, ["urn:l:1"]);
    assert_eq!(s.ids(&q("name!=\"Grande Rue\"")).await, ["urn:l:2"]);
    assert_eq!(
        sorted(s.ids(&q("name~=Road$")).await),
        ["urn:l:1", "urn:l:2"]
    );
    let r = s
        .get("/entities?type=Street&lang=fr&options=keyValues")
        .await;
    let names: Vec<&serde_json::Value> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["name"])
        .collect();
    assert!(
        names.contains(&&json!("Grande Rue")) && names.contains(&&json!("Small Road")),
        "{}",
        r.text
    );
    for i in 0..25 {
        s.create(json!({"id": format!("urn:many:{i}"), "type": "Many"}))
            .await;
    }
    let r = s.get("/entities?type=Many&count=true").await;
    assert_eq!(
        (ids_of(&r.body).len(), r.header("ngsild-results-count")),
        (20, Some("25"))
    );
    let r = s.get("/entities?type=Nothing&count=true").await;
    assert_eq!(
        (r.body.clone(), r.header("ngsild-results-count")),
        (json!([]), Some("0"))
    );
}

#[tokio::test]
async fn query_by_dataset_id() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:d:1", "type": "T", "temp": [
        {"type": "Property", "value": 1},
        {"type": "Property", "value": 2, "datasetId": "urn:ds:a"},
    ]}))
    .await;
    let r = s
        .get("/entities?type=T&datasetId=urn:ds:a&options=keyValues")
        .await;
    assert_eq!(r.body, json!([{"id": "urn:d:1", "type": "T", "temp": 2}]));
}

/// The three buildings of the ETSI orderBy tests (019_19), created in the
/// order 2, 1, 3, and one without `name`.
async fn ordered_city() -> Server {
    let s = Server::start().await;
    for (n, name) in [(2, "B"), (1, "A"), (3, "C")] {
        s.create(json!({
            "id": format!("urn:o:{n}"), "type": "Building",
            "name": {"type": "Property", "value": name,
                     "subProperty": {"type": "Property", "value": n}},
        }))
        .await;
        // Distinct createdAt values.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    s.create(json!({"id": "urn:o:0", "type": "Building", "height": 1}))
        .await;
    s
}

#[tokio::test]
async fn order_by_sorts_the_matches() {
    let s = ordered_city().await;
    let asc = ["urn:o:1", "urn:o:2", "urn:o:3"];
    let desc = ["urn:o:3", "urn:o:2", "urn:o:1"];
    let created = ["urn:o:2", "urn:o:1", "urn:o:3"];
    // The ETSI cases; urn:o:0 has no name: last, in both directions (and
    // last created).
    for (order, expected) in [
        ("name", &asc[..]),
        ("createdAt", &created[..]),
        ("name.createdAt", &created[..]),
        ("name.subProperty", &asc[..]),
        ("name;asc", &asc[..]),
        ("name;desc", &desc[..]),
        ("type,name", &asc[..]),
        ("type;asc,name.subProperty;desc,name;asc", &desc[..]),
    ] {
        let mut want: Vec<&str> = expected.to_vec();
        want.push("urn:o:0");
        assert_eq!(
            s.ids(&format!("type=Building&orderBy={}", enc(order)))
                .await,
            want,
            "orderBy={order}"
        );
    }
    // The entity members order every entity; id;desc reverses the default.
    assert_eq!(
        s.ids("type=Building&orderBy=id;desc").await,
        ["urn:o:3", "urn:o:2", "urn:o:1", "urn:o:0"]
    );
    // Pages are cut after the ordering; the count is of all matches.
    let r = s
        .get("/entities?type=Building&orderBy=name;desc&limit=2&offset=1&count=true")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids_of(&r.body), ["urn:o:2", "urn:o:1"]);
    assert_eq!(r.header("NGSILD-Results-Count"), Some("4"));
    // With q: only the matches are ordered.
    assert_eq!(
        s.ids(&format!(
            "type=Building&{}&orderBy=name;desc",
            q("name.subProperty>1")
        ))
        .await,
        ["urn:o:3", "urn:o:2"]
    );
    // POST /entityOperations/query takes it from the URL.
    let r = s
        .post(
            "/entityOperations/query?orderBy=name;desc",
            &json!({"type": "Query", "entities": [{"type": "Building"}], "attrs": ["name"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids_of(&r.body), ["urn:o:3", "urn:o:2", "urn:o:1"]);
    for bad in ["name;up", "a.b.c", "id.x", "name,", ""] {
        s.get(&format!("/entities?type=Building&orderBy={}", enc(bad)))
            .await
            .problem(400, "BadRequestData");
    }
}

#[tokio::test]
async fn a_plus_in_the_query_string_is_a_space() {
    // HTTP clients form-encode query strings: a space becomes `+` (ETSI
    // TP 021_09 sends `[6.541, 52.961]` so), a literal plus `%2B`.
    let s = Server::start().await;
    let mut v = crate::support::vehicle("urn:ngsi-ld:Vehicle:plus", 1);
    v["brandName"]["value"] = json!("Mercedes Benz");
    s.create(v).await;
    let mut v = crate::support::vehicle("urn:ngsi-ld:Vehicle:literal", 1);
    v["brandName"]["value"] = json!("A+B");
    s.create(v).await;
    assert_eq!(
        s.ids("q=brandName==%22Mercedes+Benz%22").await,
        ["urn:ngsi-ld:Vehicle:plus"]
    );
    assert_eq!(
        s.ids("q=brandName==%22A%2BB%22").await,
        ["urn:ngsi-ld:Vehicle:literal"]
    );
    assert_eq!(
        s.ids("type=Vehicle&georel=within&geometry=Polygon&coordinates=[[[113,23],+[114,23],+[114,24],+[113,24],+[113,23]]]").await.len(),
        2
    );
}

/// The selection rules of clause 5.7.2.4 as the ETSI suite checks them
/// (019_03, 019_25, 019_26, 5722_01) and the query string as HTTP clients
/// encode it (019_09, 019_10: a space as `+`).
#[tokio::test]
async fn minimal_selectors_local_all_types_and_form_encoding() {
    let s = city().await;
    // Ids alone, or attrs and q on system attributes only, are too wide.
    for query in [
        "id=urn:q:1,urn:q:2",
        "idPattern=urn:q:.*",
        "attrs=createdAt",
        q("modifiedAt>\"2020-01-01T00:00:00Z\"").as_str(),
    ] {
        s.get(&format!("/entities?{query}"))
            .await
            .problem(400, "BadRequestData");
    }
    // local=true and type=* select every entity.
    for query in ["local=true", "type=*", "type=%2A&local=true"] {
        assert_eq!(
            sorted(s.ids(query).await),
            ["urn:q:1", "urn:q:2", "urn:q:3"],
            "{query}"
        );
    }
    s.get("/entities?type=*&local=false")
        .await
        .problem(400, "BadRequestData");
    // attrs may not name entity members; a context source filter must be a
    // query; `**` repeats nothing.
    for query in [
        "attrs=id,type",
        "type=Building&csf=))bad((",
        "type=Building&idPattern=a**",
    ] {
        s.get(&format!("/entities?{query}"))
            .await
            .problem(400, "BadRequestData");
    }
    assert_eq!(
        s.ids("type=Building&csf=name==%22x%22").await.len(),
        2,
        "a valid csf is accepted"
    );
    // `+` is a space, `%2B` a plus sign.
    assert_eq!(
        s.ids("type=Building&q=name==%22Eiffel+Tower%22")
            .await
            .len(),
        0
    );
    s.create(json!({"id": "urn:q:4", "type": "House", "name": "Eiffel Tower", "code": "a+b",
                    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.5, 2.5]}}}))
        .await;
    assert_eq!(
        s.ids("type=House&q=name==%22Eiffel+Tower%22").await,
        ["urn:q:4"]
    );
    assert_eq!(s.ids("type=House&q=code==%22a%2Bb%22").await, ["urn:q:4"]);
    assert_eq!(
        s.ids("type=House&georel=equals&geometry=Point&coordinates=%5B1.5,+2.5%5D")
            .await,
        ["urn:q:4"]
    );
}

/// pick and omit (clause 4.21): `|` is another spelling of `,`, they do
/// not go with attrs, and an entity left with no member is not listed
/// (ETSI 019_17, 019_18, 421_01).
#[tokio::test]
async fn pick_and_omit_rules_of_the_etsi_suite() {
    let s = city().await;
    let comma = s.get("/entities?type=Building,House&pick=id,height").await;
    let pipe = s
        .get("/entities?type=Building,House&pick=id%7Cheight")
        .await;
    assert_eq!(comma.body, pipe.body);
    assert_eq!(ids_of(&pipe.body).len(), 3);
    for query in [
        "type=Building&pick=name&attrs=height",
        "type=Building&omit=name&attrs=height",
        "type=Building&pick=name%7C%7Cheight",
        "type=Building&pick=id,,name",
        "type=Building&pick=id;name",
        // Linked-entity projections need join (clause 5.7.2.4; 019_33).
        "type=Building&pick=owner%7Bname%7D",
        "type=Building&omit=owner%7Bworks%7Bname%7D%7D&join=inline&joinLevel=1",
        // Linked-entity terms in q likewise (5722_01_03).
        "type=Building&q=owner%7Bname%7D==%22x%22",
    ] {
        s.get(&format!("/entities?{query}"))
            .await
            .problem(400, "BadRequestData");
    }
    // urn:q:3 has no tags: with pick=tags it has nothing left.
    let r = s
        .get("/entities?type=Building,House&pick=tags&options=keyValues")
        .await;
    assert_eq!(r.body, json!([{"tags": ["a", "b"]}, {"tags": ["c"]}]));
}

/// The members of a Query body (clause 5.2.23) and of its entity selectors
/// (clause 5.2.33) as the ETSI suite checks them (019_32, 5233_01).
#[tokio::test]
async fn post_query_members_of_the_etsi_suite() {
    let s = city().await;
    let post = |body: serde_json::Value| {
        let s = &s;
        async move { s.post("/entityOperations/query", &body).await }
    };
    let r = post(
        json!({"type": "Query", "entities": [{"type": "Building"}], "pick": ["id", "height"]}),
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:q:1", "height": {"type": "Property", "value": 100}},
               {"id": "urn:q:3", "height": {"type": "Property", "value": 300}}])
    );
    let r = post(json!({"type": "Query", "entities": [{"type": "House"}], "omit": "name,scope,tags,open,address,owner,temp,built"})).await;
    assert_eq!(
        r.body,
        json!([{"id": "urn:q:2", "type": "House", "height": {"type": "Property", "value": 20}}])
    );
    // id: one URI or an array; it wins over idPattern.
    let r = post(json!({"type": "Query", "entities": [{"type": "Building,House", "id": ["urn:q:1", "urn:q:2"]}]})).await;
    assert_eq!(sorted(ids_of(&r.body)), ["urn:q:1", "urn:q:2"]);
    let r = post(json!({"type": "Query", "entities": [{"type": "Building", "id": "urn:q:1", "idPattern": "urn:q:3"}]})).await;
    assert_eq!(ids_of(&r.body), ["urn:q:1"]);
    for body in [
        json!({"type": "Query", "entities": []}),
        json!({"type": "Query", "entities": [{"type": "Building"}], "attrs": []}),
        json!({"type": "Query", "entities": [{"type": "Building"}], "pick": []}),
        json!({"type": "Query", "entities": [{"type": "Building"}], "q": 42}),
        json!({"type": "Query", "entities": [{"type": "Building"}], "join": "inline", "joinLevel": 0}),
        json!({"type": "Query", "entities": [{"type": "Building"}],
               "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"}}),
        json!({"type": "NotQuery", "entities": [{"type": "Building"}]}),
        json!({"type": "Query", "entities": [{"id": "urn:q:1"}]}),
        json!({"type": "Query", "entities": [{"type": "Building", "id": "not a uri"}]}),
        json!({"type": "Query", "entities": [{"type": "Building", "id": ["urn:q:1", 5]}]}),
    ] {
        post(body.clone()).await.problem(400, "BadRequestData");
    }
}

/// Ordering by distance (clause 4.23.3, ETSI 423_01, 5243_01): `dist-asc`
/// and `dist-desc` from `orderFrom`, or from the `coordinates` of the
/// `ordering` member of a Query; no reference, or a collation, is
/// BadRequestData.
#[tokio::test]
async fn order_by_distance_and_the_ordering_member() {
    let s = Server::start().await;
    for (id, lon, lat) in [
        ("urn:o:near", 8.01, 40.01),
        ("urn:o:mid", 9.0, 41.0),
        ("urn:o:far", 10.0, 45.0),
    ] {
        s.create(json!({"id": id, "type": "Spot",
                        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}}))
            .await;
    }
    s.create(json!({"id": "urn:o:nowhere", "type": "Spot"}))
        .await;
    let near_first = ["urn:o:near", "urn:o:mid", "urn:o:far", "urn:o:nowhere"];
    let r = s
        .get("/entities?type=Spot&orderBy=location;dist-asc&orderFrom=%5B8,40%5D")
        .await;
    assert_eq!(ids_of(&r.body), near_first, "{}", r.text);
    let r = s
        .get("/entities?type=Spot&orderBy=location;dist-desc&orderFrom=%5B8,40%5D")
        .await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:o:far", "urn:o:mid", "urn:o:near", "urn:o:nowhere"],
        "an entity without the GeoProperty comes last"
    );
    let r = s
        .post(
            "/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Spot"}],
                    "ordering": {"orderBy": ["location;dist-asc"], "coordinates": [8, 40], "geometry": "Point"}}),
        )
        .await;
    assert_eq!(ids_of(&r.body), near_first, "{}", r.text);
    // orderGeometry names the reference's geometry type (clause 4.23).
    let line = "type=Spot&orderBy=location;dist-asc&orderFrom=%5B%5B8,40%5D,%5B8,40.02%5D%5D";
    let r = s
        .get(&format!("/entities?{line}&orderGeometry=LineString"))
        .await;
    assert_eq!(ids_of(&r.body), near_first, "{}", r.text);
    for query in [
        "type=Spot&orderBy=location;dist-asc",
        "type=Spot&orderBy=id;dist-asc&orderFrom=%5B8,40%5D",
        "type=Spot&orderBy=location;dist-asc&orderFrom=%5B8,40%5D&orderGeometry=LineString",
        "type=Spot&orderBy=location;dist-asc&orderFrom=%5B8,40%5D&orderGeometry=Circle",
        "type=Spot&orderBy=name&collation=und",
    ] {
        s.get(&format!("/entities?{query}"))
            .await
            .problem(400, "BadRequestData");
    }
    for ordering in [
        json!({"orderBy": ["location;dist-asc"]}),
        json!({"orderBy": ["location;dist-asc"], "coordinates": "8,40"}),
        json!({"orderBy": ["id;asc"], "geometry": 5}),
        json!({"orderBy": ["id;asc"], "collation": "de-u-co-phonebk"}),
    ] {
        s.post(
            "/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Spot"}], "ordering": ordering}),
        )
        .await
        .problem(400, "BadRequestData");
    }
}

/// expandValues (clause 4.9, example 12; ETSI 019_29_12/13): the unquoted
/// values of the listed attributes are expanded like vocab terms before
/// they are compared.
#[tokio::test]
async fn expand_values_expands_the_words_of_the_listed_attributes() {
    let s = Server::start().await;
    s.create(json!({"id": "urn:v:1", "type": "Shop",
                    "category": {"type": "VocabProperty", "vocab": "commercial"}}))
        .await;
    assert!(s.ids("type=Shop&q=category==commercial").await.is_empty());
    assert_eq!(
        s.ids("type=Shop&q=category==commercial&expandValues=category")
            .await,
        ["urn:v:1"]
    );
    assert!(
        s.ids("type=Shop&q=category==commercial&expandValues=other")
            .await
            .is_empty()
    );
    // jsonKeys: the values of those attributes are no JSON-LD, never
    // expanded (Table 6.4.3.2-1), in a Query body too.
    assert!(
        s.ids("type=Shop&q=category==commercial&expandValues=category&jsonKeys=category")
            .await
            .is_empty()
    );
    for (members, expected) in [
        (json!({"expandValues": ["category"]}), 1),
        (
            json!({"expandValues": "category", "jsonKeys": ["category"]}),
            0,
        ),
    ] {
        let mut body =
            json!({"type": "Query", "entities": [{"type": "Shop"}], "q": "category==commercial"});
        body.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        let r = s.post("/entityOperations/query", &body).await;
        assert_eq!(ids_of(&r.body).len(), expected, "{body}: {}", r.text);
    }
}

/// splitEntities (Table 6.4.3.2-1) is a boolean; without registrations
/// every entity is whole here, so both values select the same (the join of
/// parts is `federation::split_entities_are_joined_before_the_filters_apply`).
#[tokio::test]
async fn split_entities_is_a_boolean() {
    let s = city().await;
    assert_eq!(s.ids("type=House&splitEntities=false").await, ["urn:q:2"]);
    assert_eq!(s.ids("type=House&splitEntities=true").await, ["urn:q:2"]);
    s.get("/entities?type=House&splitEntities=maybe")
        .await
        .problem(400, "BadRequestData");
}

/// A street-management case, the street it was reported on and that
/// street's district (clause 4.5.23's Linking and Linked Entities).
async fn case_street_district(s: &Server) {
    s.create(json!({
        "id": "urn:ngsi-ld:District:tianhe", "type": "District",
        "name": {"type": "Property", "value": "Tianhe"},
        "seat": {"type": "Relationship", "object": "urn:ngsi-ld:Street:tiyu-xi"}
    }))
    .await;
    s.create(json!({
        "id": "urn:ngsi-ld:Street:tiyu-xi", "type": "Street",
        "name": {"type": "Property", "value": "Tiyu West Road"},
        "district": {"type": "Relationship", "object": "urn:ngsi-ld:District:tianhe"}
    }))
    .await;
    s.create(json!({
        "id": "urn:ngsi-ld:Case:1", "type": "Case",
        "status": {"type": "Property", "value": "open"},
        "street": {"type": "Relationship", "object": "urn:ngsi-ld:Street:tiyu-xi"},
        "route": {"type": "ListRelationship", "objectList": [
            {"object": "urn:ngsi-ld:Street:tiyu-xi"}, {"object": "urn:ngsi-ld:Street:unknown"}
        ]},
        "reporter": {"type": "Relationship", "object": "urn:ngsi-ld:Person:not-held"}
    }))
    .await;
}

/// A dense graph: each of six people knows each other one four times
/// over. Inlined six hops deep that would be 20^6 placements; an answer
/// holds at most 1,000 Linked Entities however they repeat.
#[tokio::test]
async fn a_dense_graph_inlines_at_most_the_answer_budget() {
    let s = Server::start().await;
    let id = |n: usize| format!("urn:ngsi-ld:Person:p{n}");
    for n in 0..6 {
        let knows: Vec<Value> = (0..6)
            .filter(|m| *m != n)
            .flat_map(|m| std::iter::repeat_n(json!({"object": id(m)}), 4))
            .collect();
        s.create(json!({"id": id(n), "type": "Person",
                        "name": {"type": "Property", "value": format!("p{n}")},
                        "knows": {"type": "ListRelationship", "objectList": knows}}))
            .await;
    }
    fn people(v: &Value) -> usize {
        match v {
            Value::Object(m) => {
                usize::from(m.get("type") == Some(&json!("Person")))
                    + m.values().map(people).sum::<usize>()
            }
            Value::Array(items) => items.iter().map(people).sum(),
            _ => 0,
        }
    }
    let e = s.entity(&id(0), "join=inline&joinLevel=6").await;
    let n = people(&e);
    assert!((21..=1001).contains(&n), "{n} people in the answer");
    let r = s.get("/entities?type=Person&join=inline&joinLevel=6").await;
    assert_eq!(r.status, 200);
    let n = people(&r.body);
    assert!((6 + 20..=6 + 1000).contains(&n), "{n} people in the answer");
}

#[tokio::test]
async fn join_inline_puts_linked_entities_inside_their_relationships() {
    let s = Server::start().await;
    case_street_district(&s).await;
    let case = "urn:ngsi-ld:Case:1";
    // Without join (or with @none) nothing is added.
    for p in ["", "join=@none", "joinLevel=2"] {
        let e = s.entity(case, p).await;
        assert!(e["street"].get("entity").is_none(), "{p}: {e}");
    }
    // One hop: the street inside `street`, the held streets of `route`
    // inside `entityList`, nothing for an entity not held here.
    let e = s.entity(case, "join=inline").await;
    let street = &e["street"]["entity"];
    assert_eq!(street["id"], "urn:ngsi-ld:Street:tiyu-xi", "{e}");
    assert_eq!(street["name"]["value"], "Tiyu West Road");
    assert!(
        street["district"].get("entity").is_none(),
        "one hop only: {e}"
    );
    assert_eq!(
        e["route"]["entityList"].as_array().map(Vec::len),
        Some(1),
        "{e}"
    );
    assert!(e["reporter"].get("entity").is_none(), "{e}");
    assert!(street.get("@context").is_none());
    // Two hops; the district's seat leads back to the street, which is on
    // the path already and is not retrieved again.
    let e = s.entity(case, "join=inline&joinLevel=3").await;
    let district = &e["street"]["entity"]["district"]["entity"];
    assert_eq!(district["name"]["value"], "Tianhe", "{e}");
    assert!(district["seat"].get("entity").is_none(), "a loop: {e}");
    // containedBy: the client has the street already.
    let e = s
        .entity(case, "join=inline&containedBy=urn:ngsi-ld:Street:tiyu-xi")
        .await;
    assert!(e["street"].get("entity").is_none(), "{e}");
    // Concise and keyValues: in keyValues the Linked Entity stands in for
    // the object.
    let e = s.entity(case, "join=inline&options=concise").await;
    assert_eq!(e["street"]["entity"]["name"], "Tiyu West Road", "{e}");
    let e = s.entity(case, "join=inline&options=keyValues").await;
    assert_eq!(e["street"]["name"], "Tiyu West Road", "{e}");
    assert_eq!(e["reporter"], "urn:ngsi-ld:Person:not-held");
    assert_eq!(
        e["route"],
        json!([{"id": "urn:ngsi-ld:Street:tiyu-xi", "type": "Street", "name": "Tiyu West Road",
                "district": "urn:ngsi-ld:District:tianhe"}, "urn:ngsi-ld:Street:unknown"]),
        "{e}"
    );
    // pick applies level by level (clause 4.21): a plain name at its own
    // level, the names in braces to the Linked Entity.
    let e = s.entity(case, "join=inline&pick=id,street,name").await;
    assert_eq!(e["street"]["entity"]["type"], "Street", "{e}");
    assert_eq!(e.get("status"), None, "{e}");
    let e = s
        .entity(
            case,
            &format!("join=inline&pick={}", enc("id,street{id,name}")),
        )
        .await;
    assert_eq!(
        e,
        json!({"id": case, "street": {"type": "Relationship", "object": "urn:ngsi-ld:Street:tiyu-xi",
            "entity": {"id": "urn:ngsi-ld:Street:tiyu-xi", "name": {"type": "Property", "value": "Tiyu West Road"}}}})
    );
    // Queries inline the Linked Entities of every entity of the page.
    let r = s.get("/entities?type=Case&join=inline").await;
    assert_eq!(
        r.body[0]["street"]["entity"]["type"], "Street",
        "{}",
        r.text
    );
    let r = s
        .post(
            "/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Case"}], "join": "inline", "joinLevel": 2}),
        )
        .await;
    assert_eq!(
        r.body[0]["street"]["entity"]["district"]["entity"]["id"], "urn:ngsi-ld:District:tianhe",
        "{}",
        r.text
    );
}

#[tokio::test]
async fn join_flat_appends_each_linked_entity_once() {
    let s = Server::start().await;
    case_street_district(&s).await;
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Retrieve answers an array, the entity first.
    let r = s.get("/entities/urn:ngsi-ld:Case:1?join=flat").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids(&r.body),
        ["urn:ngsi-ld:Case:1", "urn:ngsi-ld:Street:tiyu-xi"]
    );
    assert!(r.body[0]["street"].get("entity").is_none());
    let r = s
        .get("/entities/urn:ngsi-ld:Case:1?join=flat&joinLevel=5")
        .await;
    assert_eq!(
        ids(&r.body),
        [
            "urn:ngsi-ld:Case:1",
            "urn:ngsi-ld:Street:tiyu-xi",
            "urn:ngsi-ld:District:tianhe"
        ]
    );
    // An entity already in the page is not appended again; count and paging
    // are about the entities queried.
    let r = s
        .get("/entities?type=Case,Street&join=flat&joinLevel=3&count=true")
        .await;
    assert_eq!(
        ids(&r.body),
        [
            "urn:ngsi-ld:Case:1",
            "urn:ngsi-ld:Street:tiyu-xi",
            "urn:ngsi-ld:District:tianhe"
        ]
    );
    assert_eq!(r.header("NGSILD-Results-Count"), Some("2"));
    let r = s.get("/entities/urn:ngsi-ld:Case:1?join=flat").await;
    let r2 = s
        .req(
            reqwest::Method::GET,
            "/entities/urn:ngsi-ld:Case:1?join=flat",
        )
        .header("Accept", "application/geo+json")
        .send()
        .await;
    assert_eq!(r2.body["type"], "FeatureCollection", "{}", r2.text);
    assert_eq!(
        r2.body["features"].as_array().map(Vec::len),
        Some(ids(&r.body).len())
    );
}

#[tokio::test]
async fn join_parameters_are_checked() {
    let s = Server::start().await;
    case_street_district(&s).await;
    for p in [
        "join=deep",
        "join=inline&joinLevel=0",
        "join=inline&joinLevel=11",
        "join=inline&joinLevel=two",
        "join=flat&containedBy=not%20a%20uri",
    ] {
        s.get(&format!("/entities/urn:ngsi-ld:Case:1?{p}"))
            .await
            .problem(400, "BadRequestData");
        s.get(&format!("/entities?type=Case&{p}"))
            .await
            .problem(400, "BadRequestData");
    }
    s.post(
        "/entityOperations/query",
        &json!({"type": "Query", "entities": [{"type": "Case"}], "join": "sideways"}),
    )
    .await
    .problem(400, "BadRequestData");
}

/// A tower, a bus named after it, the buildings they manage, a park
/// operated by a managed building, and a building managed by both.
async fn managed_buildings(s: &Server) {
    let rel = |o: &str| json!({"type": "Relationship", "object": o});
    let name = |n: &str| json!({"type": "Property", "value": n});
    for e in [
        json!({"id": "urn:ngsi-ld:Building:tower", "type": "Building", "name": name("Canton Tower"),
               "floors": {"type": "Property", "value": 37}}),
        json!({"id": "urn:ngsi-ld:Vehicle:bus", "type": "Vehicle", "name": name("Canton Tower")}),
        json!({"id": "urn:ngsi-ld:Building:a", "type": "Building", "managedBy": rel("urn:ngsi-ld:Building:tower")}),
        json!({"id": "urn:ngsi-ld:Building:b", "type": "Building", "managedBy": rel("urn:ngsi-ld:Vehicle:bus")}),
        json!({"id": "urn:ngsi-ld:Building:c", "type": "Building",
               "managedBy": {"type": "ListRelationship", "objectList": [
                   {"object": "urn:ngsi-ld:Vehicle:gone"}, {"object": "urn:ngsi-ld:Building:tower"}]}}),
        json!({"id": "urn:ngsi-ld:Building:d", "type": "Building", "managedBy": rel("urn:ngsi-ld:Vehicle:gone"),
               "name": name("Canton Tower")}),
        json!({"id": "urn:ngsi-ld:Park:p", "type": "Park", "operator": rel("urn:ngsi-ld:Building:a")}),
    ] {
        s.create(e).await;
    }
}

#[tokio::test]
async fn linked_entity_terms_in_q_follow_relationships() {
    let s = Server::start().await;
    managed_buildings(&s).await;
    // Clause 5.7.2.4: linked terms come with Linked Entity retrieval.
    let q = |q: &str| format!("type=Building&join=inline&q={}", enc(q));
    let cases = [
        // Clause 4.9 example 13: the term holds through the target's name;
        // a target that is not held never matches, nor does a name of the
        // entity itself.
        ("managedBy{name}==\"Canton Tower\"", vec!["a", "b", "c"]),
        // Example 14: type hints restrict the targets considered.
        ("managedBy{Building:name}==\"Canton Tower\"", vec!["a", "c"]),
        ("managedBy{Vehicle:name}==\"Canton Tower\"", vec!["b"]),
        ("managedBy{Vehicle,Building:name}", vec!["a", "b", "c"]),
        ("managedBy{Park:name}", vec![]),
        // Other operators and combinations with plain terms.
        ("managedBy{floors}>30", vec!["a", "c"]),
        ("managedBy{floors}>40", vec![]),
        (
            "managedBy{name}~=\"^Canton\";managedBy==urn:ngsi-ld:Vehicle:bus",
            vec!["b"],
        ),
        ("managedBy{floors}|name", vec!["a", "c", "d", "tower"]),
    ];
    for (term, want) in cases {
        let want: Vec<String> = want
            .iter()
            .map(|w| format!("urn:ngsi-ld:Building:{w}"))
            .collect();
        assert_eq!(s.ids(&q(term)).await, want, "{term}");
        // POST query and count agree.
        let r = s
            .post(
                "/entityOperations/query?count=true",
                &json!({"type": "Query", "entities": [{"type": "Building"}], "q": term,
                        "join": "inline"}),
            )
            .await;
        assert_eq!(ids_of(&r.body), want, "POST {term}");
        assert_eq!(r.headers["ngsild-results-count"], want.len().to_string());
    }
    // Two hops: the park whose operator is managed by the tower.
    assert_eq!(
        s.ids(&format!(
            "type=Park&join=inline&joinLevel=2&q={}",
            enc("operator{managedBy{floors}}==37")
        ))
        .await,
        ["urn:ngsi-ld:Park:p"]
    );
    assert!(
        s.ids(&format!(
            "type=Park&join=flat&joinLevel=3&q={}",
            enc("operator{managedBy{floors}}==36")
        ))
        .await
        .is_empty()
    );
    // With join and orderBy the matches are the same.
    let r = s
        .get(&format!(
            "/entities?{}&orderBy=id",
            q("managedBy{Building:name}==\"Canton Tower\"")
        ))
        .await;
    assert_eq!(
        ids_of(&r.body),
        ["urn:ngsi-ld:Building:a", "urn:ngsi-ld:Building:c"]
    );
    assert_eq!(r.body[0]["managedBy"]["entity"]["floors"]["value"], 37);
}

#[tokio::test]
async fn linked_entity_terms_are_checked() {
    let s = Server::start().await;
    managed_buildings(&s).await;
    for bad in [
        "managedBy{name",
        "managedBy{}",
        "!managedBy{name}",
        "managedBy.since{name}",
    ] {
        s.get(&format!(
            "/entities?type=Building&join=inline&q={}",
            enc(bad)
        ))
        .await
        .problem(400, "BadRequestData");
    }
    // Clause 5.7.2.4 (ETSI 5722_01_03/04): without Linked Entity retrieval,
    // or deeper than it goes, a linked term is BadRequestData.
    for (params, term) in [
        ("", "managedBy{name}"),
        ("&join=@none", "managedBy{name}"),
        ("&join=inline&joinLevel=1", "operator{managedBy{name}}"),
        ("&join=flat", "operator{managedBy{name}}"),
    ] {
        s.get(&format!("/entities?type=Building{params}&q={}", enc(term)))
            .await
            .problem(400, "BadRequestData");
    }
    s.post(
        "/entityOperations/query",
        &json!({"type": "Query", "entities": [{"type": "Building"}], "q": "managedBy{name}"}),
    )
    .await
    .problem(400, "BadRequestData");
    assert_eq!(
        s.ids(&format!(
            "type=Park&join=inline&joinLevel=2&q={}",
            enc("operator{managedBy{name}}")
        ))
        .await,
        ["urn:ngsi-ld:Park:p"]
    );
    // Where a linked term is not for the place it is refused, not ignored:
    // purges (clause 5.6.21.4, ETSI 5621_01), the temporal API, csf.
    s.delete(&format!(
        "/entities?type=Building&q={}",
        enc("managedBy{name}")
    ))
    .await
    .problem(400, "BadRequestData");
    s.get(&format!(
        "/temporal/entities?type=Building&q={}",
        enc("managedBy{name}")
    ))
    .await
    .problem(400, "BadRequestData");
    s.get(&format!(
        "/entities?type=Building&csf={}",
        enc("managedBy{name}")
    ))
    .await
    .problem(400, "BadRequestData");
}

/// A building, the city it is located in and that city's country: the
/// two levels of Linked Entities of ETSI 018_20, 018_21, 019_20–019_23.
async fn building_city_country(s: &Server) {
    s.create(json!({
        "id": "urn:ngsi-ld:Country:cn", "type": "Country",
        "name": {"type": "Property", "value": "China"},
        "description": {"type": "Property", "value": "a country"}
    }))
    .await;
    s.create(json!({
        "id": "urn:ngsi-ld:City:gz", "type": "City",
        "name": {"type": "Property", "value": "Guangzhou"},
        "description": {"type": "Property", "value": "a city"},
        "isInCountry": {"type": "Relationship", "object": "urn:ngsi-ld:Country:cn"}
    }))
    .await;
    s.create(json!({
        "id": "urn:ngsi-ld:Building:tower", "type": "Building",
        "name": {"type": "Property", "value": "Canton Tower"},
        "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:gz"}
    }))
    .await;
}

#[tokio::test]
async fn linked_projections_apply_level_by_level() {
    let s = Server::start().await;
    building_city_country(&s).await;
    let tower = "urn:ngsi-ld:Building:tower";
    let rel = |object: &str, entity: Option<Value>| {
        let mut r = json!({"type": "Relationship", "object": object});
        if let Some(e) = entity {
            r["entity"] = e;
        }
        r
    };
    let prop = |v: &str| json!({"type": "Property", "value": v});
    let country = json!({"id": "urn:ngsi-ld:Country:cn", "type": "Country",
        "name": prop("China"), "description": prop("a country")});
    let retrieve = |params: String| {
        let s = &s;
        async move {
            let r = s.get(&format!("/entities/{}?{params}", enc(tower))).await;
            assert_eq!(r.status, 200, "{params}: {}", r.text);
            r.body
        }
    };
    // pick: the braces pick within the Linked Entity, which has only what
    // they name (no id or type unless named); a Relationship not picked is
    // not followed (018_20_01, 018_20_03).
    let e = retrieve(format!(
        "join=inline&joinLevel=2&pick={}",
        enc("id,locatedAt{id,name}")
    ))
    .await;
    assert_eq!(
        e,
        json!({"id": tower, "locatedAt": rel("urn:ngsi-ld:City:gz",
            Some(json!({"id": "urn:ngsi-ld:City:gz", "name": prop("Guangzhou")})))})
    );
    let two = enc("id,locatedAt{id,name,isInCountry{id,description}}");
    let e = retrieve(format!("join=inline&joinLevel=2&pick={two}")).await;
    assert_eq!(
        e["locatedAt"]["entity"],
        json!({"id": "urn:ngsi-ld:City:gz", "name": prop("Guangzhou"),
            "isInCountry": rel("urn:ngsi-ld:Country:cn", Some(json!({
                "id": "urn:ngsi-ld:Country:cn", "description": prop("a country")})))})
    );
    // Flat: the same projections, on the entities that follow (018_20_04).
    let e = retrieve(format!("join=flat&joinLevel=2&pick={two}")).await;
    assert_eq!(
        e,
        json!([
            {"id": tower, "locatedAt": rel("urn:ngsi-ld:City:gz", None)},
            {"id": "urn:ngsi-ld:City:gz", "name": prop("Guangzhou"),
             "isInCountry": rel("urn:ngsi-ld:Country:cn", None)},
            {"id": "urn:ngsi-ld:Country:cn", "description": prop("a country")}
        ])
    );
    // omit: `rel{...}` keeps rel and drops within the Linked Entity; what
    // the braces do not reach is whole (018_21_01, 018_21_03).
    let e = retrieve(format!(
        "join=inline&joinLevel=2&omit={}",
        enc("type,locatedAt{name}")
    ))
    .await;
    assert_eq!(
        e,
        json!({"id": tower, "name": prop("Canton Tower"),
            "locatedAt": rel("urn:ngsi-ld:City:gz", Some(json!({
                "id": "urn:ngsi-ld:City:gz", "type": "City", "description": prop("a city"),
                "isInCountry": rel("urn:ngsi-ld:Country:cn", Some(country.clone()))})))})
    );
    let e = retrieve(format!(
        "join=flat&joinLevel=2&omit={}",
        enc("type,locatedAt{name,isInCountry{description}}")
    ))
    .await;
    assert_eq!(
        e[2],
        json!({"id": "urn:ngsi-ld:Country:cn", "type": "Country", "name": prop("China")})
    );
    assert_eq!(e[1].get("name"), None, "{e}");
    // A plain name stays at its level (019_21_02): the city keeps its name.
    let r = s.get("/entities?type=Building&join=flat&omit=name").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body[0].get("name"), None, "{}", r.text);
    assert_eq!(r.body[1]["name"], prop("Guangzhou"), "{}", r.text);
    // The POST query takes the braces in its pick array.
    let r = s
        .post(
            "/entityOperations/query",
            &json!({"type": "Query", "entities": [{"type": "Building"}], "join": "inline",
                    "pick": ["id", "locatedAt{name}"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body[0]["locatedAt"]["entity"],
        json!({"name": prop("Guangzhou")}),
        "{}",
        r.text
    );
    // Braces need join, at most joinLevel deep (5711_01_03, 019_33), and
    // temporal reads take none (5731_01, 5741_01).
    for path in [
        format!("/entities/{}?pick={}", enc(tower), enc("locatedAt{name}")),
        format!(
            "/entities/{}?join=inline&pick={}",
            enc(tower),
            enc("locatedAt{isInCountry{name}}")
        ),
        format!(
            "/entities?type=Building&join=flat&joinLevel=1&omit={}",
            enc("locatedAt{isInCountry{name}}")
        ),
        format!("/entities?type=Building&omit={}", enc("locatedAt{name}")),
        format!(
            "/temporal/entities/{}?timerel=after&timeAt=2020-01-01T00:00:00Z&pick={}",
            enc(tower),
            enc("locatedAt{name}")
        ),
        format!(
            "/temporal/entities?type=Building&timerel=after&timeAt=2020-01-01T00:00:00Z&pick={}",
            enc("locatedAt{name}")
        ),
    ] {
        s.get(&path).await.problem(400, "BadRequestData");
    }
}
