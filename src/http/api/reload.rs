//! `POST /api/v1/reload`: what SIGHUP does (the password file and ACL, the API keys, every TLS
//! certificate; see [`crate::reload`]), answered with the result: 200 `{"result": "ok"}`, or
//! 422 `{"code": "RELOAD_FAILED", "message": "file:line: problem"}` when a file could not be
//! used (the previous one stays in force; the others were reloaded).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use tracing::{info, warn};

use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;

#[derive(Debug, Serialize)]
pub struct Reloaded {
    pub result: &'static str,
}

/// `POST /api/v1/reload`.
pub async fn reload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Reloaded>, ApiError> {
    caller.may(Need::Manage)?;
    let Some(reloader) = state.reloader.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_ENABLED",
            "this broker has nothing to reload",
        ));
    };
    info!(by = %caller, "reload requested through the HTTP API");
    // File I/O (and the ACL's parsing): off the runtime's threads, as SIGHUP's.
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(())) => Ok(Json(Reloaded { result: "ok" })),
        Ok(Err(problems)) => {
            warn!(by = %caller, "reload through the HTTP API failed: {problems}");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "RELOAD_FAILED",
                problems,
            ))
        }
        Err(_) => Err(ApiError::unavailable("the reload did not finish")),
    }
}
