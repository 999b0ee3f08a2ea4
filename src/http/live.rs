//! `GET /`: the live page, one HTML file with its CSS and JS, built into the binary.
//! It holds no data: it reads `/v1/stream` from the browser, with the bearer token
//! when the JSON API asks for one, so serving it open leaks nothing.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, embedded at build time (no front-end build step, no CDN).
const PAGE: &str = include_str!("live/index.html");

/// Where the page may load from: nothing but itself and this origin's API, so it
/// works offline and an injected reference to another host would be refused.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

/// `GET /`: the live view of every rank.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_anywhere_else() {
        // Offline and air-gapped: no script, style, font or image from a URL, only
        // inline code and links relative to this exporter.
        for needle in [
            "http:", "https:", "//cdn", "src=", "@import", "url(", "<link",
        ] {
            assert!(
                !PAGE.contains(needle),
                "the page refers elsewhere: {needle}"
            );
        }
        assert!(
            PAGE.contains("v1/stream?interval=1s"),
            "it reads the snapshot stream"
        );
        assert!(
            PAGE.len() < 32 * 1024,
            "one small file: {} bytes",
            PAGE.len()
        );
    }
}
