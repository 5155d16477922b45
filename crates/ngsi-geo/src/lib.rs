//! GeoJSON geometries and NGSI-LD geo-queries.
