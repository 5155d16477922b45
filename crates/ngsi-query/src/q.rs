//! The NGSI-LD query language (`q`, ETSI GS CIM 009 v1.9.1 clause 4.9).
//!
//! The grammar accepted here, in BNF. It is the ABNF of clause 4.9 with the
//! leniencies marked *ext*; blanks (space, tab, CR, LF) may appear between
//! tokens and are ignored.
//!
//! ```text
//! query       ::= or-expr
//! or-expr     ::= and-expr ( "|" and-expr )*
//! and-expr    ::= primary ( ";" primary )*          ; AND binds tighter than OR
//! primary     ::= "(" or-expr ")" | term            ; ext: parentheses nest (depth <= 64)
//! term        ::= target                            ; the target element exists
//!               | "!" path                          ; ext: the target element is absent
//!               | target ( "==" | "!=" ) eq-operand
//!               | target ( ">" | ">=" | "<" | "<=" ) comparable
//!               | target ( "~=" | "!~=" ) regex
//! target      ::= path
//!               | name "{" ( tname ( "," tname )* ":" )? target "}"
//!                                                   ; linked entity (examples 13, 14);
//!                                                   ; ext: several type hints
//! path        ::= name ( "." name )* compound?      ; attribute, then sub-attributes
//! tname       ::= letter ( letter | digit | "_" )*  ; an entity type hint
//! compound    ::= ( "[" key ( "." key )* "]" )+     ; ext: a[b][c] is a[b.c]
//! eq-operand  ::= comparable ".." comparable        ; inclusive range, both of one kind
//!               | value ( "," value )+              ; value list
//!               | value
//! value       ::= comparable | "true" | "false" | word
//! comparable  ::= number | string | date-time | date | time
//! word        ::= letter wordchar*                  ; a URI, or a bare term (ext, for
//!                                                   ; VocabProperty and expandValues)
//! regex       ::= string                            ; only \" and \\ are unescaped
//!               | regexchar+                        ; up to a top-level ";", "|" or
//!                                                   ; unbalanced ")"
//! name        ::= letter ( letter | digit | "_" )* ( ":" letter ( letter | digit | "_" )* )?
//! key         ::= keychar+                          ; JSON member name; "*" = any key
//! number      ::= "-"? ( "0" | [1-9] digit* ) ( "." digit+ )? ( [eE] [+-]? digit+ )?
//! string      ::= '"' JSON string characters and escapes '"'
//! date-time   ::= YYYY "-" MM "-" DD "T" hh ":" mm ":" ss ( "." digit+ )? ( "Z" | [+-] hh ":" mm )
//! date        ::= YYYY "-" MM "-" DD
//! time        ::= hh ":" mm ":" ss ( "." digit+ )? "Z"?
//! wordchar    ::= any character except blanks, controls and ; | ( ) , "
//! keychar     ::= any character except blanks, controls and . [ ] ; | ( ) , " = ! < > ~ { }
//! ```
//!
//! `letter` and `digit` are the Unicode categories L and N (clause 4.6.2).
//!
//! Inside braces, a first `word:` is read as a type hint, so
//! `managedBy{Building:name}` asks for the `name` of the Buildings that
//! `managedBy` targets; a compact attribute name right after the brace
//! (`managedBy{ex:name}`) therefore needs a type hint before it
//! (`managedBy{Building:ex:name}`).
//!
//! # Linked entities
//!
//! A linked term (`managedBy{name}=="Pisa Tower"`) holds for an entity when
//! its Relationship (or ListRelationship) targets an entity for which the
//! rest of the term holds. The evaluator cannot look entities up itself:
//! either the caller resolves each linked term first
//! ([`Query::resolve_links`]) into the set of ids of the entities the
//! Relationship may target, a semi-join that an entity store answers with
//! one query however many entities are then tested, or the [`Target`] looks
//! each targeted entity up ([`Target::linked`]), which suits testing one
//! entity.
//!
//! # Evaluation
//!
//! [`Query::matches`] asks a [`Target`] for every candidate value at a path
//! and applies the rules of clause 4.9; each decision is documented on the
//! function that makes it.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use serde_json::{Number, Value as Json};

use crate::cursor::Cursor;
use crate::error::ParseError;
use crate::temporal;

/// The largest compiled size of one `~=` regular expression, in bytes. Bigger
/// patterns are a parse error, which keeps compile time bounded.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A parsed `q` expression.
///
/// `And` and `Or` always hold at least two operands. Parentheses in the input
/// become nesting here, so printing and re-parsing gives back the same tree.
// Terms are the common case (most queries are one term), so they are kept
// inline rather than boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// All operands match (`;`).
    And(Vec<Query>),
    /// At least one operand matches (`|`).
    Or(Vec<Query>),
    /// One query term.
    Term(Term),
}

/// One query term: a path and what must hold there.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The attribute path the term looks at; in a linked term, the path in
    /// the last linked entity.
    pub path: AttrPath,
    /// The condition on the values found at the path.
    pub predicate: Predicate,
    /// The Relationships followed before `path`, outermost first: empty
    /// for a plain term; `a{T:b{c}}` has the hops `a` (type hint `T`) and
    /// `b`, and the path `c`.
    pub via: Vec<Hop>,
    /// For a linked term, the ids of the entities the first hop may target
    /// for the term to hold, set by [`Query::resolve_links`].
    pub resolved: Resolved,
}

