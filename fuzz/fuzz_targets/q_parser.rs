//! Parses arbitrary UTF-8 as a `q` query, scopeQ, type expression and
//! attribute list; whatever parses must print to a form that parses back to
//! the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = ngsi_query::parse_q(input) {
        let printed = q.to_string();
        assert_eq!(ngsi_query::parse_q(&printed).as_ref(), Ok(&q), "{printed}");
    }
    if let Ok(s) = ngsi_query::parse_scope_q(input) {
        let printed = s.to_string();
        assert_eq!(ngsi_query::parse_scope_q(&printed).as_ref(), Ok(&s), "{printed}");
    }
    if let Ok(t) = ngsi_query::parse_type_expr(input) {
        let printed = t.to_string();
        assert_eq!(ngsi_query::parse_type_expr(&printed).as_ref(), Ok(&t), "{printed}");
    }
    let _ = ngsi_query::parse_attr_list(input);
    let _ = ngsi_query::parse_projection(input);
});
