//! Calls to the admin API that the admin and metrics suites share: one request builder, the
//! JSON of an answer, adding and removing a backend, the pool as `/status` lists it, and
//! waiting for in-flight counts to return to 0.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{client, eventually, Gateway};

/// How long the admin suites wait for a state the gateway must reach.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A request to the admin API.
pub fn admin(gw: &Gateway, method: Method, path: &str) -> reqwest::RequestBuilder {
    client().request(method, gw.admin(path))
}

/// Status and JSON body of a response (panics with the text if the body is not JSON).
pub async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    (status, value)
}

/// `POST /backends` with `body` as JSON.
pub async fn add(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    let resp = admin(gw, Method::POST, "/backends")
        .json(&body)
        .send()
        .await
        .expect("POST /backends");
    json_of(resp).await
}

/// `DELETE /backends?url=<url>`.
pub async fn delete_by_query(gw: &Gateway, url: &str) -> (StatusCode, Value) {
    let resp = admin(gw, Method::DELETE, "/backends")
        .query(&[("url", url)])
        .send()
        .await
        .expect("DELETE /backends");
    json_of(resp).await
}

/// The pool as `/status` lists it: (url, weight), sorted.
pub async fn pool(gw: &Gateway) -> Vec<(String, u64)> {
    let status = gw.status().await;
    let mut list: Vec<(String, u64)> = status["backends"]
        .as_array()
        .expect("backends array")
        .iter()
        .map(|b| {
            let url = b["url"].as_str().expect("url").to_string();
            (url, b["weight"].as_u64().expect("weight"))
        })
        .collect();
    list.sort();
    list
}

/// Waits until every in-flight count (pool and draining) is back to 0.
pub async fn wait_idle(gw: &Gateway) -> bool {
    eventually(DEADLINE, || async {
        let s = gw.status().await;
        let idle = |list: &Value| {
            list.as_array()
                .is_some_and(|l| l.iter().all(|b| b["current_connections"] == 0))
        };
        idle(&s["backends"]) && s["draining"].as_array().is_some_and(|d| d.is_empty())
    })
    .await
}
