//! The georel grammar.

use crate::{GeoRel, NearDistance, parse_georel};

/// Parses `input`; `expect` is the Display form of the result (which must
/// re-parse to the same value) or the error message.
#[track_caller]
fn check(input: &str, expect: &str) {
    let actual = match parse_georel(input) {
        Ok(rel) => {
            let shown = rel.to_string();
            assert_eq!(
                parse_georel(&shown),
                Ok(rel),
                "display round trip of {input}"
            );
            shown
        }
        Err(e) => e.to_string(),
    };
    assert_eq!(actual, expect, "input: {input}");
}

#[test]
fn valid() {
    check("near;maxDistance==2000", "near;maxDistance==2000");
    check("near;minDistance==15.5", "near;minDistance==15.5");
    check("near;maxDistance==007", "near;maxDistance==7");
    check("near;maxDistance==0.000001", "near;maxDistance==0.000001");
    // An RFC 8259 number may have an exponent (clause 4.10).
    check("near;maxDistance==1e3", "near;maxDistance==1000");
    check("near;minDistance==1.5E+3", "near;minDistance==1500");
    check("near;maxDistance==25e-1", "near;maxDistance==2.5");
    check("within", "within");
    check("contains", "contains");
    check("intersects", "intersects");
    check("equals", "equals");
    check("disjoint", "disjoint");
    check("overlaps", "overlaps");
    assert_eq!(
        "near;maxDistance==2000".parse::<GeoRel>(),
        Ok(GeoRel::Near(NearDistance::Max(2000.0)))
    );
}

#[test]
fn invalid() {
    check("", "invalid georel at byte 0: expected a geo relationship");
    check(
        "Within",
        r#"invalid georel at byte 0: unknown geo relationship "Within" (expected near, within, contains, intersects, equals, disjoint or overlaps)"#,
    );
    check(
        " within",
        r#"invalid georel at byte 0: unknown geo relationship " within" (expected near, within, contains, intersects, equals, disjoint or overlaps)"#,
    );
    check(
        "within;maxDistance==5",
        "invalid georel at byte 6: within takes no modifier",
    );
    check(
        "near",
        "invalid georel at byte 4: near needs a distance: near;maxDistance==<metres> or near;minDistance==<metres>",
    );
    check(
        "near;",
        "invalid georel at byte 5: expected maxDistance or minDistance after near;",
    );
    check(
        "near;distance==5",
        "invalid georel at byte 5: expected maxDistance or minDistance after near;",
    );
    check(
        "near;maxdistance==5",
        "invalid georel at byte 5: expected maxDistance or minDistance after near;",
    );
    check(
        "near;maxDistance==0",
        "invalid georel at byte 18: a distance must be a positive number, not 0",
    );
    check(
        "near;minDistance==0.00",
        "invalid georel at byte 18: a distance must be a positive number, not 0",
    );
    // NGSIv2 wrote `near;maxDistance:1000`; NGSI-LD requires `==`.
    check(
        "near;maxDistance:1000",
        "invalid georel at byte 16: expected == after maxDistance",
    );
    check(
        "near;maxDistance=1000",
        "invalid georel at byte 16: expected == after maxDistance",
    );
    check(
        "near;maxDistance==",
        "invalid georel at byte 18: expected a distance in metres (a non-negative number)",
    );
    check(
        "near;maxDistance==-5",
        "invalid georel at byte 18: expected a distance in metres (a non-negative number)",
    );
    check(
        "near;maxDistance==+5",
        "invalid georel at byte 18: expected a distance in metres (a non-negative number)",
    );
    check(
        "near;maxDistance==5.",
        "invalid georel at byte 20: expected digits after the decimal point",
    );
    check(
        "near;maxDistance==1e",
        "invalid georel at byte 20: expected digits in the exponent",
    );
    check(
        "near;maxDistance==1e-",
        "invalid georel at byte 21: expected digits in the exponent",
    );
    check(
        "near;maxDistance==1e-400",
        "invalid georel at byte 18: a distance must be a positive number, not 0",
    );
    check(
        "near;maxDistance==1e400",
        "invalid georel at byte 18: distance is too large",
    );
    check(
        "near;maxDistance==2000 ",
        "invalid georel at byte 22: unexpected character after the distance",
    );
    check(
        "near;maxDistance==NaN",
        "invalid georel at byte 18: expected a distance in metres (a non-negative number)",
    );
    check(
        "near;minDistance==500;maxDistance==10000",
        "invalid georel at byte 21: near takes exactly one of maxDistance or minDistance",
    );
    check(
        &format!("near;maxDistance=={}", "9".repeat(400)),
        "invalid georel at byte 18: distance is too large",
    );
}
