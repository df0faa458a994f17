//! A strict-enough parser for the Prometheus text exposition, sample lookup by name and
//! labels, and a scrape of the gateway's `/metrics`.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;

use super::admin_api::admin;
use super::Gateway;

/// One sample of the text exposition.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format strictly enough for a test: every non-comment line is
/// `name{labels} value` with a float value; every sample's family has HELP and TYPE lines.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut help = HashMap::new();
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
            help.insert(name.to_string(), ());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("bad type: {line}"));
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value not a float: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?;
                (
                    name,
                    parse_labels(body).map_err(|e| format!("{e}: {line}"))?,
                )
            }
        };
        if !valid_name(name) {
            return Err(format!("bad metric name: {line}"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        if !help.contains_key(family) || !types.contains_key(family) {
            return Err(format!("no HELP/TYPE for {family}"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_labels(body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        if chars.next() != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        }
        labels.insert(key.trim().to_string(), value);
        match chars.next() {
            None => return Ok(labels),
            Some(',') if chars.peek().is_none() => return Ok(labels),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
}

/// The value of the first sample named `name` that carries all of `labels`.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
}

/// Fetches `/metrics` and parses it (panics with the text if it is not valid exposition).
pub async fn scrape(gw: &Gateway) -> Vec<Sample> {
    let text = admin(gw, Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
