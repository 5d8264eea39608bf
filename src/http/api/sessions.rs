//! `DELETE /api/v1/sessions/{clientid}`: ends a session for good. A connected client is
//! disconnected (5.0: DISCONNECT 0x98, administrative action); the session's subscriptions,
//! queued messages and will go, and a persistent session is removed from the store too (as
//! its expiry would). 204, or 404 when there is no such session. `DELETE /api/v1/clients/{id}`
//! only disconnects.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tracing::info;

use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::protocol::{DisconnectReason, text};

/// `DELETE /api/v1/sessions/{clientid}`.
pub async fn discard(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.may(Need::Manage)?;
    let Path(id) = id?;
    if !state
        .ctx
        .router
        .discard_session(&id, DisconnectReason::AdministrativeAction)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CLIENTID_NOT_FOUND",
            format!("no session {:?}", text::cut(&id)),
        ));
    }
    info!(client_id = %text::cut(&id), by = %caller, "session discarded through the HTTP API");
    Ok(StatusCode::NO_CONTENT)
}
