//! Parses arbitrary bytes as a GeoJSON geometry and as the query-string form
//! of a geo-query; whatever parses must render back to an equal geometry and
//! every relation must answer without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(g) = ngsi_geo::parse_geojson(&value)
    {
        let back = ngsi_geo::parse_geojson(&ngsi_geo::to_geojson(&g)).expect("rendered geometry parses");
        assert_eq!(back, g);
        let reference = ngsi_geo::Geometry::point(113.3245, 23.1064).unwrap();
        for rel in ["within", "contains", "intersects", "equals", "disjoint", "overlaps", "near;maxDistance==1000"] {
            let rel = ngsi_geo::parse_georel(rel).unwrap();
            let _ = ngsi_geo::matches(&rel, &g, &reference);
            let _ = ngsi_geo::matches(&rel, &reference, &g);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut parts = text.splitn(3, '&');
        let _ = ngsi_geo::parse_geoquery_params(parts.next(), Some("Polygon"), parts.next(), parts.next());
        let _ = ngsi_geo::parse_georel(text);
    }
});
