//! The integration tests of the NGSI-LD HTTP API: every test starts the real
//! server in-process on a free port and talks HTTP to it.

mod attributes;
mod batch;
mod contexts;
mod discovery;
mod distributed_subscriptions;
mod entities;
mod entity_maps;
mod errors;
mod federation;
mod federation_writes;
mod geo;
mod kinds;
mod negotiation;
mod query;
mod registrations;
mod snapshots;
mod subscriptions;
mod support;
mod temporal;
mod tenants;
mod transient;