/// One Relationship a linked term follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// The Relationship (an attribute path without sub-attributes or
    /// compound keys).
    pub relationship: AttrPath,
    /// The entity type hints (clause 4.9 example 14): only linked entities
    /// of one of these types are considered; empty for any type.
    pub types: Vec<String>,
}

/// What resolves a linked term (see [`Query::resolve_links`]).
pub type Resolver<'a> = dyn FnMut(&Hop, &Term) -> Option<HashSet<Box<str>>> + 'a;

/// The ids a linked term resolved to. Two resolutions compare equal
/// whatever they hold, so a parsed query equals its re-parsed print.
#[derive(Debug, Clone, Default)]
pub struct Resolved(pub Option<Arc<HashSet<Box<str>>>>);

impl PartialEq for Resolved {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// An attribute path: `attr.sub1.sub2[key1.key2]`.
///
/// The first name is the attribute, further dotted names are sub-attributes
/// (properties of properties, or `observedAt`, `createdAt`, `modifiedAt`,
/// `unitCode`, `datasetId`...) and the bracketed keys walk into a JSON object
/// value (clause 4.9, "trailing path").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// The attribute name (expanded to an IRI by the broker before evaluation).
    pub attr: String,
    /// Sub-attribute names, outermost first.
    pub sub_attrs: Vec<String>,
    /// JSON member names inside the target value; empty when there is no
    /// trailing `[..]` path. `*` stands for any key (clause 4.9,
    /// LanguageProperty `color[*]`).
    pub compound: Vec<String>,
}

/// The condition of a [`Term`].
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `attr`: the target element exists.
    Exists,
    /// `!attr`: the target element does not exist. Not in the v1.9.1 grammar;
    /// accepted as Orion-LD does.
    NotExists,
    /// `attr==operand`.
    Equal(Operand),
    /// `attr!=operand`.
    NotEqual(Operand),
    /// `attr>value`.
    Greater(Value),
    /// `attr>=value`.
    GreaterEq(Value),
    /// `attr<value`.
    Less(Value),
    /// `attr<=value`.
    LessEq(Value),
    /// `attr~=regex`.
    Matches(Pattern),
    /// `attr!~=regex`.
    NotMatches(Pattern),
}

/// The right-hand side of `==` and `!=`.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// One value.
    One(Value),
    /// `v1,v2,...`: any of the values (at least two).
    List(Vec<Value>),
    /// `min..max`, both included; both ends are of the same kind.
    Range(Value, Value),
}

/// A literal in a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A JSON number.
    Number(Number),
    /// A quoted string (unescaped).
    String(String),
    /// `true` or `false`.
    Bool(bool),
    /// An unquoted date-time; compares chronologically.
    DateTime(Temporal),
    /// An unquoted date; compares chronologically.
    Date(Temporal),
    /// An unquoted time of day; compares chronologically.
    Time(Temporal),
    /// An unquoted word: a URI (`urn:ngsi-ld:Car:1`) or a bare term (`Male`,
    /// for VocabProperty with `expandValues`). Compares equal to a string
    /// target value with the same text.
    Uri(String),
}

/// A date, time or date-time literal: its text as written and the instant it
/// denotes (nanoseconds since the epoch for date-times, days since the epoch
/// for dates, nanoseconds since midnight for times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporal {
    text: String,
    key: i128,
}

impl Temporal {
    /// The literal as written in the query.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A compiled `~=` pattern. Equality compares the source text.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// The regular expression as written (after unquoting).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Compiles a pattern with the same limits as the parser.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(crate::MAX_DEPTH as u32)
            .build()?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// What the store offers to evaluate a query against one entity.
pub trait Target {
    /// Pushes onto `out` every candidate value found at `path` in the entity:
    ///
    /// * the `value` of a Property (one per instance when the attribute has
    ///   several `datasetId` instances); an array value is pushed as one
    ///   array;
    /// * the `object` of a Relationship (a URI string, or an array of them);
    /// * the `languageMap` values of a LanguageProperty, one per language
    ///   (with `[lang]` only that language's value);
    /// * the `valueList` / `objectList` array of a ListProperty /
    ///   ListRelationship, the `json` of a JsonProperty, the (expanded)
    ///   `vocab` of a VocabProperty;
    /// * for a sub-attribute such as `observedAt`, its value (a date-time
    ///   string);
    /// * for a compound path, the JSON value reached by walking the keys into
    ///   the value (nothing when a key is missing: clause 4.9 says the target
    ///   element is then non-existent).
    ///
    /// Nothing is pushed when the target element is absent; at least one
    /// value is pushed when it exists.
    fn values(&self, path: &AttrPath, out: &mut Vec<Json>);

    /// Whether the target element at `path` is a Relationship or
    /// ListRelationship; clause 4.9 says such elements never match operators
    /// other than `==` and `!=`. Defaults to `false`.
    fn is_relationship(&self, path: &AttrPath) -> bool {
        let _ = path;
        false
    }

    /// Whether the target element at `path` is a LanguageProperty named
    /// without a language (no compound key): its target values are then the
    /// values of every language, as with `[*]`, and `!=` holds only when
    /// none of them is equal (clause 4.9). Defaults to `false`.
    fn is_language_map(&self, path: &AttrPath) -> bool {
        let _ = path;
        false
    }

