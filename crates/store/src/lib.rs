//! Durable entity storage: the Store trait and the embedded SQLite backend.
