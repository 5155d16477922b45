//! The NGSI-LD domain model, its JSON forms and the error table.
//!
//! Everything here works on expanded IRIs; compact terms appear only in the
//! documents that [`parse`] reads and [`render`] writes.

pub mod compat;
pub mod entity;
pub mod error;
pub mod expiry;
pub mod json;
pub mod names;
pub mod parse;
pub mod render;
pub mod time;
pub mod update;

pub use entity::{AttrExtra, AttrValue, Attribute, Entity, Iri, iri};
pub use error::{ErrorKind, NgsiError, NgsiResult};
pub use json::{Json, JsonDoc};
pub use parse::Terms;
