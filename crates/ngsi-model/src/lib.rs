//! The NGSI-LD domain model, its JSON forms and the error table.
