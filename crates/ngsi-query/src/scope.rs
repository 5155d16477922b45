//! Scopes (clause 4.18) and the scope query language `scopeQ` (clause 4.19).
//!
//! ```text
//! scope-q   ::= or-expr
//! or-expr   ::= and-expr ( ( "|" | "," ) and-expr )*
//! and-expr  ::= primary ( ";" primary )*     ; ext: the spec asks for parentheses
//! primary   ::= "(" or-expr ")" | pattern    ; ext: parentheses nest (depth <= 64)
//! pattern   ::= "/#"                          ; any entity that has a scope
//!             | "/"? level ( "/" level )* "/#"?
//! level     ::= "+"                           ; exactly one level, any name
//!             | letter ( letter | digit | "_" )*
//! ```
//!
//! The leading `/` is optional in patterns as it is in scope values
//! (clause 4.18 `Scope = [/] ScopeLevel ...`; clause 4.19 example 5 writes
//! `CompanyB`), so `Madrid` and `/Madrid` are the same scope.

use std::fmt;

use crate::cursor::{Connectives, Cursor, parse_connected};
use crate::error::ParseError;

/// A parsed `scopeQ`. `And` and `Or` hold at least two operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeQuery {
    /// The entity has scopes matching every operand (`;`).
    And(Vec<ScopeQuery>),
    /// The entity has a scope matching some operand (`|` or `,`).
    Or(Vec<ScopeQuery>),
    /// One scope pattern.
    Pattern(ScopePattern),
}

/// One scope pattern such as `/Madrid/+/ParqueNorte` or `/Madrid/Gardens/#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern {
    /// The levels, outermost first; empty only for `/#`.
    pub levels: Vec<ScopeLevel>,
    /// Trailing `/#`: the scope itself and every scope below it (clause
    /// 4.19: "matches the given scope and the whole hierarchy of scopes
    /// below").
    pub descendants: bool,
}

/// One level of a scope pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeLevel {
    /// A level with this exact name.
    Name(String),
    /// `+`: any single level.
    Any,
}

/// Parses a `scopeQ` parameter (already percent-decoded).
pub fn parse_scope_q(input: &str) -> Result<ScopeQuery, ParseError> {
    parse_connected(input, "scope query", |c| {
        pattern(c).map(ScopeQuery::Pattern)
    })
}

impl Connectives for ScopeQuery {
    fn and(items: Vec<Self>) -> Self {
        ScopeQuery::And(items)
    }
    fn or(items: Vec<Self>) -> Self {
        ScopeQuery::Or(items)
    }
}

fn level_name(c: &mut Cursor<'_>) -> Option<String> {
    let start = c.pos;
    if !matches!(c.peek(), Some(ch) if ch.is_alphabetic()) {
        return None;
    }
    c.bump();
    while matches!(c.peek(), Some(ch) if ch.is_alphanumeric() || ch == '_') {
        c.bump();
    }
    Some(c.src[start..c.pos].to_owned())
}

fn pattern(c: &mut Cursor<'_>) -> Result<ScopePattern, ParseError> {
    if c.eat("/#") {
        return Ok(ScopePattern {
            levels: Vec::new(),
            descendants: true,
        });
    }
    c.eat("/");
    let mut levels = Vec::new();
    loop {
        if c.eat("+") {
            levels.push(ScopeLevel::Any);
        } else if let Some(name) = level_name(c) {
            levels.push(ScopeLevel::Name(name));
        } else {
            return Err(c.err(format!("expected a scope level, found {}", c.found())));
        }
        if c.eat("/#") {
            return Ok(ScopePattern {
                levels,
                descendants: true,
            });
        }
        if !c.eat("/") {
            return Ok(ScopePattern {
                levels,
                descendants: false,
            });
        }
    }
}

/// Checks a scope value of an entity (clause 4.18): `[/]level(/level)*` with
/// levels made of a letter then letters, digits and underscores, or the
/// NGSI-LD Null `urn:ngsi-ld:null`.
pub fn validate_scope(scope: &str) -> Result<(), ParseError> {
    if scope == "urn:ngsi-ld:null" {
        return Ok(());
    }
    let mut c = Cursor::new(scope, "scope")?;
    c.eat("/");
    loop {
        if level_name(&mut c).is_none() {
            return Err(c.err(format!("expected a scope level, found {}", c.found())));
        }
        if c.at_end() {
            return Ok(());
        }
        if !c.eat("/") {
            return Err(c.err(format!("unexpected {} in scope", c.found())));
        }
    }
}

fn scope_levels(scope: &str) -> impl Iterator<Item = &str> {
    scope.strip_prefix('/').unwrap_or(scope).split('/')
}

impl ScopePattern {
    /// Whether one scope value matches this pattern.
    pub fn matches_scope(&self, scope: &str) -> bool {
        if scope.is_empty() || scope == "urn:ngsi-ld:null" {
            return false;
        }
        let mut levels = scope_levels(scope);
        for want in &self.levels {
            match (want, levels.next()) {
                (_, None) => return false,
                (ScopeLevel::Any, Some(_)) => {}
                (ScopeLevel::Name(n), Some(got)) if n == got => {}
                _ => return false,
            }
        }
        self.descendants || levels.next().is_none()
    }
}

