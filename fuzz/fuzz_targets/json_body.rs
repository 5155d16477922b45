//! Reads arbitrary bytes with the write path's JSON parser and with
//! `serde_json`: both must give the same verdict and the same value (floats
//! to a unit in the last place, `serde_json`'s own leeway), and an entity
//! parsed from either tree must come out the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ngsi_model::json::{Json, JsonDoc, equal_but_for_float_rounding};
use ngsi_model::parse::{DefaultVocab, EntityRequirements, ParseLimits, parse_entity};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // serde_json stops at 128 levels; stay below it so the verdicts compare.
    let ours = Json::from_slice_nested(data, 100);
    let theirs = serde_json::from_slice::<Value>(data);
    let deep = ours.as_ref().err().is_some_and(|e| e.to_string().contains("nests too deeply"));
    if deep {
        return;
    }
    assert_eq!(ours.is_ok(), theirs.is_ok(), "{ours:?} {theirs:?}");
    let (Ok(ours), Ok(theirs)) = (ours, theirs) else {
        return;
    };
    assert!(equal_but_for_float_rounding(&ours.to_value(), &theirs));
    let req = EntityRequirements { id: true, types: true };
    let a = parse_entity(&ours, &DefaultVocab, req, ParseLimits::default());
    let b = parse_entity(&theirs, &DefaultVocab, req, ParseLimits::default());
    assert_eq!(a.is_ok(), b.is_ok(), "{a:?} {b:?}");
});
