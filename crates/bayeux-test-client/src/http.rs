//! HTTP: a keep-alive connection with a browser's cookie jar, one-shot requests on a connection
//! of their own (HTTP/1.1 or HTTP/2 prior knowledge), and the fully read response.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::{CONNECT_TIMEOUT, Error, Target};

/// The content type of every JSON request body.
const JSON: &str = "application/json;charset=UTF-8";

/// A fully read HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version it came over.
    pub version: Version,
    /// Every header.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, showing the start of the body, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            // Bodies of refused requests can be large: the start says enough.
            let start = &self.body[..self.body.len().min(1000)];
            panic!(
                "{} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(start)
            )
        })
    }

    /// The body as a JSON array of messages (panics if it is not one).
    pub fn messages(&self) -> Vec<Value> {
        match self.json() {
            Value::Array(a) => a,
            other => panic!("body is not a JSON array: {other}"),
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The body of a successful (2xx) response; any other status is an error showing the body.
    pub fn success(self) -> Result<Bytes, Error> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(format!("HTTP {}: {}", self.status, self.text()).into())
        }
    }
}

/// A browser's cookies for one site: the `name=value` pairs of the `Set-Cookie`s received,
/// sent back as one `Cookie` header. Attributes (path, expiry, ...) are ignored: every cookie
/// goes with every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jar {
    /// The `Cookie` header value, `a=1; b=2`.
    header: String,
}

impl Jar {
    /// A jar holding `name=value`.
    pub fn with(kv: &str) -> Jar {
        let mut j = Jar::default();
        j.set(kv);
        j
    }

    /// The `Cookie` header to send, if any cookie is held.
    pub fn header(&self) -> Option<&str> {
        (!self.header.is_empty()).then_some(self.header.as_str())
    }

    /// Whether no cookie is held.
    pub fn is_empty(&self) -> bool {
        self.header.is_empty()
    }

    /// Forgets every cookie.
    pub fn clear(&mut self) {
        self.header.clear();
    }

    /// The value of cookie `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.header.split("; ").find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// Stores `name=value`, replacing a cookie of that name.
    pub fn set(&mut self, kv: &str) {
        let Some((name, _)) = kv.split_once('=') else {
            return;
        };
        let mut parts: Vec<&str> = self
            .header
            .split("; ")
            .filter(|p| !p.is_empty() && p.split_once('=').map(|x| x.0) != Some(name))
            .collect();
        parts.push(kv);
        self.header = parts.join("; ");
    }

    /// Stores every cookie set by `headers`.
    pub fn store(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(header::SET_COOKIE) {
            if let Some(kv) = v.to_str().ok().and_then(|v| v.split(';').next()) {
                self.set(kv.trim());
            }
        }
    }
}