impl ScopeQuery {
    /// Whether an entity with these scope values matches. An entity without
    /// scopes matches nothing (clause 4.19: `/#` matches "only explicitly
    /// specified scopes"). In an AND group each operand may be satisfied by a
    /// different scope of the entity.
    pub fn matches(&self, scopes: &[&str]) -> bool {
        match self {
            ScopeQuery::And(items) => items.iter().all(|q| q.matches(scopes)),
            ScopeQuery::Or(items) => items.iter().any(|q| q.matches(scopes)),
            ScopeQuery::Pattern(p) => scopes.iter().any(|s| p.matches_scope(s)),
        }
    }
}

impl fmt::Display for ScopeQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[ScopeQuery], sep: &str) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match item {
                    ScopeQuery::Pattern(p) => write!(f, "{p}")?,
                    nested => write!(f, "({nested})")?,
                }
            }
            Ok(())
        }
        match self {
            ScopeQuery::And(items) => list(f, items, ";"),
            ScopeQuery::Or(items) => list(f, items, "|"),
            ScopeQuery::Pattern(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for level in &self.levels {
            match level {
                ScopeLevel::Name(n) => write!(f, "/{n}")?,
                ScopeLevel::Any => f.write_str("/+")?,
            }
        }
        if self.descendants {
            f.write_str("/#")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and compares the canonical print, or the error.
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = match parse_scope_q(input) {
            Ok(q) => {
                let printed = q.to_string();
                assert_eq!(
                    parse_scope_q(&printed).as_ref(),
                    Ok(&q),
                    "round trip {printed:?}"
                );
                printed
            }
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    /// Evaluates `query` against each scope set of `cases` (scopes separated
    /// by blanks, `-` for none) and compares the indexes that match.
    #[track_caller]
    fn check_match(query: &str, expected: &str) {
        let cases = [
            "/Madrid",                     // 0
            "/Madrid/Gardens",             // 1
            "/Madrid/Gardens/ParqueNorte", // 2
            "/Madrid/Sights/ParqueNorte",  // 3
            "/Madrid/Districts /CompanyA", // 4
            "/CompanyB",                   // 5
            "-",                           // 6
            "Madrid/Gardens/ParqueSur",    // 7
        ];
        let q = parse_scope_q(query).unwrap();
        let got: Vec<String> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let scopes: Vec<&str> = c.split(' ').filter(|s| *s != "-").collect();
                q.matches(&scopes)
            })
            .map(|(i, _)| i.to_string())
            .collect();
        assert_eq!(got.join(" "), expected, "query: {query:?}");
    }

    #[test]
    fn parse() {
        check("/Madrid", "/Madrid");
        check("/Madrid/Gardens/#", "/Madrid/Gardens/#");
        check("/Madrid/+/ParqueNorte", "/Madrid/+/ParqueNorte");
        check("/#", "/#");
        check(
            "(/Madrid/Districts;/CompanyA)",
            "/Madrid/Districts;/CompanyA",
        );
        check(
            "(/Madrid/Districts;/CompanyA)|CompanyB",
            "(/Madrid/Districts;/CompanyA)|/CompanyB",
        );
        check(
            "(/Madrid/Districts;/CompanyA),/CompanyB",
            "(/Madrid/Districts;/CompanyA)|/CompanyB",
        );
        check("/a|(/b|/c)", "/a|(/b|/c)");
        check("/+/#", "/+/#");
        check("", "error: scope query is empty at byte 0");
        check(
            "/",
            "error: expected a scope level, found end of input at byte 1",
        );
        check(
            "/a/",
            "error: expected a scope level, found end of input at byte 3",
        );
        check(
            "/a//b",
            "error: expected a scope level, found '/' at byte 3",
        );
        check("/a/#/b", "error: unexpected '/' at byte 4");
        check("/1a", "error: expected a scope level, found '1' at byte 1");
        check("(/a", "error: expected ')', found end of input at byte 3");
        check("/a b", "error: unexpected 'b' at byte 3");
        check(
            &format!("{}/a{}", "(".repeat(65), ")".repeat(65)),
            "error: nesting deeper than 64 levels at byte 65",
        );
    }

    #[test]
    fn matching() {
        check_match("/Madrid", "0");
        check_match("Madrid", "0");
        check_match("/Madrid/#", "0 1 2 3 4 7");
        check_match("/Madrid/Gardens/#", "1 2 7");
        check_match("/Madrid/+/ParqueNorte", "2 3");
        check_match("/Madrid/+", "1 4");
        check_match("/+/+/#", "1 2 3 4 7");
        check_match("/#", "0 1 2 3 4 5 7");
        check_match("(/Madrid/Districts;/CompanyA)", "4");
        check_match("(/Madrid/Districts;/CompanyA)|/CompanyB", "4 5");
        check_match("/CompanyA,/CompanyB", "4 5");
        check_match("/Nowhere", "");
    }

    #[test]
    fn scope_values() {
        for ok in [
            "/Madrid",
            "Madrid",
            "/Madrid/Gardens/ParqueNorte",
            "/a_1/é",
            "urn:ngsi-ld:null",
        ] {
            assert_eq!(validate_scope(ok), Ok(()), "{ok}");
        }
        let bad = |s: &str| validate_scope(s).unwrap_err().to_string();
        assert_eq!(bad(""), "scope is empty at byte 0");
        assert_eq!(
            bad("/"),
            "expected a scope level, found end of input at byte 1"
        );
        assert_eq!(
            bad("/a/"),
            "expected a scope level, found end of input at byte 3"
        );
        assert_eq!(bad("/a/#"), "expected a scope level, found '#' at byte 3");
        assert_eq!(bad("/a-b"), "unexpected '-' in scope at byte 2");
        assert_eq!(bad("//a"), "expected a scope level, found '/' at byte 1");
    }
}
