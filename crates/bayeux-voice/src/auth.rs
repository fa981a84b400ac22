//! Authentication (Basic credentials or the session cookie), the session-cookie store and the
//! CSRF tokens kept with its sessions, the `Origin` check, and the [`VoiceAuthenticator`] the
//! Bayeux transport calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use bayeux_transport::auth::Authenticator;
use bayeux_transport::cookie_value;
use http::HeaderMap;
use http::header::{AUTHORIZATION, ORIGIN};
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use crate::config::VoiceConfig;
use crate::directory::{Directory, User};
use crate::util;

/// The request header that carries the CSRF token (`X-CSRF-TOKEN`; lower case, as `http`
/// header names are), named by the `X-CSRF-HEADER` response header as in GWS. It is also the
/// response header that hands the token out.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Standard Base64 as RFC 7617 uses it, padding optional: some clients leave it off, and a
/// missing `=` hides no attack.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How a request authenticated.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// Valid Basic credentials; `csrf` is the CSRF token of the request's valid session cookie
    /// of the same user, if it carried one (then no new cookie is minted).
    Basic {
        user: Arc<User>,
        csrf: Option<Arc<str>>,
    },
    /// A valid session cookie, no `Authorization` header; `csrf` is its session's token.
    Cookie { user: Arc<User>, csrf: Arc<str> },
}

impl Credentials {
    pub fn user(&self) -> &Arc<User> {
        match self {
            Credentials::Basic { user, .. } | Credentials::Cookie { user, .. } => user,
        }
    }

    /// The CSRF token of the request's cookie session, if the request has one.
    pub fn csrf(&self) -> Option<&Arc<str>> {
        match self {
            Credentials::Basic { csrf, .. } => csrf.as_ref(),
            Credentials::Cookie { csrf, .. } => Some(csrf),
        }
    }
}

#[derive(Debug)]
struct Entry {
    user: Arc<User>,
    /// The session's CSRF token: like GWS, one per HTTP session, living as long as it.
    csrf: Arc<str>,
    last_used: Instant,
}

#[derive(Debug, Default)]
struct Store {
    tokens: HashMap<String, Entry>,
    /// Insertion order, for eviction at the global bound.
    order: VecDeque<String>,
    /// Each user's tokens, oldest first, for eviction at the per-user bound.
    per_user: HashMap<Arc<str>, VecDeque<String>>,
}

impl Store {
    fn remove(&mut self, token: &str) {
        if let Some(e) = self.tokens.remove(token)
            && let Some(list) = self.per_user.get_mut(&e.user.name)
        {
            list.retain(|t| t != token);
            if list.is_empty() {
                self.per_user.remove(&e.user.name);
            }
        }
    }
}

/// Session cookies: random 256-bit token → user, bounded in total and per user, forgotten
/// after an idle timeout.
#[derive(Debug)]
pub(crate) struct Sessions {
    store: Mutex<Store>,
    max: usize,
    max_per_user: usize,
    idle: Duration,
}

impl Sessions {
    pub fn new(config: &VoiceConfig) -> Sessions {
        Sessions {
            store: Mutex::new(Store::default()),
            max: config.max_cookie_sessions.max(1),
            max_per_user: config.max_cookie_sessions_per_user.max(1),
            idle: Duration::from_secs(config.cookie_idle_timeout_secs),
        }
    }

    /// The user of `token` and the session's CSRF token, refreshing its idle timer.
    pub fn lookup(&self, token: &str) -> Option<(Arc<User>, Arc<str>)> {
        let now = Instant::now();
        let mut s = self.store.lock();
        let e = s.tokens.get_mut(token)?;
        if now.saturating_duration_since(e.last_used) > self.idle {
            s.remove(token);
            return None;
        }
        e.last_used = now;
        Some((e.user.clone(), e.csrf.clone()))
    }

    /// Mints a session for `user` (its cookie token and its CSRF token), evicting the user's
    /// oldest beyond the per-user bound and the oldest overall beyond the global bound.
    pub fn create(&self, user: &Arc<User>) -> (String, Arc<str>) {
        let token = util::token();
        let csrf: Arc<str> = Arc::from(util::csrf_token());
        let mut s = self.store.lock();
        s.tokens.insert(
            token.clone(),
            Entry {
                user: user.clone(),
                csrf: csrf.clone(),
                last_used: Instant::now(),
            },
        );
        s.order.push_back(token.clone());
        let list = s.per_user.entry(user.name.clone()).or_default();
        list.push_back(token.clone());
        let evict_user: Vec<String> = if list.len() > self.max_per_user {
            let n = list.len() - self.max_per_user;
            list.iter().take(n).cloned().collect()
        } else {
            Vec::new()
        };
        for t in evict_user {
            s.remove(&t);
        }
        while s.tokens.len() > self.max {
            match s.order.pop_front() {
                Some(t) => s.remove(&t),
                None => break,
            }
        }
        // Tokens evicted per user linger in `order`; drop them once it grows well past the
        // live set so it stays bounded too.
        if s.order.len() > 2 * self.max {
            let Store { tokens, order, .. } = &mut *s;
            order.retain(|t| tokens.contains_key(t));
        }
        (token, csrf)
    }

