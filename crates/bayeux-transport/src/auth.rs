//! Request authentication: how a transport learns the principal of an HTTP request, and what a
//! browser's fetch metadata (`Sec-Fetch-*`) says about where a request comes from.

use std::sync::Arc;

use http::HeaderMap;

/// Authenticates HTTP requests (long-polling POSTs, JSONP GETs, WebSocket upgrades).
///
/// The principal returned becomes [`bayeux_core::RequestContext::principal`]: a session created by
/// a handshake is bound to it, and every later request naming that session must authenticate as
/// the same principal. A WebSocket is authenticated once, by its upgrade request.
pub trait Authenticator: Send + Sync + 'static {
    /// The principal this request authenticates as, or `None` when it carries no valid
    /// credentials.
    fn authenticate(&self, parts: &http::request::Parts) -> Option<Arc<str>>;
}

/// Whether a browser marks the request as made by a page of another origin: `Sec-Fetch-Site`
/// is present and is neither `same-origin` nor `none` (a user-initiated navigation: typed URL,
/// bookmark). Unknown values count as foreign, so a future value fails closed.
///
/// An absent header says nothing: non-browser clients and browsers older than fetch metadata
/// send none. This is what makes a request without `Origin` trustworthy or not: a `<script>`,
/// `<img>` or navigation from another page carries the user's cookies and cached Basic
/// credentials but no `Origin`.
pub fn marked_foreign(headers: &HeaderMap) -> bool {
    headers.get_all("sec-fetch-site").iter().any(|v| {
        !(v.as_bytes().eq_ignore_ascii_case(b"same-origin")
            || v.as_bytes().eq_ignore_ascii_case(b"none"))
    })
}

/// Whether a browser marks the request as a script load (`Sec-Fetch-Dest: script`): the only
/// way a page of another origin can read a response without CORS is to run it as a script
/// (JSONP).
pub fn script_load(headers: &HeaderMap) -> bool {
    headers
        .get_all("sec-fetch-dest")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"script"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fetch_site_values() {
        assert!(!marked_foreign(&HeaderMap::new()));
        for own in ["same-origin", "none", "Same-Origin"] {
            assert!(
                !marked_foreign(&headers(&[("sec-fetch-site", own)])),
                "{own}"
            );
        }
        for foreign in ["same-site", "cross-site", "", "bogus"] {
            assert!(
                marked_foreign(&headers(&[("sec-fetch-site", foreign)])),
                "{foreign:?}"
            );
        }
        // A second, foreign value is not hidden behind a first, harmless one.
        assert!(marked_foreign(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "cross-site"),
        ])));
    }

    #[test]
    fn script_destination() {
        assert!(script_load(&headers(&[("sec-fetch-dest", "script")])));
        assert!(!script_load(&headers(&[("sec-fetch-dest", "empty")])));
        assert!(!script_load(&HeaderMap::new()));
    }
}
