//! Reads arbitrary bytes with the write path's JSON parser and with
//! `serde_json`: both must give the same verdict and the same value (floats
//! to a unit in the last place, `serde_json`'s own leeway), and an entity
//! parsed from either tree must come out the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ngsi_model::json::{Json, JsonDoc};
use ngsi_model::parse::{DefaultVocab, EntityRequirements, ParseLimits, parse_entity};
use serde_json::Value;

/// Equal, but for floats a unit in the last place apart.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

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
    assert!(same(&ours.to_value(), &theirs));
    let req = EntityRequirements { id: true, types: true };
    let a = parse_entity(&ours, &DefaultVocab, req, ParseLimits::default());
    let b = parse_entity(&theirs, &DefaultVocab, req, ParseLimits::default());
    assert_eq!(a.is_ok(), b.is_ok(), "{a:?} {b:?}");
});
