//! Worker addresses as a model gateway writes them, normalized to one metrics URL.
//!
//! - `http://host:port`, `https://host:port`: path `/metrics` when none is given;
//! - `http://host:port/path`: kept as given (query included);
//! - `grpc://host:port@N` (a dp-aware worker's rank `N`) and `grpc://host:port`:
//!   `http://host:port/metrics`. Every rank of one `host:port` is one metrics URL; the
//!   port must be the one serving metrics (no `+1`/`+10000` port scheme is derived:
//!   those collide between neighbouring workers);
//! - `host:port`, `[::1]:port`: `http://` in front.
//!
//! The URL is normalized by the WHATWG rules (`url` crate, through reqwest): host in
//! lowercase, IPv6 in its canonical bracketed form, default ports dropped. Its string
//! is the target's identity and its `worker_addr` label.

use reqwest::Url;

/// A worker's metrics URL, from one configured address.
pub fn metrics_url(address: &str) -> Result<Url, String> {
    let a = address.trim();
    if a.is_empty() {
        return Err("empty scrape address".into());
    }
    let with_scheme = match a.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => a.to_owned(),
            "grpc" | "grpcs" => {
                let host_port = match rest.rsplit_once('@') {
                    Some((hp, rank))
                        if !rank.is_empty() && rank.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        hp
                    }
                    Some(_) => {
                        return Err(format!("{a:?}: the part after @ must be a dp rank number"))
                    }
                    None => rest,
                };
                let host_port = host_port.trim_end_matches('/');
                if host_port.contains('/') {
                    return Err(format!("{a:?}: a grpc:// address has no path"));
                }
                let scheme = if scheme.eq_ignore_ascii_case("grpcs") {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{host_port}/metrics")
            }
            other => {
                return Err(format!(
                    "{a:?}: scheme {other:?} is not http, https or grpc"
                ))
            }
        },
        None => format!("http://{a}"),
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| format!("{a:?}: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{a:?}: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{a:?}: credentials in a scrape address are not supported"
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/metrics");
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::metrics_url;

    fn u(a: &str) -> String {
        metrics_url(a).unwrap().to_string()
    }

    #[test]
    fn gateway_forms_collapse_onto_one_url() {
        let want = "http://127.0.0.1:30000/metrics";
        for a in [
            "http://127.0.0.1:30000",
            "http://127.0.0.1:30000/",
            "http://127.0.0.1:30000/metrics",
            "127.0.0.1:30000",
            "grpc://127.0.0.1:30000",
            "grpc://127.0.0.1:30000@0",
            "grpc://127.0.0.1:30000@7",
            " HTTP://127.0.0.1:30000 ",
        ] {
            assert_eq!(u(a), want, "{a}");
        }
        assert_eq!(u("http://[::1]:30000"), "http://[::1]:30000/metrics");
        assert_eq!(u("[0:0:0:0:0:0:0:1]:30000"), "http://[::1]:30000/metrics");
        assert_eq!(u("grpc://[::1]:50051@3"), "http://[::1]:50051/metrics");
        assert_eq!(
            u("https://W1.example:443/m?x=1"),
            "https://w1.example/m?x=1"
        );
        assert_eq!(u("http://w1:80"), "http://w1/metrics");
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        for a in [
            "",
            "ftp://x:1",
            "grpc://x:1@a",
            "grpc://x:1@",
            "grpc://x:1/p",
            "http://u:p@x:1",
            "http://:1",
            "x:notaport",
        ] {
            assert!(metrics_url(a).is_err(), "{a:?} accepted");
        }
    }
}
