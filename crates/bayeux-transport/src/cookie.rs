//! The browser cookie (`BAYEUX_BROWSER` by default): read from requests, minted for a
//! handshake that arrives without one, bound to the session so that `multiple-clients` advice
//! can count one browser's long polls.

use std::sync::Arc;

use bayeux_core::{Message, RequestContext, random_hex};
use http::header::{self, HeaderMap, HeaderValue};

use crate::config::{SameSite, TransportConfig};

/// The value of cookie `name` in the request's `Cookie` headers: the first pair of that name,
/// whitespace around the value dropped and, when the value is wrapped in one pair of double
/// quotes (RFC 6265 allows `name="value"`), without them. A lone or unbalanced quote is kept,
/// so such a value fails whatever shape check its caller applies.
///
/// The one cookie parser of the workspace: the transport's browser cookie and the voice API's
/// session cookie both go through it, so both read a quoted value the same way.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| unquote(v.trim()))
}

/// `v` without one pair of enclosing DQUOTEs, if it has them.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(v)
}

/// The request's browser id, if it carries a well-formed one.
pub(crate) fn browser_id<'a>(headers: &'a HeaderMap, cfg: &TransportConfig) -> Option<&'a str> {
    cookie_value(headers, &cfg.cookie.name).filter(|b| valid_browser_id(b))
}

fn valid_browser_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A request without the browser cookie that handshakes gets a new browser id: the session is
/// bound to it and the returned `Set-Cookie` value goes on the response. Requests without the
/// cookie that do not handshake stay unbound (clients that keep no cookies).
pub(crate) fn mint_browser(
    cfg: &TransportConfig,
    ctx: &mut RequestContext,
    batch: &[Message],
) -> Option<HeaderValue> {
    if ctx.browser.is_some()
        || !batch
            .iter()
            .any(|m| m.channel.as_deref() == Some("/meta/handshake"))
    {
        return None;
    }
    let id = random_hex(16);
    ctx.browser = Some(Arc::from(id.as_str()));
    HeaderValue::from_str(&set_cookie(cfg, &id)).ok()
}

fn set_cookie(cfg: &TransportConfig, value: &str) -> String {
    let c = &cfg.cookie;
    let mut s = format!("{}={}; Path={}", c.name, value, c.path);
    if c.http_only {
        s.push_str("; HttpOnly");
    }
    if c.secure {
        s.push_str("; Secure");
    }
    match c.same_site {
        SameSite::Unset => {}
        SameSite::Lax => s.push_str("; SameSite=Lax"),
        SameSite::Strict => s.push_str("; SameSite=Strict"),
        SameSite::None => s.push_str("; SameSite=None"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; BAYEUX_BROWSER=abc ; c=3"),
        );
        assert_eq!(cookie_value(&h, "BAYEUX_BROWSER"), Some("abc"));
        assert_eq!(cookie_value(&h, "x"), None);
        assert_eq!(browser_id(&h, &TransportConfig::default()), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("BAYEUX_BROWSER=a-b"),
        );
        assert_eq!(browser_id(&h, &TransportConfig::default()), None);
    }

    fn jar(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn quoted_values_lose_one_pair_of_quotes() {
        assert_eq!(cookie_value(&jar("a=\"abc\""), "a"), Some("abc"));
        assert_eq!(cookie_value(&jar("x=1; a=\"abc\" ; b=2"), "a"), Some("abc"));
        assert_eq!(cookie_value(&jar("a=abc"), "a"), Some("abc"));
        // An empty quoted value is an empty value.
        assert_eq!(cookie_value(&jar("a=\"\""), "a"), Some(""));
        // Only one pair goes; unbalanced quotes stay, for the caller's shape check to refuse.
        assert_eq!(cookie_value(&jar("a=\"\"abc\"\""), "a"), Some("\"abc\""));
        assert_eq!(cookie_value(&jar("a=\"abc"), "a"), Some("\"abc"));
        assert_eq!(cookie_value(&jar("a=abc\""), "a"), Some("abc\""));
        assert_eq!(cookie_value(&jar("a=\""), "a"), Some("\""));
        // The browser id reads the same with or without quotes.
        let cfg = TransportConfig::default();
        assert_eq!(
            browser_id(&jar("BAYEUX_BROWSER=\"abc\""), &cfg),
            Some("abc")
        );
        assert_eq!(browser_id(&jar("BAYEUX_BROWSER=\"abc"), &cfg), None);
    }

    #[test]
    fn first_pair_wins_across_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("a=2; b=\"3\""));
        assert_eq!(cookie_value(&h, "a"), Some("1"));
        assert_eq!(cookie_value(&h, "b"), Some("3"));
        // Names match exactly: no prefix or case folding.
        assert_eq!(cookie_value(&h, "A"), None);
        assert_eq!(cookie_value(&jar("ab=1"), "a"), None);
    }
}