    /// Number of live tokens.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.store.lock().tokens.len()
    }
}

/// `user:password` of an `Authorization: Basic` header (RFC 7617: the password is everything
/// after the first colon, so it may contain colons; credentials must be UTF-8).
fn basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(rest.trim()).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Authentication and origin rules shared by the REST API and the Bayeux authenticator.
#[derive(Debug)]
pub(crate) struct Gate {
    pub directory: Arc<Directory>,
    pub sessions: Sessions,
    origins: Vec<String>,
    any_origin: bool,
    pub cookie_name: String,
    secure_cookie: bool,
}

impl Gate {
    pub fn new(config: &VoiceConfig, directory: Arc<Directory>) -> Gate {
        let origins = config.effective_origins();
        Gate {
            directory,
            sessions: Sessions::new(config),
            any_origin: origins.iter().any(|o| o == "*"),
            origins,
            cookie_name: config.session_cookie_name.clone(),
            secure_cookie: config.public_base_url.starts_with("https:"),
        }
    }

    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Whether `origin` may use the API.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }

    /// Whether the request's `Origin` is allowed. A request without one passes unless a browser
    /// marks it as made by another origin's page (`Sec-Fetch-Site`, see
    /// [`bayeux_transport::auth::marked_foreign`]): non-browser clients send neither header, but
    /// a browser's `<script>` loads and navigations from other pages carry the user's cookie and
    /// cached Basic credentials without an `Origin`.
    pub fn request_origin_ok(&self, headers: &HeaderMap) -> bool {
        let mut origins = headers.get_all(ORIGIN).iter().peekable();
        if origins.peek().is_none() {
            return !bayeux_transport::auth::marked_foreign(headers);
        }
        origins.all(|v| v.to_str().is_ok_and(|o| self.origin_allowed(o)))
    }

    /// Authenticates: an `Authorization` header decides when present (wrong Basic credentials
    /// are not rescued by a cookie); otherwise the session cookie.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Credentials> {
        let from_cookie = || {
            cookie_value(headers, &self.cookie_name)
                .filter(|t| t.len() == 64)
                .and_then(|t| self.sessions.lookup(t))
        };
        if let Some(value) = headers.get(AUTHORIZATION) {
            let (name, password) = basic(value.to_str().ok()?)?;
            let user = self.directory.check_password(&name, &password)?.clone();
            let csrf = from_cookie()
                .filter(|(u, _)| u.name == user.name)
                .map(|(_, csrf)| csrf);
            return Some(Credentials::Basic { user, csrf });
        }
        from_cookie().map(|(user, csrf)| Credentials::Cookie { user, csrf })
    }

    /// Whether the request's `X-CSRF-TOKEN` header is the CSRF token of its cookie session.
    /// A request without a valid session cookie has no token to match (GWS too answers such a
    /// client, one that keeps no cookies, "Missing or invalid Csrf token").
    pub fn csrf_ok(&self, creds: &Credentials, headers: &HeaderMap) -> bool {
        let (Some(expected), Some(sent)) = (creds.csrf(), headers.get(CSRF_HEADER)) else {
            return false;
        };
        // Constant time: the token is a secret a forger would otherwise guess byte by byte.
        bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
    }

    /// A new session of `user`: the `Set-Cookie` value and the session's CSRF token.
    pub fn set_cookie(&self, user: &Arc<User>) -> (String, Arc<str>) {
        let (token, csrf) = self.sessions.create(user);
        let cookie = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Lax{}",
            self.cookie_name,
            if self.secure_cookie { "; Secure" } else { "" }
        );
        (cookie, csrf)
    }
}

/// The [`Authenticator`] for the Bayeux notifications endpoint: valid Basic credentials or a
/// valid session cookie yield the user name as principal.
///
/// A request whose `Origin` is not allowed authenticates as nobody, so a foreign page cannot
/// ride the user's cookie into a WebSocket (cross-site WebSocket hijacking); the transport
/// should also refuse such origins outright (see [`crate::VoiceApi::allowed_origins`]).
#[derive(Debug, Clone)]
pub struct VoiceAuthenticator {
    pub(crate) gate: Arc<Gate>,
}

