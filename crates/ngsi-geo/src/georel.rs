//! The `georel` member of a geo-query (ETSI GS CIM 009 v1.9.1, clause 4.10).
//!
//! Grammar (ABNF, as in clause 4.10; no whitespace is allowed anywhere):
//!
//! ```text
//! georel        = nearRel / withinRel / containsRel / intersectsRel
//!               / equalsRel / disjointRel / overlapsRel
//! nearRel       = "near" ";" distance "==" PositiveNumber
//! distance      = "maxDistance" / "minDistance"
//! withinRel     = "within"
//! containsRel   = "contains"
//! intersectsRel = "intersects"
//! equalsRel     = "equals"
//! disjointRel   = "disjoint"
//! overlapsRel   = "overlaps"
//! PositiveNumber = 1*DIGIT ["." 1*DIGIT] [("e" / "E") ["+" / "-"] 1*DIGIT]   ; metres
//! ```
//!
//! `near` takes exactly one distance modifier: the grammar has no production
//! for `near;minDistance==a;maxDistance==b`, so that form is rejected. A
//! PositiveNumber is an RFC 8259 number without the minus sign and non-zero
//! (clause 4.10, "excluding the number 0"), so a zero distance is rejected,
//! as are signs, `inf` and `NaN`; an exponent (`1e3`) is a number.

use std::fmt;

use crate::GeoError;

/// The distance condition of a `near` geo-query, in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NearDistance {
    /// `near;maxDistance==d`: the entity's geometry is at most `d` metres from
    /// the reference geometry.
    Max(f64),
    /// `near;minDistance==d`: the entity's geometry is at least `d` metres from
    /// the reference geometry.
    Min(f64),
}

/// A geo relationship: how an entity's geometry must relate to the reference
/// geometry of a geo-query. In the descriptions, *A* is the entity's
/// GeoProperty value and *B* the query's reference geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GeoRel {
    /// A is within (or beyond) a distance of B.
    Near(NearDistance),
    /// A is within B (OGC `within`: A's interior meets B's interior and no
    /// point of A lies outside B).
    Within,
    /// A contains B (OGC `contains`, the converse of `within`).
    Contains,
    /// A and B share at least one point.
    Intersects,
    /// A and B are the same point set (OGC topological equality).
    Equals,
    /// A and B share no point.
    Disjoint,
    /// A and B overlap (OGC `overlaps`: same dimension, interiors meet and
    /// neither contains the other).
    Overlaps,
}

impl GeoRel {
    /// The relationship name, e.g. `"near"` or `"within"`.
    pub fn name(&self) -> &'static str {
        match self {
            GeoRel::Near(_) => "near",
            GeoRel::Within => "within",
            GeoRel::Contains => "contains",
            GeoRel::Intersects => "intersects",
            GeoRel::Equals => "equals",
            GeoRel::Disjoint => "disjoint",
            GeoRel::Overlaps => "overlaps",
        }
    }
}

impl fmt::Display for GeoRel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // f64's Display prints the shortest decimal that reads back to the
            // same value and never uses an exponent, so it re-parses exactly.
            GeoRel::Near(NearDistance::Max(d)) => write!(f, "near;maxDistance=={d}"),
            GeoRel::Near(NearDistance::Min(d)) => write!(f, "near;minDistance=={d}"),
            other => f.write_str(other.name()),
        }
    }
}

impl std::str::FromStr for GeoRel {
    type Err = GeoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_georel(s)
    }
}

fn error(position: usize, reason: impl Into<String>) -> GeoError {
    GeoError::InvalidGeorel {
        position,
        reason: reason.into(),
    }
}

/// Parses a `georel` value such as `near;maxDistance==2000` or `within`.
/// Errors carry the byte offset of the problem.
pub fn parse_georel(input: &str) -> Result<GeoRel, GeoError> {
    let (head, rest) = match input.find(';') {
        Some(i) => (&input[..i], Some(i)),
        None => (input, None),
    };
    let simple = match head {
        "near" => None,
        "within" => Some(GeoRel::Within),
        "contains" => Some(GeoRel::Contains),
        "intersects" => Some(GeoRel::Intersects),
        "equals" => Some(GeoRel::Equals),
        "disjoint" => Some(GeoRel::Disjoint),
        "overlaps" => Some(GeoRel::Overlaps),
        "" => return Err(error(0, "expected a geo relationship")),
        other => {
            return Err(error(
                0,
                format!(
                    "unknown geo relationship \"{}\" (expected near, within, contains, \
                     intersects, equals, disjoint or overlaps)",
                    crate::geometry::truncate(other)
                ),
            ));
        }
    };
    if let Some(rel) = simple {
        return match rest {
            None => Ok(rel),
            Some(at) => Err(error(at, format!("{} takes no modifier", rel.name()))),
        };
    }
    let Some(semicolon) = rest else {
        return Err(error(
            input.len(),
            "near needs a distance: near;maxDistance==<metres> or near;minDistance==<metres>",
        ));
    };
    let modifier_start = semicolon + 1;
    let modifier = &input[modifier_start..];
    let (name, after_name) = if let Some(r) = modifier.strip_prefix("maxDistance") {
        ("maxDistance", r)
    } else if let Some(r) = modifier.strip_prefix("minDistance") {
        ("minDistance", r)
    } else {
        return Err(error(
            modifier_start,
            "expected maxDistance or minDistance after near;",
        ));
    };
    let op_start = modifier_start + name.len();
    let Some(number) = after_name.strip_prefix("==") else {
        return Err(error(op_start, format!("expected == after {name}")));
    };
    let number_start = op_start + 2;
    let distance = parse_distance(number, number_start)?;
    Ok(GeoRel::Near(if name == "maxDistance" {
        NearDistance::Max(distance)
    } else {
        NearDistance::Min(distance)
    }))
}

/// Parses `1*DIGIT ["." 1*DIGIT] [exponent]` spanning all of `text`.
fn parse_distance(text: &str, start: usize) -> Result<f64, GeoError> {
    let bytes = text.as_bytes();
    let integer_digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if integer_digits == 0 {
        return Err(error(
            start,
            "expected a distance in metres (a non-negative number)",
        ));
    }
    let mut end = integer_digits;
    if bytes.get(end) == Some(&b'.') {
        let fraction_digits = bytes[end + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if fraction_digits == 0 {
            return Err(error(
                start + end + 1,
                "expected digits after the decimal point",
            ));
        }
        end += 1 + fraction_digits;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        let exponent_digits = bytes[end + 1 + sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if exponent_digits == 0 {
            return Err(error(
                start + end + 1 + sign,
                "expected digits in the exponent",
            ));
        }
        end += 1 + sign + exponent_digits;
    }
    if end < bytes.len() {
        let reason = if bytes[end] == b';' {
            "near takes exactly one of maxDistance or minDistance"
        } else {
            "unexpected character after the distance"
        };
        return Err(error(start + end, reason));
    }
    match text.parse::<f64>() {
        Ok(0.0) => Err(error(start, "a distance must be a positive number, not 0")),
        Ok(d) if d.is_finite() => Ok(d),
        _ => Err(error(start, "distance is too large")),
    }
}