    /// Whether the entity `id`, an object of a Relationship of this entity,
    /// exists, has one of `hop.types` (any type when there are none) and
    /// matches `rest`: how a linked term that was not resolved beforehand
    /// ([`Query::resolve_links`]) is evaluated, one lookup per object.
    /// Defaults to `false`, for targets that cannot look entities up.
    fn linked(&self, id: &str, hop: &Hop, rest: &Query) -> bool {
        let _ = (id, hop, rest);
        false
    }
}

/// Parses a `q` parameter (already percent-decoded by the caller).
pub fn parse_q(input: &str) -> Result<Query, ParseError> {
    let mut p = Parser {
        c: Cursor::new(input, "query")?,
    };
    let q = p.or_expr()?;
    p.c.skip_ws();
    if !p.c.at_end() {
        return Err(p.c.err(format!("unexpected {}", p.c.found())));
    }
    Ok(q)
}

struct Parser<'a> {
    c: Cursor<'a>,
}

impl Parser<'_> {
    fn or_expr(&mut self) -> Result<Query, ParseError> {
        let mut items = vec![self.and_expr()?];
        loop {
            self.c.skip_ws();
            if !self.c.eat("|") {
                break;
            }
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Query::Or(items)
        })
    }

    fn and_expr(&mut self) -> Result<Query, ParseError> {
        let mut items = vec![self.primary()?];
        loop {
            self.c.skip_ws();
            if !self.c.eat(";") {
                break;
            }
            items.push(self.primary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Query::And(items)
        })
    }

    fn primary(&mut self) -> Result<Query, ParseError> {
        self.c.skip_ws();
        if self.c.eat("(") {
            let open = self.c.pos - 1;
            self.c.enter()?;
            let q = self.or_expr()?;
            self.c.leave();
            self.c.skip_ws();
            if !self.c.eat(")") {
                return Err(self.c.err(format!(
                    "expected ')' to close the '(' at byte {open}, found {}",
                    self.c.found()
                )));
            }
            return Ok(q);
        }
        self.term().map(Query::Term)
    }

    fn term(&mut self) -> Result<Term, ParseError> {
        let negated = self.c.peek() == Some('!');
        if negated {
            self.c.bump();
        }
        let mut via = Vec::new();
        let path = self.target(&mut via)?;
        if negated && !via.is_empty() {
            return Err(self
                .c
                .err("'!' cannot be applied to a linked entity term (attr{...})"));
        }
        self.c.skip_ws();
        let op_at = self.c.pos;
        let predicate = if negated {
            Predicate::NotExists
        } else if self.c.eat("==") {
            Predicate::Equal(self.eq_operand()?)
        } else if self.c.eat("!=") {
            Predicate::NotEqual(self.eq_operand()?)
        } else if self.c.eat(">=") {
            Predicate::GreaterEq(self.comparable()?)
        } else if self.c.eat(">") {
            Predicate::Greater(self.comparable()?)
        } else if self.c.eat("<=") {
            Predicate::LessEq(self.comparable()?)
        } else if self.c.eat("<") {
            Predicate::Less(self.comparable()?)
        } else if self.c.eat("~=") {
            Predicate::Matches(self.regex()?)
        } else if self.c.eat("!~=") {
            Predicate::NotMatches(self.regex()?)
        } else {
            match self.c.peek() {
                None | Some(';' | '|' | ')') => Predicate::Exists,
                Some('=') => return Err(self.c.err("expected '==', found a single '='")),
                _ => {
                    return Err(self.c.err_at(
                        op_at,
                        format!("expected an operator, found {}", self.c.found()),
                    ));
                }
            }
        };
        Ok(Term {
            path,
            predicate,
            via,
            resolved: Resolved::default(),
        })
    }

    /// A path, or a linked term `rel{Type:target}`, whose hops are pushed
    /// onto `via`.
    fn target(&mut self, via: &mut Vec<Hop>) -> Result<AttrPath, ParseError> {
        let path = self.path()?;
        if self.c.peek() != Some('{') {
            return Ok(path);
        }
        if !path.sub_attrs.is_empty() || !path.compound.is_empty() {
            return Err(self.c.err(
                "a linked entity term follows a Relationship named alone (attr{...}), not a path",
            ));
        }
        self.c.bump();
        self.c.enter()?;
        let types = self.type_hints();
        via.push(Hop {
            relationship: path,
            types,
        });
        let inner = self.target(via)?;
        self.c.skip_ws();
        if !self.c.eat("}") {
            return Err(self.c.err(format!(
                "expected '}}' to close the linked entity term, found {}",
                self.c.found()
            )));
        }
        self.c.leave();
        Ok(inner)
    }

    /// The type hints `T1,T2:` after a `{`, or nothing (and the cursor left
    /// where it was) when the braces do not start with them.
    fn type_hints(&mut self) -> Vec<String> {
        let start = self.c.pos;
        self.c.skip_ws();
        let mut types = Vec::new();
        loop {
            let at = self.c.pos;
            if !matches!(self.c.peek(), Some(ch) if ch.is_alphabetic()) {
                break;
            }
            while matches!(self.c.peek(), Some(ch) if ch.is_alphanumeric() || ch == '_') {
                self.c.bump();
            }
            types.push(self.c.src[at..self.c.pos].to_owned());
            self.c.skip_ws();
            if self.c.eat(":") {
                return types;
            }
            if !self.c.eat(",") {
                break;
            }
            self.c.skip_ws();
        }
        self.c.pos = start;
        Vec::new()
    }

    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        let start = self.c.pos;
        let simple = |c: &mut Cursor<'_>| -> bool {
            if !matches!(c.peek(), Some(ch) if ch.is_alphabetic()) {
                return false;
            }
            c.bump();
            while matches!(c.peek(), Some(ch) if ch.is_alphanumeric() || ch == '_') {
                c.bump();
            }
            true
        };
        if !simple(&mut self.c) {
            return Err(self.c.err(format!(
                "expected {what} (a name starting with a letter), found {}",
                self.c.found()
            )));
        }
        // A compact `prefix:name` (clause 4.6.2).
        if self.c.peek() == Some(':') && matches!(self.c.peek2(), Some(ch) if ch.is_alphabetic()) {
            self.c.bump();
            simple(&mut self.c);
        }
        Ok(self.c.src[start..self.c.pos].to_owned())
    }

    fn path(&mut self) -> Result<AttrPath, ParseError> {
        self.c.skip_ws();
        let attr = self.name("an attribute name")?;
        let mut sub_attrs = Vec::new();
        while self.c.eat(".") {
            sub_attrs.push(self.name("a sub-attribute name")?);
        }
        let mut compound = Vec::new();
        while self.c.eat("[") {
            loop {
                let start = self.c.pos;
                while matches!(self.c.peek(), Some(ch) if is_key_char(ch)) {
                    self.c.bump();
                }
                if start == self.c.pos {
                    return Err(self.c.err(format!(
                        "expected a JSON member name, found {}",
                        self.c.found()
                    )));
                }
                compound.push(self.c.src[start..self.c.pos].to_owned());
                if !self.c.eat(".") {
                    break;
                }
            }
            if !self.c.eat("]") {
                return Err(self
                    .c
                    .err(format!("expected ']', found {}", self.c.found())));
            }
        }
        Ok(AttrPath {
            attr,
            sub_attrs,
            compound,
        })
    }

    fn eq_operand(&mut self) -> Result<Operand, ParseError> {
        self.c.skip_ws();
        let first_at = self.c.pos;
        let first = self.value()?;
        self.c.skip_ws();
        if self.c.eat("..") {
            self.c.skip_ws();
            let second_at = self.c.pos;
            let second = self.value()?;
            if !first.is_comparable() {
                return Err(self.c.err_at(
                    first_at,
                    "a range needs numbers, strings, dates, times or date-times",
                ));
            }
            if std::mem::discriminant(&first) != std::mem::discriminant(&second) {
                return Err(self
                    .c
                    .err_at(second_at, "both ends of a range must be of the same kind"));
            }
            return Ok(Operand::Range(first, second));
        }
        if self.c.peek() != Some(',') {
            return Ok(Operand::One(first));
        }
        let mut list = vec![first];
        while self.c.eat(",") {
            self.c.skip_ws();
            list.push(self.value()?);
            self.c.skip_ws();
        }
        Ok(Operand::List(list))
    }

    fn comparable(&mut self) -> Result<Value, ParseError> {
        self.c.skip_ws();
        let at = self.c.pos;
        let v = self.value()?;
        if !v.is_comparable() {
            return Err(self.c.err_at(
                at,
                "ordering operators need a number, string, date, time or date-time",
            ));
        }
        self.c.skip_ws();
        if matches!(self.c.peek(), Some(',')) || self.c.rest().starts_with("..") {
            return Err(self
                .c
                .err("value lists and ranges are only allowed after '==' and '!='"));
        }
        Ok(v)
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        let start = self.c.pos;
        let v = match self.c.peek() {
            Some('"') => Value::String(self.quoted_string()?),
            Some(ch) if ch.is_ascii_digit() || ch == '-' => self.numeric_or_temporal()?,
            Some(ch) if ch.is_alphabetic() => {
                // A word ends at a separator or at the ".." of a range.
                while matches!(self.c.peek(), Some(ch) if is_word_char(ch))
                    && !self.c.rest().starts_with("..")
                {
                    self.c.bump();
                }
                match &self.c.src[start..self.c.pos] {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    w => Value::Uri(w.to_owned()),
                }
            }
            _ => {
                return Err(self
                    .c
                    .err(format!("expected a value, found {}", self.c.found())));
            }
        };
        // A value ends at a separator; anything glued to it is an error.
        match self.c.peek() {
            None | Some(';' | '|' | ')' | ',' | ' ' | '\t' | '\r' | '\n') => Ok(v),
            Some('.') if self.c.rest().starts_with("..") => Ok(v),
            _ => Err(self
                .c
                .err(format!("unexpected {} after a value", self.c.found()))),
        }
    }

    fn numeric_or_temporal(&mut self) -> Result<Value, ParseError> {
        let start = self.c.pos;
        let rest = self.c.rest();
        let n = temporal::lex_date_or_datetime(rest);
        if n > 10 {
            let text = &rest[..n];
            self.c.pos += n;
            let key = temporal::parse_datetime(text)
                .ok_or_else(|| self.c.err_at(start, format!("invalid date-time '{text}'")))?;
            return Ok(Value::DateTime(Temporal {
                text: text.to_owned(),
                key,
            }));
        }
        if n == 10 {
            let text = &rest[..n];
            self.c.pos += n;
            let key = temporal::parse_date(text)
                .ok_or_else(|| self.c.err_at(start, format!("invalid date '{text}'")))?;
            return Ok(Value::Date(Temporal {
                text: text.to_owned(),
                key: i128::from(key),
            }));
        }
        let n = temporal::lex_time(rest);
        if n > 0 {
            let text = &rest[..n];
            self.c.pos += n;
            let key = temporal::parse_time(text)
                .ok_or_else(|| self.c.err_at(start, format!("invalid time '{text}'")))?;
            return Ok(Value::Time(Temporal {
                text: text.to_owned(),
                key: i128::from(key),
            }));
        }
        // A shape that starts like a date or time but is invalid (2017-13-01)
        // falls through to here and fails as a number.
        let n = lex_number(rest);
        if n == 0 {
            return Err(self.c.err("expected a number"));
        }
        let text = &rest[..n];
        self.c.pos += n;
        parse_number(text).map(Value::Number).ok_or_else(|| {
            self.c
                .err_at(start, format!("number '{text}' is out of range"))
        })
    }

    /// A JSON string (RFC 8259 section 7), returned unescaped.
    fn quoted_string(&mut self) -> Result<String, ParseError> {
        let open = self.c.pos;
        self.c.bump();
        let mut out = String::new();
        loop {
            let at = self.c.pos;
            match self.c.bump() {
                None => {
                    return Err(self.c.err_at(open, "unterminated string"));
                }
                Some('"') => return Ok(out),
                Some('\\') => match self.c.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => out.push(self.unicode_escape(at)?),
                    _ => return Err(self.c.err_at(at, "invalid escape in string")),
                },
                Some(ch) if (ch as u32) < 0x20 => {
                    return Err(self.c.err_at(at, "control character in string"));
                }
                Some(ch) => out.push(ch),
            }
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, ParseError> {
        let rest = self.c.rest();
        let hex = rest
            .get(..4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some(hex) = hex else {
            return Err(self.c.err_at(at, "invalid \\u escape in string"));
        };
        self.c.pos += 4;
        Ok(u32::from_str_radix(hex, 16).expect("four hex digits"))
    }

    fn unicode_escape(&mut self, at: usize) -> Result<char, ParseError> {
        let hi = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.c.eat("\\u") {
                return Err(self.c.err_at(at, "unpaired surrogate in string"));
            }
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.c.err_at(at, "unpaired surrogate in string"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.c.err_at(at, "unpaired surrogate in string"))
    }

    fn regex(&mut self) -> Result<Pattern, ParseError> {
        self.c.skip_ws();
        let start = self.c.pos;
        let source = if self.c.peek() == Some('"') {
            self.c.bump();
            let mut out = String::new();
            loop {
                match self.c.bump() {
                    None => return Err(self.c.err_at(start, "unterminated regular expression")),
                    Some('"') => break,
                    Some('\\') if matches!(self.c.peek(), Some('"' | '\\')) => {
                        out.push(self.c.bump().expect("peeked"));
                    }
                    Some(ch) => out.push(ch),
                }
            }
            out
        } else {
            // Unquoted: up to a top-level ';' or '|', or a ')' that closes a
            // parenthesis of the query. Parentheses, classes and escapes inside
            // the regular expression are skipped over.
            let mut depth = 0usize;
            let mut in_class = false;
            loop {
                match self.c.peek() {
                    None => break,
                    Some('\\') => {
                        self.c.bump();
                        self.c.bump();
                        continue;
                    }
                    Some('[') => in_class = true,
                    Some(']') => in_class = false,
                    Some(_) if in_class => {}
                    Some('(') => depth += 1,
                    Some(')') if depth == 0 => break,
                    Some(')') => depth -= 1,
                    Some(';' | '|') if depth == 0 => break,
                    Some(_) => {}
                }
                self.c.bump();
            }
            self.c.src[start..self.c.pos].to_owned()
        };
        if source.is_empty() {
            return Err(self.c.err_at(start, "empty regular expression"));
        }
        Pattern::new(&source).map_err(|e| {
            let detail = match e {
                regex::Error::CompiledTooBig(_) => "it is too big".to_owned(),
                other => other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            };
            self.c
                .err_at(start, format!("invalid regular expression: {detail}"))
        })
    }
}

fn is_word_char(ch: char) -> bool {
    !(ch.is_whitespace() || ch.is_control() || matches!(ch, ';' | '|' | '(' | ')' | ',' | '"'))
}

fn is_key_char(ch: char) -> bool {
    !(ch.is_whitespace()
        || ch.is_control()
        || matches!(
            ch,
            '.' | '['
                | ']'
                | ';'
                | '|'
                | '('
                | ')'
                | ','
                | '"'
                | '='
                | '!'
                | '<'
                | '>'
                | '~'
                | '{'
                | '}'
        ))
}

/// Converts a lexed JSON number: integers that fit stay exact, everything
/// else becomes a finite `f64` (correctly rounded by the standard library, so
/// printing and re-parsing gives the same number).
fn parse_number(text: &str) -> Option<Number> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Number::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Number::from(u));
        }
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

