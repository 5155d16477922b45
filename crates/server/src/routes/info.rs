//! Retrieve Context Source Identity Information (clauses 5.15.1, 5.2.40, 6.33).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::entities::link_ctx;
use crate::http::{ApiResult, json_response, negotiate, query_params};
use crate::{AppState, Ngsi};

/// GET /info/sourceIdentity
///
/// The identity is a function of the configured alias and the tenant, so it
/// is answered for any tenant name, known to the store or not: a peer can
/// learn a tenant's alias before registering it (Table 5.2.40-1).
pub async fn source_identity(State(state): State<AppState>, req: Ngsi) -> ApiResult {
    query_params(req.query.as_deref(), &[]).map_err(|e| req.err(e))?;
    let produce = negotiate(&req.headers, false).map_err(|e| req.err(e))?;
    let ctx = link_ctx(&req, &state).await?;
    let alias = state.broker.source_alias(&req.tenant);
    let body = json!({
        "id": format!("urn:ngsi-ld:ContextSource:{alias}"),
        "type": "ContextSourceIdentity",
        "contextSourceAlias": alias,
        "contextSourceUptime": iso_duration(state.metrics.uptime()),
        "contextSourceTimeAt": ngsi_model::time::format_micros(ngsi_model::time::now_micros()),
    });
    Ok(json_response(StatusCode::OK, produce, &ctx, body))
}

/// An ISO 8601 duration with days, hours, minutes and whole seconds:
/// `P0DT1H2M3S`.
fn iso_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "P{}DT{}H{}M{}S",
        s / 86_400,
        s / 3_600 % 24,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_durations() {
        assert_eq!(broker::tenant_alias("wuyang", ""), "wuyang");
        assert_eq!(
            broker::tenant_alias("wuyang", "city/a b"),
            "wuyang.city%2Fa%20b"
        );
        assert_eq!(iso_duration(Duration::from_secs(90_061)), "P1DT1H1M1S");
        assert_eq!(iso_duration(Duration::ZERO), "P0DT0H0M0S");
    }
}
