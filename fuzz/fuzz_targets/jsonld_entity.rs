//! Processes arbitrary JSON as a user @context, then parses a fixed entity
//! with it (and arbitrary JSON as an entity with the core context): nothing
//! may panic, and whatever an accepted context expands must compact back.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use ngsi_model::Terms;
use ngsi_model::parse::{EntityRequirements, ParseLimits, parse_entity};

struct Ctx(jsonld::Context);

impl Terms for Ctx {
    fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
        self.0.expand_term(term)
    }
    fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        self.0.compact_iri(iri)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let req = EntityRequirements { id: true, types: true };
    let _ = parse_entity(&value, &ngsi_model::parse::DefaultVocab, req, ParseLimits::default());
    if let Ok(ctx) = jsonld::Context::from_value(&value) {
        for term in ["name", "level", "type", "Vehicle", "a:b", "https://example.org/x"] {
            let iri = ctx.expand_term(term).into_owned();
            let back = ctx.compact_iri(&iri).into_owned();
            assert_eq!(ctx.expand_term(&back), iri.as_str(), "{term} -> {iri} -> {back}");
        }
        let doc = serde_json::json!({"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle",
            "name": {"type": "Property", "value": "粤A12345"}, "level": 3});
        let _ = parse_entity(&doc, &Ctx(ctx), req, ParseLimits::default());
    }
});
