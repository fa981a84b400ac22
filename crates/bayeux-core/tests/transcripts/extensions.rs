//! Extensions: the order they run in, and deleting or rewriting incoming messages. The
//! acknowledgement and timesync extensions have their own modules below.

use std::sync::{Arc, Mutex};

use crate::common::lp;
use crate::support::{retry_advice, t};
use bayeux_core::{Extension, Message, Reply, Session};
use serde_json::json;

mod ack;
mod timesync;

struct Named {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Extension for Named {
    fn incoming(&self, _s: Option<&Arc<Session>>, m: &mut Message) -> bool {
        self.log.lock().unwrap().push(format!(
            "in {} {}",
            self.name,
            m.channel.as_deref().unwrap_or("-")
        ));
        true
    }
    fn outgoing(&self, _s: Option<&Arc<Session>>, req: &Message, reply: &mut Reply) {
        self.log.lock().unwrap().push(format!(
            "out {} {}",
            self.name,
            req.channel.as_deref().unwrap_or("-")
        ));
        reply.set_ext(self.name, json!(true));
    }
}

#[test]
fn extensions_run_in_registration_order() {
    let mut t = t();
    let log = Arc::new(Mutex::new(Vec::new()));
    for name in ["first", "second"] {
        t.engine.add_extension(Arc::new(Named {
            name,
            log: log.clone(),
        }));
    }
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["ext"], json!({"first": true, "second": true}));
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    t.publish(&lp(), &cid, "/x", json!(1));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "in first /meta/handshake",
            "in second /meta/handshake",
            "out first /meta/handshake",
            "out second /meta/handshake",
            "in first /x",
            "in second /x",
            "out first /x",
            "out second /x"
        ]
    );
    // A held connect's reply goes through the outgoing extensions when it is finished.
    t.connect(&lp(), &cid);
    assert!(t.connect(&lp(), &cid).is_empty());
    log.lock().unwrap().clear();
    let r = t.finish_hold();
    assert_eq!(r[0]["ext"], json!({"first": true, "second": true}));
    assert_eq!(
        *log.lock().unwrap(),
        ["out first /meta/connect", "out second /meta/connect"]
    );
}

struct Dropper;

impl Extension for Dropper {
    fn incoming(&self, _s: Option<&Arc<Session>>, m: &mut Message) -> bool {
        m.channel.as_deref() != Some("/dropped")
    }
}

struct Rewriter;

impl Extension for Rewriter {
    fn incoming(&self, _s: Option<&Arc<Session>>, m: &mut Message) -> bool {
        if m.channel.as_deref() == Some("/rewrite") {
            m.data = Some(bayeux_core::Raw::from_json(r#""rewritten""#).unwrap());
        }
        true
    }
}

#[test]
fn an_extension_can_delete_or_rewrite_incoming_messages() {
    let mut t = t();
    let log = Arc::new(Mutex::new(Vec::new()));
    t.engine.add_extension(Arc::new(Dropper));
    t.engine.add_extension(Arc::new(Rewriter));
    t.engine.add_extension(Arc::new(Named {
        name: "later",
        log: log.clone(),
    }));
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/*"));
    log.lock().unwrap().clear();
    let r = t.send(
        &lp(),
        json!([{"channel": "/dropped", "clientId": cid, "data": 1, "id": "8"},
               {"channel": "/rewrite", "clientId": cid, "data": 2, "id": "9"}]),
    );
    assert_eq!(
        r[0],
        json!({"channel": "/dropped", "id": "8", "successful": false,
               "error": "404::message_deleted", "advice": retry_advice()})
    );
    assert_eq!(r[1]["successful"], true);
    // Later extensions do not see a deleted message.
    assert_eq!(
        *log.lock().unwrap(),
        ["in later /rewrite", "out later /rewrite"]
    );
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/rewrite", "data": "rewritten"})]
    );
}