/// The length of the JSON number at the start of `s` (0 if none).
fn lex_number(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: usize| b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return 0,
    }
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1 + digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let d = digits(j);
        if d > 0 {
            i = j + d;
        }
    }
    i
}

impl Value {
    fn is_comparable(&self) -> bool {
        !matches!(self, Value::Bool(_) | Value::Uri(_))
    }
}

// ---------------------------------------------------------------------------
// Printing. The canonical form has no blanks, quotes every string and
// regular expression, writes compound paths as `[a.b]` and parenthesises every
// nested `;` or `|` group, so `parse_q(&q.to_string()) == Ok(q)`.

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[Query], sep: &str) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match item {
                    Query::Term(t) => write!(f, "{t}")?,
                    nested => write!(f, "({nested})")?,
                }
            }
            Ok(())
        }
        match self {
            Query::And(items) => list(f, items, ";"),
            Query::Or(items) => list(f, items, "|"),
            Query::Term(t) => write!(f, "{t}"),
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Linked<'a>(&'a [Hop], &'a AttrPath);
        impl fmt::Display for Linked<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for hop in self.0 {
                    write!(f, "{}{{", hop.relationship)?;
                    if !hop.types.is_empty() {
                        write!(f, "{}:", hop.types.join(","))?;
                    }
                }
                write!(f, "{}", self.1)?;
                for _ in self.0 {
                    f.write_str("}")?;
                }
                Ok(())
            }
        }
        let p = &Linked(&self.via, &self.path);
        match &self.predicate {
            Predicate::Exists => write!(f, "{p}"),
            Predicate::NotExists => write!(f, "!{p}"),
            Predicate::Equal(o) => write!(f, "{p}=={o}"),
            Predicate::NotEqual(o) => write!(f, "{p}!={o}"),
            Predicate::Greater(v) => write!(f, "{p}>{v}"),
            Predicate::GreaterEq(v) => write!(f, "{p}>={v}"),
            Predicate::Less(v) => write!(f, "{p}<{v}"),
            Predicate::LessEq(v) => write!(f, "{p}<={v}"),
            Predicate::Matches(r) => write!(f, "{p}~={r}"),
            Predicate::NotMatches(r) => write!(f, "{p}!~={r}"),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.attr)?;
        for s in &self.sub_attrs {
            write!(f, ".{s}")?;
        }
        if !self.compound.is_empty() {
            write!(f, "[{}]", self.compound.join("."))?;
        }
        Ok(())
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::One(v) => write!(f, "{v}"),
            Operand::Range(a, b) => write!(f, "{a}..{b}"),
            Operand::List(vs) => {
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => write!(f, "{}", Json::String(s.clone())),
            Value::Bool(b) => write!(f, "{b}"),
            Value::DateTime(t) | Value::Date(t) | Value::Time(t) => f.write_str(&t.text),
            Value::Uri(u) => f.write_str(u),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for ch in self.source.chars() {
            match ch {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                other => write!(f, "{other}")?,
            }
        }
        f.write_str("\"")
    }
}

