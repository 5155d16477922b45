//! The HTTP API of Wuyang.
