//! Authentication (Basic credentials or the session cookie), the session-cookie store, the
//! `Origin` check, and the [`VoiceAuthenticator`] the Bayeux transport calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bayeux_transport::auth::Authenticator;
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, ORIGIN};
use parking_lot::Mutex;

use crate::config::VoiceConfig;
use crate::directory::{Directory, User};
use crate::util;

/// How a request authenticated.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// Valid Basic credentials; `cookie_ok` says whether the request also carried a valid
    /// session cookie of the same user (then no new cookie is minted).
    Basic { user: Arc<User>, cookie_ok: bool },
    /// A valid session cookie, no `Authorization` header.
    Cookie(Arc<User>),
}

impl Credentials {
    pub fn user(&self) -> &Arc<User> {
        match self {
            Credentials::Basic { user, .. } | Credentials::Cookie(user) => user,
        }
    }
}

#[derive(Debug)]
struct Entry {
    user: Arc<User>,
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

    /// The user of `token`, refreshing its idle timer.
    pub fn lookup(&self, token: &str) -> Option<Arc<User>> {
        let now = Instant::now();
        let mut s = self.store.lock();
        let e = s.tokens.get_mut(token)?;
        if now.saturating_duration_since(e.last_used) > self.idle {
            s.remove(token);
            return None;
        }
        e.last_used = now;
        Some(e.user.clone())
    }

    /// Mints a token for `user`, evicting the user's oldest beyond the per-user bound and the
    /// oldest overall beyond the global bound.
    pub fn create(&self, user: &Arc<User>) -> String {
        let token = util::token();
        let mut s = self.store.lock();
        s.tokens.insert(
            token.clone(),
            Entry {
                user: user.clone(),
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
        token
    }

    /// Number of live tokens.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.store.lock().tokens.len()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// `user:password` of an `Authorization: Basic` header.
fn basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(util::base64_decode(rest.trim())?).ok()?;
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
            cookie(headers, &self.cookie_name)
                .filter(|t| t.len() == 64)
                .and_then(|t| self.sessions.lookup(t))
        };
        if let Some(value) = headers.get(AUTHORIZATION) {
            let (name, password) = basic(value.to_str().ok()?)?;
            let user = self.directory.check_password(&name, &password)?.clone();
            let cookie_ok = from_cookie().is_some_and(|u| u.name == user.name);
            return Some(Credentials::Basic { user, cookie_ok });
        }
        from_cookie().map(Credentials::Cookie)
    }

    /// The `Set-Cookie` value for a new session of `user`.
    pub fn set_cookie(&self, user: &Arc<User>) -> String {
        let token = self.sessions.create(user);
        format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Lax{}",
            self.cookie_name,
            if self.secure_cookie { "; Secure" } else { "" }
        )
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
        format!(
            "Basic {}",
            util::base64_encode(format!("{u}:{p}").as_bytes())
        )
    }

    #[test]
    fn basic_credentials() {
        let g = gate(&VoiceConfig::default());
        let ok = headers(&[("authorization", &basic_header("agent1", "password"))]);
        assert_eq!(&*g.authenticate(&ok).unwrap().user().name, "agent1");
        for bad in [
            basic_header("agent1", "wrong"),
            basic_header("nobody", "password"),
            "Bearer abc".into(),
            "Basic !!!".into(),
            format!("Basic {}", util::base64_encode(b"no-colon")),
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
        let set = g.set_cookie(&user);
        assert!(set.contains("HttpOnly"));
        let token = set.split(';').next().unwrap().split_once('=').unwrap().1;
        let h = headers(&[("cookie", &format!("other=1; JSESSIONID={token}"))]);
        match g.authenticate(&h).unwrap() {
            Credentials::Cookie(u) => assert_eq!(&*u.name, "agent2"),
            c => panic!("{c:?}"),
        }
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
        let first = g.sessions.create(&a1);
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
        let t = g.sessions.create(&a1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(g.sessions.lookup(&t).is_none());
        assert_eq!(g.sessions.len(), 0);
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
        let cookie = set.split(';').next().unwrap().to_owned();
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
