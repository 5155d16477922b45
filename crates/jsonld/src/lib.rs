//! JSON-LD context processing for NGSI-LD: term tables, expansion and compaction.
