//! A byte-position cursor over a `&str`, shared by the hand-written parsers.

use crate::{MAX_DEPTH, MAX_INPUT_LEN, ParseError};

pub(crate) struct Cursor<'a> {
    pub(crate) src: &'a str,
    pub(crate) pos: usize,
    depth: usize,
}

impl<'a> Cursor<'a> {
    /// Starts a cursor, refusing inputs longer than [`MAX_INPUT_LEN`] and
    /// empty (or all-blank) inputs.
    pub(crate) fn new(src: &'a str, what: &str) -> Result<Self, ParseError> {
        if src.len() > MAX_INPUT_LEN {
            return Err(ParseError::new(
                MAX_INPUT_LEN,
                format!("{what} is longer than {MAX_INPUT_LEN} bytes"),
            ));
        }
        if src.trim().is_empty() {
            return Err(ParseError::new(0, format!("{what} is empty")));
        }
        Ok(Self {
            src,
            pos: 0,
            depth: 0,
        })
    }

    pub(crate) fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(crate) fn peek2(&self) -> Option<char> {
        let mut it = self.rest().chars();
        it.next();
        it.next()
    }

    pub(crate) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(crate) fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Skips ASCII blanks. The grammars have none, but clients put spaces
    /// around operators and after commas (the spec's own examples do).
    pub(crate) fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.pos += 1;
        }
    }

    pub(crate) fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(self.pos, message)
    }

    pub(crate) fn err_at(&self, position: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(position, message)
    }

    /// Describes what the cursor is looking at, for error messages.
    pub(crate) fn found(&self) -> String {
        match self.peek() {
            None => "end of input".to_owned(),
            Some(c) => format!("'{c}'"),
        }
    }

    pub(crate) fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// Whether `s` is an NGSI-LD name (clause 4.6.2): a letter followed by
/// letters, digits and underscores, optionally prefixed by `prefix:`.
pub(crate) fn is_name(s: &str) -> bool {
    fn simple(s: &str) -> bool {
        let mut it = s.chars();
        matches!(it.next(), Some(c) if c.is_alphabetic())
            && it.all(|c| c.is_alphanumeric() || c == '_')
    }
    match s.split_once(':') {
        Some((prefix, name)) => simple(prefix) && simple(name),
        None => simple(s),
    }
}

/// Whether `s` looks like an absolute URI: an RFC 3986 scheme, a colon and a
/// non-empty rest without blanks or control characters.
pub(crate) fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut sc = scheme.chars();
    matches!(sc.next(), Some(c) if c.is_ascii_alphabetic())
        && sc.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An expression tree with the connectives that scopeQ and type expressions
/// share: `;` (AND) binding tighter than `|` or `,` (OR), and parentheses.
pub(crate) trait Connectives: Sized {
    /// All of `items` (at least two).
    fn and(items: Vec<Self>) -> Self;
    /// Any of `items` (at least two).
    fn or(items: Vec<Self>) -> Self;
}

/// Parses a whole input of `leaf`s joined by the [`Connectives`]; `what`
/// names the input in errors.
pub(crate) fn parse_connected<T: Connectives>(
    input: &str,
    what: &str,
    leaf: fn(&mut Cursor<'_>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let mut c = Cursor::new(input, what)?;
    let t = or_expr(&mut c, leaf)?;
    c.skip_ws();
    if !c.at_end() {
        return Err(c.err(format!("unexpected {}", c.found())));
    }
    Ok(t)
}

fn or_expr<T: Connectives>(
    c: &mut Cursor<'_>,
    leaf: fn(&mut Cursor<'_>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let mut items = vec![and_expr(c, leaf)?];
    loop {
        c.skip_ws();
        if !(c.eat("|") || c.eat(",")) {
            break;
        }
        items.push(and_expr(c, leaf)?);
    }
    Ok(if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        T::or(items)
    })
}

fn and_expr<T: Connectives>(
    c: &mut Cursor<'_>,
    leaf: fn(&mut Cursor<'_>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let mut items = vec![primary(c, leaf)?];
    loop {
        c.skip_ws();
        if !c.eat(";") {
            break;
        }
        items.push(primary(c, leaf)?);
    }
    Ok(if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        T::and(items)
    })
}

fn primary<T: Connectives>(
    c: &mut Cursor<'_>,
    leaf: fn(&mut Cursor<'_>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    c.skip_ws();
    if c.eat("(") {
        c.enter()?;
        let t = or_expr(c, leaf)?;
        c.leave();
        c.skip_ws();
        if !c.eat(")") {
            return Err(c.err(format!("expected ')', found {}", c.found())));
        }
        return Ok(t);
    }
    leaf(c)
}
