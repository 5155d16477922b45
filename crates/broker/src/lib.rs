//! The NGSI-LD operations, independent of any transport.