/// The sending half of a client connection.
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Opens a TCP connection to `authority` (bounded by [`CONNECT_TIMEOUT`]), without Nagle's
/// delay: requests and frames are written whole, and waiting would only add latency.
pub(crate) async fn tcp(authority: &str) -> Result<TcpStream, Error> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| format!("connecting to {authority} timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One HTTP connection to a [`Target`], kept alive across requests, with the cookie [`Jar`] of
/// the browser it belongs to.
///
/// [`Http::post`] behaves like a browser's XHR to the Bayeux endpoint (cookies sent and stored);
/// [`Http::request`] and [`Http::send`] send exactly what they are given.
pub struct Http {
    target: Target,
    h2: bool,
    reconnect: bool,
    sender: Option<Sender>,
    /// The cookies sent with, and stored from, [`Http::post`].
    pub jar: Jar,
}

impl Http {
    /// A connection to `target`, opened on first use.
    pub fn new(target: impl Into<Target>) -> Http {
        Http {
            target: target.into(),
            h2: false,
            reconnect: false,
            sender: None,
            jar: Jar::default(),
        }
    }

    /// An HTTP/1.1 connection to `target`, opened now.
    pub async fn connect(target: impl Into<Target>) -> Result<Http, Error> {
        let mut h = Http::new(target);
        h.open().await?;
        Ok(h)
    }

    /// An HTTP/2 (prior knowledge) connection to `target`, opened now.
    pub async fn connect_h2(target: impl Into<Target>) -> Result<Http, Error> {
        let mut h = Http::new(target);
        h.h2 = true;
        h.open().await?;
        Ok(h)
    }

    /// Reopens the connection when the server closed it between requests, as a browser does.
    /// Without this a closed connection fails the next request: a test sees the close.
    pub fn reconnecting(mut self) -> Http {
        self.reconnect = true;
        self
    }

    /// A connection of the same browser: same target, cookies and reconnect policy, its own
    /// connection (opened on first use).
    pub fn sibling(&self) -> Http {
        Http {
            target: self.target.clone(),
            h2: self.h2,
            reconnect: self.reconnect,
            sender: None,
            jar: self.jar.clone(),
        }
    }

    /// The endpoint.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Closes the connection (the cookies stay); the next request opens a new one.
    pub fn close(&mut self) {
        self.sender = None;
    }

    async fn open(&mut self) -> Result<(), Error> {
        let io = TokioIo::new(tcp(&self.target.authority).await?);
        self.sender = Some(if self.h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(sender)
        });
        Ok(())
    }

    /// Sends `req` as built (its URI and headers untouched) and reads the whole response.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, Error> {
        let alive = match &mut self.sender {
            Some(Sender::H1(s)) => s.ready().await.map_err(Error::from),
            Some(Sender::H2(s)) => s.ready().await.map_err(Error::from),
            None => Err("not connected".into()),
        };
        match alive {
            Ok(()) => {}
            Err(_) if self.sender.is_none() || self.reconnect => self.open().await?,
            Err(e) => return Err(e),
        }
        let resp = match self.sender.as_mut().ok_or("not connected")? {
            Sender::H1(s) => s.send_request(req).await?,
            Sender::H2(s) => s.send_request(req).await?,
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// Sends `method path` with `headers` (and `Host`) and `body`; no cookie is added or stored.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, Error> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.target.authority.as_str());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(body.into()))?).await
    }

    /// POSTs a JSON body to the endpoint like a browser: with the jar's cookies, storing those
    /// the response sets.
    pub async fn post(&mut self, body: impl Into<Bytes>) -> Result<Resp, Error> {
        let mut b = Request::post(self.target.path.as_str())
            .header(header::HOST, self.target.authority.as_str())
            .header(header::CONTENT_TYPE, JSON);
        if let Some(c) = self.jar.header() {
            b = b.header(header::COOKIE, c);
        }
        let resp = self.send(b.body(Full::new(body.into()))?).await?;
        self.jar.store(&resp.headers);
        Ok(resp)
    }
}

/// Sends one request on a new HTTP/1.1 connection and reads the whole response (panics on any
/// failure).
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let mut http = Http::connect(addr).await.expect("connect");
    http.send(req).await.expect("send request")
}

/// Sends one request on a new HTTP/2 (prior knowledge) connection (panics on any failure).
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let mut http = Http::connect_h2(addr).await.expect("connect");
    http.send(req).await.expect("send request")
}

/// A POST of `body` (JSON) to `path` at `addr`, with an absolute URI and `Host`.
pub fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, JSON)
        .body(Full::new(body.into()))
        .expect("request")
}

/// A request to `path_and_query` at `addr`, with an absolute URI and `Host`, to add headers and
/// a body to.
pub fn empty(method: Method, addr: SocketAddr, path_and_query: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"))
        .header(header::HOST, addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_jar_replaces_by_name() {
        let mut j = Jar::default();
        assert_eq!(j.header(), None);
        j.set("A=1");
        j.set("B=2");
        j.set("A=3");
        assert_eq!(j.header(), Some("B=2; A=3"));
        assert_eq!(j.get("A"), Some("3"));
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, "C=4; Path=/; HttpOnly".parse().unwrap());
        h.append(header::SET_COOKIE, "B=5".parse().unwrap());
        j.store(&h);
        assert_eq!(j.header(), Some("A=3; C=4; B=5"));
        j.clear();
        assert!(j.is_empty());
    }
}
