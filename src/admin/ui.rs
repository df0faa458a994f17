//! The status page (`GET /` and `/ui`): static files compiled into the binary, served without
//! the token (they hold no data; the page asks for the token and sends it on its own
//! requests to `/status`, `/metrics` and `/backends`).

use super::routes::AdminResponse;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Only same-origin scripts, styles and requests; no framing, no plugins, no inline code.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
];

/// The file served at `path` (already stripped of a trailing slash), if it is one of the
/// page's.
pub fn asset(path: &str) -> Option<AdminResponse> {
    let (content_type, text) = match path {
        "/" | "/ui" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/ui/app.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut r = AdminResponse::content(content_type, text.as_bytes().to_vec());
    r.headers = SECURITY_HEADERS;
    Some(r)
}