// ---------------------------------------------------------------------------
// Name rewriting.

impl Query {
    /// Replaces every attribute and sub-attribute name with `f(name)`; the
    /// broker uses it to expand short names to IRIs (clause 4.9: "Every name
    /// in the list shall be expanded to a URI as mandated by clause 5.5.7").
    ///
    /// The JSON member names of a compound `[..]` path are left alone: clause
    /// 4.9 evaluates them as an ECMA 262 MemberExpression against the value
    /// as stored, so they are plain JSON keys, not terms of the @context (the
    /// "every name" rule speaks of the dot-separated attribute path). Use
    /// [`Query::map_compound_keys`] if a store keeps expanded keys in values.
    pub fn map_attr_names(&mut self, f: &mut dyn FnMut(&str) -> String) {
        self.for_each_term_mut(&mut |t| {
            for hop in &mut t.via {
                hop.relationship.attr = f(&hop.relationship.attr);
            }
            t.path.attr = f(&t.path.attr);
            for s in &mut t.path.sub_attrs {
                *s = f(s);
            }
        });
    }

    /// Replaces every JSON member name of compound `[..]` paths with `f(key)`.
    pub fn map_compound_keys(&mut self, f: &mut dyn FnMut(&str) -> String) {
        self.for_each_term_mut(&mut |t| {
            for k in &mut t.path.compound {
                *k = f(k);
            }
        });
    }

