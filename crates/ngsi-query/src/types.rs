//! The entity type selection language (clause 4.17).
//!
//! ```text
//! type-expr ::= or-expr
//! or-expr   ::= and-expr ( ( "|" | "," ) and-expr )*
//! and-expr  ::= primary ( ";" primary )*     ; ext: the spec asks for parentheses
//! primary   ::= "(" or-expr ")" | type       ; ext: parentheses nest (depth <= 64)
//! type      ::= name | uri                   ; clause 4.6.2 name, or an absolute URI
//! ```
//!
//! A URI containing `,`, `;`, `|`, `(` or `)` cannot be written here; clause
//! 4.17 notes the clash and recommends short names.

use std::fmt;

use crate::cursor::{Connectives, Cursor, is_name, is_uri, parse_connected};
use crate::error::ParseError;

/// A parsed `type` parameter. `And` and `Or` hold at least two operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeExpr {
    /// The entity has every one of these types (`;`).
    And(Vec<TypeExpr>),
    /// The entity has at least one of these types (`|` or `,`).
    Or(Vec<TypeExpr>),
    /// One entity type name (expanded to an IRI by the broker).
    Type(String),
}

/// Parses a `type` parameter (already percent-decoded).
pub fn parse_type_expr(input: &str) -> Result<TypeExpr, ParseError> {
    parse_connected(input, "type expression", type_name)
}

impl Connectives for TypeExpr {
    fn and(items: Vec<Self>) -> Self {
        TypeExpr::And(items)
    }
    fn or(items: Vec<Self>) -> Self {
        TypeExpr::Or(items)
    }
}

/// One entity type name (or URI).
fn type_name(c: &mut Cursor<'_>) -> Result<TypeExpr, ParseError> {
    let start = c.pos;
    while matches!(c.peek(), Some(ch) if !(ch.is_whitespace() || ch.is_control() || matches!(ch, ',' | ';' | '|' | '(' | ')')))
    {
        c.bump();
    }
    let name = &c.src[start..c.pos];
    if name.is_empty() {
        return Err(c.err(format!("expected an entity type, found {}", c.found())));
    }
    if !(is_name(name) || is_uri(name)) {
        return Err(c.err_at(start, format!("'{name}' is neither a valid name nor a URI")));
    }
    Ok(TypeExpr::Type(name.to_owned()))
}

impl TypeExpr {
    /// Whether an entity with these types matches.
    pub fn matches(&self, entity_types: &[&str]) -> bool {
        self.matches_with(&|name| entity_types.contains(&name))
    }

    /// Whether an entity matches, asking `has_type` for each name (no
    /// collection of the entity's types needed).
    pub fn matches_with(&self, has_type: &dyn Fn(&str) -> bool) -> bool {
        match self {
            TypeExpr::And(items) => items.iter().all(|t| t.matches_with(has_type)),
            TypeExpr::Or(items) => items.iter().any(|t| t.matches_with(has_type)),
            TypeExpr::Type(name) => has_type(name),
        }
    }

    /// Every type name in the expression, in order of appearance (a name may
    /// repeat). Any matching entity has at least one of them, so the union of
    /// the by-type index over these names is a complete candidate set.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(t) = stack.pop() {
            match t {
                TypeExpr::Type(n) => out.push(n.as_str()),
                TypeExpr::And(items) | TypeExpr::Or(items) => stack.extend(items.iter().rev()),
            }
        }
        out.into_iter()
    }

    /// Replaces every type name with `f(name)` (expansion to IRIs).
    pub fn map_names(&mut self, f: &mut dyn FnMut(&str) -> String) {
        match self {
            TypeExpr::Type(n) => *n = f(n),
            TypeExpr::And(items) | TypeExpr::Or(items) => {
                for item in items {
                    item.map_names(f);
                }
            }
        }
    }
}

impl fmt::Display for TypeExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[TypeExpr], sep: &str) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match item {
                    TypeExpr::Type(n) => f.write_str(n)?,
                    nested => write!(f, "({nested})")?,
                }
            }
            Ok(())
        }
        match self {
            TypeExpr::And(items) => list(f, items, ";"),
            TypeExpr::Or(items) => list(f, items, "|"),
            TypeExpr::Type(n) => f.write_str(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and compares the canonical print, or the error.
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = match parse_type_expr(input) {
            Ok(t) => {
                let printed = t.to_string();
                assert_eq!(
                    parse_type_expr(&printed).as_ref(),
                    Ok(&t),
                    "round trip {printed:?}"
                );
                printed
            }
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    /// Evaluates `expr` against entities with the given type sets and
    /// compares the indexes that match.
    #[track_caller]
    fn check_match(expr: &str, expected: &str) {
        let cases: [&[&str]; 5] = [
            &["Building"],
            &["House"],
            &["Home", "Vehicle"],
            &["Motorhome"],
            &["Home"],
        ];
        let t = parse_type_expr(expr).unwrap();
        let got: Vec<String> = cases
            .iter()
            .enumerate()
            .filter(|(_, types)| t.matches(types))
            .map(|(i, _)| i.to_string())
            .collect();
        assert_eq!(got.join(" "), expected, "expr: {expr:?}");
    }

    #[test]
    fn parse() {
        check("Building", "Building");
        check("Building|House", "Building|House");
        check("Building,House", "Building|House");
        check("(Home;Vehicle)", "Home;Vehicle");
        check("(Home;Vehicle)|Motorhome", "(Home;Vehicle)|Motorhome");
        check("(Home;Vehicle),Motorhome", "(Home;Vehicle)|Motorhome");
        check(
            "https://example.org/Building,ex:House",
            "https://example.org/Building|ex:House",
        );
        check("A;B|C", "(A;B)|C");
        check("", "error: type expression is empty at byte 0");
        check(
            "A,",
            "error: expected an entity type, found end of input at byte 2",
        );
        check(
            "A,,B",
            "error: expected an entity type, found ',' at byte 2",
        );
        check("(A", "error: expected ')', found end of input at byte 2");
        check("A)", "error: unexpected ')' at byte 1");
        check(
            "1A",
            "error: '1A' is neither a valid name nor a URI at byte 0",
        );
        check(
            "A-B",
            "error: 'A-B' is neither a valid name nor a URI at byte 0",
        );
    }

    #[test]
    fn matching() {
        check_match("Building", "0");
        check_match("Building|House", "0 1");
        check_match("(Home;Vehicle)", "2");
        check_match("(Home;Vehicle)|Motorhome", "2 3");
        check_match("Home", "2 4");
        check_match("Nothing", "");
    }

    #[test]
    fn names_and_mapping() {
        let mut t = parse_type_expr("(Home;Vehicle)|Motorhome,Home").unwrap();
        assert_eq!(
            t.names().collect::<Vec<_>>(),
            ["Home", "Vehicle", "Motorhome", "Home"]
        );
        t.map_names(&mut |n| format!("https://example.org/{n}"));
        assert_eq!(
            t.to_string(),
            "(https://example.org/Home;https://example.org/Vehicle)|https://example.org/Motorhome|https://example.org/Home"
        );
        assert!(t.matches(&["https://example.org/Motorhome"]));
    }
}
