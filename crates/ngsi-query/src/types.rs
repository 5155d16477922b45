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

use crate::cursor::{Cursor, is_name, is_uri};
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
    let mut c = Cursor::new(input, "type expression")?;
    let t = or_expr(&mut c)?;
    c.skip_ws();
    if !c.at_end() {
        return Err(c.err(format!("unexpected {}", c.found())));
    }
    Ok(t)
}

fn or_expr(c: &mut Cursor<'_>) -> Result<TypeExpr, ParseError> {
    let mut items = vec![and_expr(c)?];
    loop {
        c.skip_ws();
        if !(c.eat("|") || c.eat(",")) {
            break;
        }
        items.push(and_expr(c)?);
    }
    Ok(if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        TypeExpr::Or(items)
    })
}

fn and_expr(c: &mut Cursor<'_>) -> Result<TypeExpr, ParseError> {
    let mut items = vec![primary(c)?];
    loop {
        c.skip_ws();
        if !c.eat(";") {
            break;
        }
        items.push(primary(c)?);
    }
    Ok(if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        TypeExpr::And(items)
    })
}

fn primary(c: &mut Cursor<'_>) -> Result<TypeExpr, ParseError> {
    c.skip_ws();
    if c.eat("(") {
        c.enter()?;
        let t = or_expr(c)?;
        c.leave();
        c.skip_ws();
        if !c.eat(")") {
            return Err(c.err(format!("expected ')', found {}", c.found())));
        }
        return Ok(t);
    }
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
        match self {
            TypeExpr::And(items) => items.iter().all(|t| t.matches(entity_types)),
            TypeExpr::Or(items) => items.iter().any(|t| t.matches(entity_types)),
            TypeExpr::Type(name) => entity_types.contains(&name.as_str()),
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
