//! The NGSI-LD query language, scopeQ and type expressions.
