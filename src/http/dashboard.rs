//! The dashboard: a single-page app served at `/`, its files embedded in the binary
//! (`src/http/dashboard/`: HTML, CSS, JavaScript modules; no CDN, no build step).
//!
//! The page and its assets are public: they hold no data. Everything the page shows comes from
//! `/api/v1`, which checks who is asking (the session cookie after the login form).
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and connections from
//! this origin only, no inline script or style (the HTML has none), no framing. Assets are
//! revalidated on each load (`Cache-Control: no-cache`) against an `ETag` made from their
//! content, so a new broker version is picked up at once and an unchanged one costs a 304.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The policy for the page and its assets. `img-src data:` lets the chart be saved as an image;
/// `form-action 'self'` and `base-uri 'none'` close the two ways around `default-src`.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("dashboard/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Everything under `/assets/`; `index.html` is `/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("chart.js", JS),
    asset!("login.js", JS),
    asset!("overview.js", JS),
    asset!("clients.js", JS),
    asset!("topics.js", JS),
    asset!("retained.js", JS),
    asset!("live.js", JS),
    asset!("history.js", JS),
    asset!("publish.js", JS),
    asset!("listeners.js", JS),
];

/// Each asset's ETag (a quoted prefix of its SHA-256), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// `GET /`.
pub async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(i, &headers),
        None => ApiError::not_found("no such dashboard file").into_response(),
    }
}

fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = response.headers_mut();
    if !fresh {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // nosniff, X-Frame-Options and Referrer-Policy come from the security layer, as on every
    // answer (see security.rs).
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_the_page_has_nothing_inline() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("style="), "inline style in index.html");
        assert!(!html.contains("<style"), "inline style in index.html");
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src="), "inline script in index.html");
        }
        // Every module the page imports is served.
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let file = line.split("\"./").nth(1).and_then(|r| r.split('"').next());
                let file = file.unwrap_or_else(|| panic!("{}: odd import {line}", a.name));
                assert!(names.contains(&file), "{} imports {file}", a.name);
            }
        }
    }

    #[tokio::test]
    async fn assets_have_their_type_an_etag_and_the_policy() {
        let r = asset(Path("app.js".into()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let etag = r.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        let r = asset(Path("app.js".into()), again).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = asset(Path("../Cargo.toml".into()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = index(HeaderMap::new()).await;
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
