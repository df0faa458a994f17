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

/// One of the page's files: its content type and text.
pub type File = (&'static str, &'static str);

/// The page's file at `path` (already stripped of a trailing slash), if it is one.
pub fn file(path: &str) -> Option<File> {
    match path {
        "/" | "/ui" | "/ui/index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "/ui/app.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/ui/app.css" => Some(("text/css; charset=utf-8", STYLE)),
        _ => None,
    }
}

/// The answer serving `file`, with the page's security headers.
pub fn serve((content_type, text): File) -> AdminResponse {
    let mut r = AdminResponse::content(content_type, text.as_bytes().to_vec());
    r.headers = SECURITY_HEADERS;
    r
}
