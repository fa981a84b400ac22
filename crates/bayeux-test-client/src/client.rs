//! A long-polling client for tests.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{Jar, Resp, connect_msg, find, handshake_msg, publish_msg, reply, send, subscribe_msg};

/// A long-polling client that keeps the `BAYEUX_BROWSER` cookie like a browser and numbers its
/// messages. Each request goes on a connection of its own (a held connect and the next request
/// of the same browser never share one). Its Bayeux methods assert what every answer to them
/// must satisfy and panic otherwise.
#[derive(Debug, Clone)]
pub struct Client {
    /// The server.
    pub addr: SocketAddr,
    /// The cookies sent with each request.
    pub jar: Jar,
    /// Whether `Set-Cookie` is stored in [`Client::jar`].
    pub keep_cookies: bool,
    /// Extra headers sent with each request.
    pub headers: Vec<(String, String)>,
    /// The session id after a handshake.
    pub client_id: Option<String>,
    next_id: u64,
}

impl Client {
    /// A client with no cookie yet.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            jar: Jar::default(),
            keep_cookies: true,
            headers: Vec::new(),
            client_id: None,
            next_id: 0,
        }
    }

    /// Adds a header sent with each request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A fresh message id.
    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// The session id (panics before a handshake).
    pub fn id(&self) -> &str {
        self.client_id.as_deref().expect("not handshaken")
    }

    /// The request for `body` on `path`, with this client's cookies and headers.
    pub fn request(&self, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        let mut b = Request::post(format!("http://{}{path}", self.addr))
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
        if let Some(c) = self.jar.header() {
            b = b.header(header::COOKIE, c);
        }
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(body.into())).expect("request")
    }

    /// POSTs `body` (JSON) to `path`, storing any cookie set.
    pub async fn post(&mut self, path: &str, body: &Value) -> Resp {
        let req = self.request(path, body.to_string());
        let resp = send(self.addr, req).await;
        self.store_cookie(&resp);
        resp
    }

    /// Stores the cookies `resp` sets, unless [`Client::keep_cookies`] is off.
    pub fn store_cookie(&mut self, resp: &Resp) {
        if self.keep_cookies {
            self.jar.store(&resp.headers);
        }
    }

    /// Handshakes for `long-polling`; returns the reply (and keeps the clientId of a successful
    /// one).
    pub async fn handshake(&mut self) -> Value {
        let id = self.next_id();
        let resp = self
            .post(
                "/cometd/handshake",
                &json!([handshake_msg(&id, &["long-polling"])]),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let reply = find(&resp.messages(), "/meta/handshake").clone();
        assert_eq!(reply["id"], id.as_str());
        if reply["successful"] == true {
            self.client_id = Some(reply["clientId"].as_str().expect("clientId").to_owned());
        }
        reply
    }

    /// Handshakes and sends the first (immediate) connect, both of which must succeed.
    pub async fn handshake_and_connect(&mut self) {
        let reply = self.handshake().await;
        assert_eq!(reply["successful"], true, "{reply}");
        let msgs = self.connect().await;
        assert_eq!(find(&msgs, "/meta/connect")["successful"], true, "{msgs:?}");
    }

    /// The next `/meta/connect` message.
    pub fn connect_message(&mut self) -> Value {
        let id = self.next_id();
        connect_msg(self.id(), &id, "long-polling")
    }

    /// Sends a `/meta/connect` and returns the whole response array, whose last message must
    /// be the connect's reply.
    pub async fn connect(&mut self) -> Vec<Value> {
        let msg = self.connect_message();
        let resp = self.post("/cometd/connect", &json!([msg])).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let msgs = resp.messages();
        let last = msgs.last().expect("empty connect response");
        assert_eq!(
            last["channel"], "/meta/connect",
            "connect reply comes last: {msgs:?}"
        );
        assert_eq!(last["id"], msg["id"], "connect reply echoes the id");
        msgs
    }

    /// Sends a `/meta/connect` and returns the response, whatever it is.
    pub async fn try_connect(&mut self) -> Vec<Value> {
        let msg = self.connect_message();
        self.post("/cometd/connect", &json!([msg])).await.messages()
    }

    /// Starts a [`Client::connect`] in the background (it may be held), on a clone of this
    /// client: the ids stay distinct.
    pub fn spawn_connect(&mut self) -> JoinHandle<Vec<Value>> {
        let mut c = self.clone();
        self.next_id += 1;
        tokio::spawn(async move { c.connect().await })
    }

    /// Subscribes; returns the reply.
    pub async fn subscribe(&mut self, subscription: Value) -> Value {
        let id = self.next_id();
        let msg = json!([subscribe_msg(self.id(), &id, subscription)]);
        let resp = self.post("/cometd/subscribe", &msg).await;
        let reply = find(&resp.messages(), "/meta/subscribe").clone();
        assert_eq!(reply["id"], id.as_str());
        reply
    }

    /// Publishes `data` on `channel`; returns the reply.
    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        let id = self.next_id();
        let msg = json!([publish_msg(self.id(), &id, channel, data)]);
        let resp = self.post("/cometd/publish", &msg).await;
        reply(&resp.messages(), &id).expect("publish reply").clone()
    }
}
