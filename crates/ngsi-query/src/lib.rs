//! The NGSI-LD query languages (ETSI GS CIM 009 v1.9.1): the `q` query
//! language (clause 4.9), `scopeQ` (clauses 4.18 and 4.19), entity type
//! selection (clause 4.17) and attribute lists and projections (`attrs`,
//! `pick`, `omit`, clause 4.21).
//!
//! Everything here is pure logic over strings and `serde_json` values: the
//! parsers turn request parameters into small ASTs, the broker rewrites the
//! names in them to expanded IRIs, and the store evaluates them against its
//! entities through the [`q::Target`] trait.
//!
//! **Invariant:** no parser in this crate panics on any input, and parsing is
//! bounded in input length and nesting depth.

mod cursor;
mod error;
mod temporal;

pub mod attrs;
pub mod json_target;
pub mod q;
pub mod scope;
pub mod types;

pub use attrs::{Projection, parse_attr_list, parse_projection};
pub use error::ParseError;
pub use json_target::JsonTarget;
pub use q::{AttrPath, Query, Target, parse_q};
pub use scope::{ScopeQuery, parse_scope_q, validate_scope};
pub use types::{TypeExpr, parse_type_expr};

/// The longest input any parser in this crate accepts, in bytes.
pub const MAX_INPUT_LEN: usize = 16 * 1024;

/// The deepest parenthesis (or projection brace) nesting any parser accepts.
pub const MAX_DEPTH: usize = 64;