impl Authenticator for VoiceAuthenticator {
    fn authenticate(&self, parts: &http::request::Parts) -> Option<Arc<str>> {
        if !self.gate.request_origin_ok(&parts.headers) {
            return None;
        }
        self.gate
            .authenticate(&parts.headers)
            .map(|c| c.user().name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn gate(config: &VoiceConfig) -> Gate {
        Gate::new(config, Arc::new(Directory::new(&config.users)))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic_header(u: &str, p: &str) -> String {
        crate::basic_authorization(u, p)
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn basic_credentials() {
        let g = gate(&VoiceConfig::default());
        let ok = headers(&[("authorization", &basic_header("agent1", "password"))]);
        assert_eq!(&*g.authenticate(&ok).unwrap().user().name, "agent1");
        assert_eq!(
            basic_header("agent1", "password"),
            "Basic YWdlbnQxOnBhc3N3b3Jk"
        );
        // Scheme in any case, padding optional, surrounding whitespace ignored.
        for good in ["basic YWdlbnQxOnBhc3N3b3Jk", "BASIC  YWdlbnQxOnBhc3N3b3Jk "] {
            assert!(
                g.authenticate(&headers(&[("authorization", good)]))
                    .is_some(),
                "{good}"
            );
        }
        assert_eq!(basic("Basic YWI6"), Some(("ab".into(), String::new())));
        assert_eq!(basic("Basic YWI6Yw"), Some(("ab".into(), "c".into())));
        assert_eq!(
            basic(&format!("Basic {}", b64(b"u:p:q"))),
            Some(("u".into(), "p:q".into()))
        );
        for bad in [
            basic_header("agent1", "wrong"),
            basic_header("nobody", "password"),
            "Bearer abc".into(),
            "Basic".into(),
            "Basic ".into(),
            "Basic !!!".into(),
            "Basic YWdlbnQxOnBhc3N3b3Jk=".into(),
            "Basic YWdlbnQxOnBhc3N3b3J".into(),
            "Basic YWdlbnQx OnBhc3N3b3Jk".into(),
            format!("Basic {}", b64(b"no-colon")),
            format!("Basic {}", b64(b"agent1:\xffpassword")),
        ] {
            assert!(
                g.authenticate(&headers(&[("authorization", &bad)]))
                    .is_none(),
                "{bad}"
            );
        }
        assert!(g.authenticate(&HeaderMap::new()).is_none());
    }

    #[test]
    fn cookie_sessions() {
        let g = gate(&VoiceConfig::default());
        let user = g.directory.by_name("agent2").unwrap().clone();
        let (set, csrf) = g.set_cookie(&user);
        assert!(set.contains("HttpOnly"));
        let token = set.split(';').next().unwrap().split_once('=').unwrap().1;
        let h = headers(&[("cookie", &format!("other=1; JSESSIONID={token}"))]);
        match g.authenticate(&h).unwrap() {
            Credentials::Cookie { user, csrf: c } => {
                assert_eq!(&*user.name, "agent2");
                assert_eq!(c, csrf);
            }
            c => panic!("{c:?}"),
        }
        // The shared cookie parser: a quoted token is the same token.
        let quoted = headers(&[("cookie", &format!("JSESSIONID=\"{token}\""))]);
        assert_eq!(&*g.authenticate(&quoted).unwrap().user().name, "agent2");
        let unbalanced = headers(&[("cookie", &format!("JSESSIONID=\"{token}"))]);
        assert!(g.authenticate(&unbalanced).is_none());
        // Wrong Basic credentials are not rescued by a valid cookie.
        let h2 = headers(&[
            ("cookie", &format!("JSESSIONID={token}")),
            ("authorization", &basic_header("agent2", "nope")),
        ]);
        assert!(g.authenticate(&h2).is_none());
        let forged = headers(&[("cookie", &format!("JSESSIONID={}", "0".repeat(64)))]);
        assert!(g.authenticate(&forged).is_none());
    }

    #[test]
    fn cookie_store_is_bounded() {
        let config = VoiceConfig {
            max_cookie_sessions: 5,
            max_cookie_sessions_per_user: 3,
            ..VoiceConfig::default()
        };
        let g = gate(&config);
        let a1 = g.directory.by_name("agent1").unwrap().clone();
        let a2 = g.directory.by_name("agent2").unwrap().clone();
        let (first, _) = g.sessions.create(&a1);
        for _ in 0..10 {
            g.sessions.create(&a1);
        }
        assert_eq!(g.sessions.len(), 3);
        assert!(g.sessions.lookup(&first).is_none());
        for _ in 0..10 {
            g.sessions.create(&a2);
        }
        assert!(g.sessions.len() <= 5);
        assert!(g.sessions.store.lock().order.len() <= 10);
    }

    #[test]
    fn idle_cookies_expire() {
        let config = VoiceConfig {
            cookie_idle_timeout_secs: 0,
            ..VoiceConfig::default()
        };
        let g = gate(&config);
        let a1 = g.directory.by_name("agent1").unwrap().clone();
        let (t, _) = g.sessions.create(&a1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(g.sessions.lookup(&t).is_none());
        assert_eq!(g.sessions.len(), 0);
    }

    #[test]
    fn csrf_tokens_belong_to_cookie_sessions() {
        let g = gate(&VoiceConfig::default());
        let a1 = g.directory.by_name("agent1").unwrap().clone();
        let (set, csrf) = g.set_cookie(&a1);
        let (_, other_csrf) = g.set_cookie(&a1);
        assert_ne!(csrf, other_csrf);
        let pair = set.split(';').next().unwrap().to_owned();
        let creds = g.authenticate(&headers(&[("cookie", &pair)])).unwrap();
        assert!(g.csrf_ok(&creds, &headers(&[("x-csrf-token", &csrf)])));
        for wrong in [&*other_csrf, "", &csrf[..35]] {
            assert!(
                !g.csrf_ok(&creds, &headers(&[("x-csrf-token", wrong)])),
                "{wrong}"
            );
        }
        assert!(!g.csrf_ok(&creds, &HeaderMap::new()));
        // Basic credentials without a cookie session have no token to match.
        let basic_only = g
            .authenticate(&headers(&[(
                "authorization",
                &basic_header("agent1", "password"),
            )]))
            .unwrap();
        assert!(!g.csrf_ok(&basic_only, &headers(&[("x-csrf-token", &csrf)])));
        // Basic plus the same user's cookie: the cookie session's token.
        let both = g
            .authenticate(&headers(&[
                ("authorization", &basic_header("agent1", "password")),
                ("cookie", &pair),
            ]))
            .unwrap();
        assert!(g.csrf_ok(&both, &headers(&[("x-csrf-token", &csrf)])));
    }

    #[test]
    fn origins() {
        let g = gate(&VoiceConfig::default());
        assert!(g.origin_allowed("http://127.0.0.1:8080"));
        assert!(!g.origin_allowed("http://evil.example"));
        assert!(g.request_origin_ok(&HeaderMap::new()));
        // No Origin: trusted only where no browser says another page made the request.
        for site in ["same-origin", "none"] {
            assert!(
                g.request_origin_ok(&headers(&[("sec-fetch-site", site)])),
                "{site}"
            );
        }
        for site in ["same-site", "cross-site", "bogus"] {
            assert!(
                !g.request_origin_ok(&headers(&[("sec-fetch-site", site)])),
                "{site}"
            );
        }
        // With an Origin, the Origin decides.
        assert!(g.request_origin_ok(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-site"),
        ])));
        assert!(!g.request_origin_ok(&headers(&[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ])));
        let any = gate(&VoiceConfig {
            allowed_origins: vec!["*".into()],
            ..VoiceConfig::default()
        });
        assert!(any.origin_allowed("http://evil.example"));
    }

    #[test]
    fn authenticator_refuses_foreign_origins() {
        let g = Arc::new(gate(&VoiceConfig::default()));
        let a = VoiceAuthenticator { gate: g };
        let req = |origin: &str| {
            let (parts, ()) = http::Request::builder()
                .header("authorization", basic_header("agent1", "password"))
                .header("origin", origin)
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        assert_eq!(
            a.authenticate(&req("http://127.0.0.1:8080")).as_deref(),
            Some("agent1")
        );
        assert_eq!(a.authenticate(&req("http://evil.example")), None);
    }

    #[test]
    fn authenticator_refuses_credentials_of_foreign_script_loads() {
        let a = VoiceAuthenticator {
            gate: Arc::new(gate(&VoiceConfig::default())),
        };
        let user = a.gate.directory.by_name("agent1").unwrap().clone();
        let set = a.gate.set_cookie(&user);
        let cookie = set.0.split(';').next().unwrap().to_owned();
        let req = |fetch: &[(&str, &str)]| {
            let mut b = http::Request::builder().header("cookie", cookie.as_str());
            for (k, v) in fetch {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        // A non-browser client and the server's own pages: the cookie authenticates.
        assert_eq!(a.authenticate(&req(&[])).as_deref(), Some("agent1"));
        let own = [
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-dest", "empty"),
        ];
        assert_eq!(a.authenticate(&req(&own)).as_deref(), Some("agent1"));
        // Another page's <script>: no Origin, the cookie attached; nobody.
        for site in ["same-site", "cross-site"] {
            let script = [
                ("sec-fetch-site", site),
                ("sec-fetch-mode", "no-cors"),
                ("sec-fetch-dest", "script"),
            ];
            assert_eq!(a.authenticate(&req(&script)), None, "{site}");
        }
    }
}
