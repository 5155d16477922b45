//! Attribute lists (`attrs`, clause 6.3) and the attribute projection
//! language of `pick` and `omit` (clause 4.21).
//!
//! ```text
//! attr-list  ::= attr ( "," attr )*
//! projection ::= term ( ( "," | "|" ) term )*
//! term       ::= attr ( "{" projection "}" )?   ; attributes of the linked entity
//! attr       ::= name | uri                     ; clause 4.6.2 name, or an absolute URI
//! ```

use std::fmt;

use crate::cursor::{Cursor, is_name, is_uri};
use crate::error::ParseError;

/// Parses a comma-separated attribute list such as `attrs=speed,brandName`.
/// Blanks around names are ignored; empty entries are an error.
pub fn parse_attr_list(input: &str) -> Result<Vec<String>, ParseError> {
    let mut c = Cursor::new(input, "attribute list")?;
    let mut out = Vec::new();
    loop {
        out.push(attr(&mut c, &[','])?);
        c.skip_ws();
        if c.at_end() {
            return Ok(out);
        }
        if !c.eat(",") {
            return Err(c.err(format!("expected ',', found {}", c.found())));
        }
    }
}

fn attr(c: &mut Cursor<'_>, stops: &[char]) -> Result<String, ParseError> {
    c.skip_ws();
    let start = c.pos;
    while matches!(c.peek(), Some(ch) if !(ch.is_whitespace() || ch.is_control() || stops.contains(&ch)))
    {
        c.bump();
    }
    let name = &c.src[start..c.pos];
    if name.is_empty() {
        return Err(c.err(format!("expected an attribute name, found {}", c.found())));
    }
    if !(is_name(name) || is_uri(name)) {
        return Err(c.err_at(start, format!("'{name}' is neither a valid name nor a URI")));
    }
    Ok(name.to_owned())
}

/// One projected attribute of `pick` / `omit`: `observation{temperature}`
/// projects `observation` and, within the entity it links to (Linked Entity
/// Retrieval, clause 4.5.23), `temperature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// The attribute name (expanded to an IRI by the broker).
    pub name: String,
    /// The projection inside the linked entity; empty when none was given.
    pub linked: Vec<Projection>,
}

/// Parses a `pick` or `omit` parameter (clause 4.21), for example
/// `temperature,observation{temperature|humidity}`.
pub fn parse_projection(input: &str) -> Result<Vec<Projection>, ParseError> {
    let mut c = Cursor::new(input, "projection")?;
    let out = projection_list(&mut c)?;
    c.skip_ws();
    if !c.at_end() {
        return Err(c.err(format!("unexpected {}", c.found())));
    }
    Ok(out)
}

const PROJECTION_STOPS: [char; 4] = [',', '|', '{', '}'];

fn projection_list(c: &mut Cursor<'_>) -> Result<Vec<Projection>, ParseError> {
    let mut out = Vec::new();
    loop {
        let name = attr(c, &PROJECTION_STOPS)?;
        c.skip_ws();
        let mut linked = Vec::new();
        if c.eat("{") {
            c.enter()?;
            linked = projection_list(c)?;
            c.leave();
            c.skip_ws();
            if !c.eat("}") {
                return Err(c.err(format!("expected '}}', found {}", c.found())));
            }
            c.skip_ws();
        }
        out.push(Projection { name, linked });
        if !(c.eat(",") || c.eat("|")) {
            return Ok(out);
        }
    }
}

impl Projection {
    /// Replaces every name, at every depth, with `f(name)`.
    pub fn map_names(&mut self, f: &mut dyn FnMut(&str) -> String) {
        self.name = f(&self.name);
        for p in &mut self.linked {
            p.map_names(f);
        }
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.linked.is_empty() {
            f.write_str("{")?;
            for (i, p) in self.linked.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{p}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses an attribute list and compares the names joined by `|`, or the
    /// error.
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = match parse_attr_list(input) {
            Ok(names) => names.join("|"),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    /// Parses a projection and compares its print, or the error.
    #[track_caller]
    fn check_projection(input: &str, expected: &str) {
        let got = match parse_projection(input) {
            Ok(ps) => ps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn attr_lists() {
        check("speed", "speed");
        check("speed,brandName", "speed|brandName");
        check("speed, brandName ", "speed|brandName");
        check(
            "https://example.org/speed,ex:b",
            "https://example.org/speed|ex:b",
        );
        check("", "error: attribute list is empty at byte 0");
        check(
            "a,",
            "error: expected an attribute name, found end of input at byte 2",
        );
        check(
            ",a",
            "error: expected an attribute name, found ',' at byte 0",
        );
        check("a b", "error: expected ',', found 'b' at byte 2");
        check(
            "a-b",
            "error: 'a-b' is neither a valid name nor a URI at byte 0",
        );
    }

    #[test]
    fn projections() {
        check_projection("temperature", "temperature");
        check_projection("temperature,humidity", "temperature,humidity");
        check_projection("temperature|humidity", "temperature,humidity");
        check_projection(
            "observation{temperature,humidity}",
            "observation{temperature,humidity}",
        );
        check_projection("a{b{c|d}},e", "a{b{c,d}},e");
        check_projection(
            "a{",
            "error: expected an attribute name, found end of input at byte 2",
        );
        check_projection("a{b", "error: expected '}', found end of input at byte 3");
        check_projection("a}", "error: unexpected '}' at byte 1");
        check_projection(
            "{a}",
            "error: expected an attribute name, found '{' at byte 0",
        );
        check_projection(
            &format!("{}x{}", "a{".repeat(65), "}".repeat(65)),
            "error: nesting deeper than 64 levels at byte 130",
        );
        let mut p = parse_projection("a{b}").unwrap();
        p[0].map_names(&mut |n| n.to_uppercase());
        assert_eq!(p[0].to_string(), "A{B}");
    }
}