    /// Replaces every unquoted word value ([`Value::Uri`]) with
    /// `f(path, word)`; the broker uses it for `expandValues` (clause 4.9
    /// example 12), where it expands the words of the listed attributes.
    pub fn map_words(&mut self, f: &mut dyn FnMut(&AttrPath, &str) -> String) {
        fn value(path: &AttrPath, v: &mut Value, f: &mut dyn FnMut(&AttrPath, &str) -> String) {
            if let Value::Uri(w) = v {
                *w = f(path, w);
            }
        }
        self.for_each_term_mut(&mut |t| match &mut t.predicate {
            Predicate::Equal(o) | Predicate::NotEqual(o) => match o {
                Operand::One(v) => value(&t.path, v, f),
                Operand::List(vs) => vs.iter_mut().for_each(|v| value(&t.path, v, f)),
                Operand::Range(..) => {}
            },
            _ => {}
        });
    }

    /// Replaces every entity type hint of a linked term with `f(type)`.
    pub fn map_link_types(&mut self, f: &mut dyn FnMut(&str) -> String) {
        self.for_each_term_mut(&mut |t| {
            for hop in &mut t.via {
                for ty in &mut hop.types {
                    *ty = f(ty);
                }
            }
        });
    }

    /// Whether some term follows a Relationship to a linked entity.
    pub fn has_links(&self) -> bool {
        match self {
            Query::Term(t) => !t.via.is_empty(),
            Query::And(items) | Query::Or(items) => items.iter().any(Query::has_links),
        }
    }

