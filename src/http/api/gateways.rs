//! `GET /api/v1/gateways`: each CoAP gateway, bridge and webhook, `{"data": [{"kind": "coap" |
//! "bridge" | "webhook", "name", "address", "state", "metrics": {"<metric>": n, ...}}]}`, in
//! configuration order. The same numbers as `$SYS/broker/<kind>/<name>/...` and `/metrics`
//! (see [`crate::gateway::GatewayStatus`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;

#[derive(Debug, Serialize)]
pub struct Gateways {
    pub data: Vec<Gateway>,
}

#[derive(Debug, Serialize)]
pub struct Gateway {
    pub kind: &'static str,
    pub name: String,
    pub address: String,
    pub state: &'static str,
    pub metrics: BTreeMap<&'static str, u64>,
}

/// `GET /api/v1/gateways`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Gateways>, ApiError> {
    caller.may(Need::Read)?;
    let data = state
        .gateways
        .iter()
        .map(|g| Gateway {
            kind: g.kind().as_str(),
            name: g.name().to_owned(),
            address: g.address(),
            state: g.state(),
            metrics: g.metrics().iter().map(|m| (m.name, m.value)).collect(),
        })
        .collect();
    Ok(Json(Gateways { data }))
}
