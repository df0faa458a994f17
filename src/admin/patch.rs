//! `PATCH /backends`: changes a backend that stays in the pool (HAProxy's `set weight` and
//! `set server state drain|ready`): `{"url": ..., "weight": n}` and/or `"state": "drain" |
//! "enabled"`.

use serde::Deserialize;

use super::routes::{
    backend_json, control_error, json_body, AdminApi, AdminRequest, AdminResponse,
};
use crate::config::{BackendSpec, BackendUrl};
use crate::control::BackendChange;

/// The JSON body of `PATCH /backends`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    url: String,
    weight: Option<i64>,
    state: Option<String>,
}

impl AdminApi {
    /// Applies the change through `Control` (stored, then applied) and answers 200 with the
    /// backend as `/status` shows it; 400 for a bad body, URL, weight or state, or nothing to
    /// change; 404 when the URL is not in the pool.
    pub(super) async fn patch(&self, req: &AdminRequest) -> AdminResponse {
        let body = match json_body(req) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return AdminResponse::error(
                    400,
                    "missing JSON body {\"url\": ..., \"weight\": n} or {\"url\": ..., \"state\": \"drain\" | \"enabled\"}",
                )
            }
            Err(r) => return r,
        };
        let parsed: PatchBody = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return AdminResponse::error(400, format!("invalid JSON body: {e}")),
        };
        let url = match BackendUrl::parse(&parsed.url) {
            Ok(u) => u,
            Err(e) => return AdminResponse::error(400, e),
        };
        let weight = match parsed
            .weight
            .map(|w| BackendSpec::check_weight("weight", w))
        {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => return AdminResponse::error(400, e),
        };
        let drained = match parsed.state.as_deref() {
            None => None,
            Some("drain") => Some(true),
            Some("enabled") => Some(false),
            Some(other) => {
                return AdminResponse::error(
                    400,
                    format!("state: {other:?} is not one of \"drain\", \"enabled\""),
                )
            }
        };
        match self
            .control
            .patch(&url, BackendChange { weight, drained })
            .await
        {
            Ok(b) => AdminResponse::json(200, &backend_json(&b)),
            Err(e) => control_error(e),
        }
    }
}