    /// The most Relationships one linked term follows (0 without linked
    /// terms).
    pub fn link_depth(&self) -> usize {
        match self {
            Query::Term(t) => t.via.len(),
            Query::And(items) | Query::Or(items) => {
                items.iter().map(Query::link_depth).max().unwrap_or(0)
            }
        }
    }

    /// Whether some linked term is not resolved yet.
    pub fn needs_resolution(&self) -> bool {
        match self {
            Query::Term(t) => !t.via.is_empty() && t.resolved.0.is_none(),
            Query::And(items) | Query::Or(items) => items.iter().any(Query::needs_resolution),
        }
    }

    /// Resolves every linked term not resolved yet: `resolve(hop, rest)` answers the ids of
    /// the entities of one of `hop.types` (any type when empty) for which
    /// `rest` holds, `rest` being the term after the hop, itself resolved
    /// first when it links further. It returns `None` when it cannot tell
    /// (the term then matches nothing).
    pub fn resolve_links(&mut self, resolve: &mut Resolver<'_>) {
        self.for_each_term_mut(&mut |t| {
            if !t.via.is_empty() && t.resolved.0.is_none() {
                t.resolve(resolve);
            }
        });
    }

    /// Every attribute path the query looks at in the entities it tests, in
    /// order of appearance: for a linked term, its first Relationship.
    pub fn paths(&self) -> Vec<&AttrPath> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(q) = stack.pop() {
            match q {
                Query::Term(t) => out.push(t.via.first().map_or(&t.path, |h| &h.relationship)),
                Query::And(items) | Query::Or(items) => stack.extend(items.iter().rev()),
            }
        }
        out
    }

    fn for_each_term_mut(&mut self, f: &mut dyn FnMut(&mut Term)) {
        match self {
            Query::Term(t) => f(t),
            Query::And(items) | Query::Or(items) => {
                for item in items {
                    item.for_each_term_mut(f);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Evaluation.

impl Query {
    /// Whether the entity behind `target` matches the query.
    pub fn matches<T: Target + ?Sized>(&self, target: &T) -> bool {
        let mut buf = Vec::new();
        self.eval(target, &mut buf)
    }

    fn eval<T: Target + ?Sized>(&self, target: &T, buf: &mut Vec<Json>) -> bool {
        match self {
            Query::And(items) => items.iter().all(|q| q.eval(target, buf)),
            Query::Or(items) => items.iter().any(|q| q.eval(target, buf)),
            Query::Term(t) => t.eval(target, buf),
        }
    }
}

impl Term {
    /// Evaluates the term. Clause 4.9: every operator except existence needs
    /// the target element to exist ("A matching Entity shall contain the
    /// target element"), so an absent element never matches, `!=` included.
    /// When the element has several instances (datasetId), "the target value
    /// shall be any Value of such instances": the term matches when it holds
    /// for at least one instance, for `!=` as for `==`.
    fn eval<T: Target + ?Sized>(&self, target: &T, buf: &mut Vec<Json>) -> bool {
        buf.clear();
        if let Some(hop) = self.via.first() {
            return self.eval_linked(&hop.relationship, target, buf);
        }
        target.values(&self.path, buf);
        if matches!(self.predicate, Predicate::NotExists) {
            return buf.is_empty();
        }
        if buf.is_empty() {
            return false;
        }
        let ordering = |want: &dyn Fn(Ordering) -> bool, v: &Value| {
            // Clause 4.9: a Relationship combined with an operator other than
            // equal or unequal does not match.
            !target.is_relationship(&self.path)
                && buf.iter().any(|t| compare(unwrap(t), v).is_some_and(want))
        };
        match &self.predicate {
            Predicate::Exists => true,
            Predicate::NotExists => unreachable!("handled above"),
            Predicate::Equal(o) => buf.iter().any(|t| equals_operand(unwrap(t), o)),
            // Clause 4.9: unequal is the negation of equal for a present
            // target: not identical, not included in an array, not in the
            // list, not in the range, and a different data type counts as
            // unequal.
            // Clause 4.9, unequal on `attr[*]` or a LanguageProperty named
            // without a language (any key of a languageMap): no value of any
            // key may be equal.
            Predicate::NotEqual(o)
                if self.path.compound.iter().any(|k| k == "*")
                    || target.is_language_map(&self.path) =>
            {
                !buf.iter().any(|t| equals_operand(unwrap(t), o))
            }
            Predicate::NotEqual(o) => buf.iter().any(|t| !equals_operand(unwrap(t), o)),
            Predicate::Greater(v) => ordering(&|o| o == Ordering::Greater, v),
            Predicate::GreaterEq(v) => ordering(&|o| o != Ordering::Less, v),
            Predicate::Less(v) => ordering(&|o| o == Ordering::Less, v),
            Predicate::LessEq(v) => ordering(&|o| o != Ordering::Greater, v),
            // Clause 4.9: a target value that is not a String never matches
            // `~=` nor `!~=`. L(R) is read with POSIX regexec semantics (the
            // pattern may match anywhere; anchor it with ^...$), as Orion-LD
            // and Scorpio do.
            Predicate::Matches(_) | Predicate::NotMatches(_)
                if target.is_relationship(&self.path) =>
            {
                false
            }
            Predicate::Matches(p) => buf
                .iter()
                .any(|t| matches!(unwrap(t), Json::String(s) if p.regex.is_match(s))),
            Predicate::NotMatches(p) => buf
                .iter()
                .any(|t| matches!(unwrap(t), Json::String(s) if !p.regex.is_match(s))),
        }
    }
}

impl Term {
    /// The term after its first hop.
    fn rest(&self) -> Term {
        Term {
            path: self.path.clone(),
            predicate: self.predicate.clone(),
            via: self.via[1..].to_vec(),
            resolved: Resolved::default(),
        }
    }

    fn resolve(&mut self, resolve: &mut Resolver<'_>) {
        let mut rest = self.rest();
        if !rest.via.is_empty() {
            rest.resolve(resolve);
        }
        self.resolved = Resolved(resolve(&self.via[0], &rest).map(Arc::new));
    }

    /// A linked term holds when the Relationship at `relationship` targets
    /// a resolved entity (any object of any instance, for a multi-instance
    /// Relationship or a ListRelationship).
    fn eval_linked<T: Target + ?Sized>(
        &self,
        relationship: &AttrPath,
        target: &T,
        buf: &mut Vec<Json>,
    ) -> bool {
        if !target.is_relationship(relationship) {
            return false;
        }
        target.values(relationship, buf);
        fn any_object(v: &Json, holds: &mut dyn FnMut(&str) -> bool) -> bool {
            match unwrap(v) {
                Json::String(s) => holds(s),
                Json::Array(items) => items.iter().any(|i| any_object(i, holds)),
                _ => false,
            }
        }
        match &self.resolved.0 {
            Some(ids) => buf
                .iter()
                .any(|v| any_object(v, &mut |id| ids.contains(id))),
            None => {
                let rest = Query::Term(self.rest());
                let hop = &self.via[0];
                buf.iter()
                    .any(|v| any_object(v, &mut |id| target.linked(id, hop, &rest)))
            }
        }
    }
}

/// Looks through JSON-LD value objects (`{"@value": ..}`, `{"@id": ..}`) so a
/// store may hand over expanded values.
fn unwrap(v: &Json) -> &Json {
    match v {
        Json::Object(m) => m.get("@value").or_else(|| m.get("@id")).unwrap_or(v),
        _ => v,
    }
}

/// Clause 4.9, equal operator: the query value is identical to the target
/// value or, when the target value is an array, included in it; a list
/// matches when any listed value does; a range when the target is within it,
/// both ends included. A different data type is not equal.
fn equals_operand(target: &Json, o: &Operand) -> bool {
    match target {
        Json::Array(items) => items.iter().any(|t| equals_scalar(unwrap(t), o)),
        t => equals_scalar(t, o),
    }
}

fn equals_scalar(t: &Json, o: &Operand) -> bool {
    match o {
        Operand::One(v) => compare(t, v) == Some(Ordering::Equal),
        Operand::List(vs) => vs.iter().any(|v| compare(t, v) == Some(Ordering::Equal)),
        Operand::Range(lo, hi) => {
            compare(t, lo).is_some_and(|o| o != Ordering::Less)
                && compare(t, hi).is_some_and(|o| o != Ordering::Greater)
        }
    }
}

/// Orders a target value against a query value, or `None` when their data
/// types differ (clause 4.9: "If there is no equality between the target
/// value data type and the Query Term value data type, then it shall be
/// considered as not matching").
///
/// Numbers compare numerically; strings by code point (RFC 8259 section 8.3;
/// UCA collation is only a "should" and is not done); date, time and
/// date-time literals compare chronologically against string target values
/// of the same format (a target string that does not parse is another data
/// type); booleans only for equality; words (URIs) by exact text.
fn compare(t: &Json, v: &Value) -> Option<Ordering> {
    match (t, v) {
        (Json::Number(a), Value::Number(b)) => compare_numbers(a, b),
        (Json::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (Json::String(a), Value::Uri(b)) => (a == b).then_some(Ordering::Equal),
        (Json::Bool(a), Value::Bool(b)) => (a == b).then_some(Ordering::Equal),
        (Json::String(a), Value::DateTime(b)) => temporal::parse_datetime(a).map(|k| k.cmp(&b.key)),
        (Json::String(a), Value::Date(b)) => {
            temporal::parse_date(a).map(|k| i128::from(k).cmp(&b.key))
        }
        (Json::String(a), Value::Time(b)) => {
            temporal::parse_time(a).map(|k| i128::from(k).cmp(&b.key))
        }
        _ => None,
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let exact = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (exact(a), exact(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
