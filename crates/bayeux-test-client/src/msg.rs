//! Bayeux messages as JSON values, and finding replies and deliveries in a batch.
//!
//! Builders return one message; a request body is a JSON array of them (`json!([m])`). Tests
//! change a built message in place (`m["advice"] = ...`) to send what the builders do not.

use serde_json::{Value, json};

use crate::Error;

/// A `/meta/handshake` offering `types` (`"long-polling"`, `"websocket"`, ...).
pub fn handshake_msg(id: &str, types: &[&str]) -> Value {
    json!({
        "channel": "/meta/handshake",
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": types,
        "id": id,
    })
}

/// A `/meta/connect` of session `client_id` over `connection_type`.
pub fn connect_msg(client_id: &str, id: &str, connection_type: &str) -> Value {
    json!({
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": connection_type,
        "id": id,
    })
}

/// A `/meta/subscribe` to `subscription`: a channel name, or an array of them.
pub fn subscribe_msg(client_id: &str, id: &str, subscription: impl Into<Value>) -> Value {
    json!({
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": subscription.into(),
        "id": id,
    })
}

/// A publish of `data` on `channel`.
pub fn publish_msg(client_id: &str, id: &str, channel: &str, data: Value) -> Value {
    json!({"channel": channel, "clientId": client_id, "data": data, "id": id})
}

/// A `/meta/disconnect`.
pub fn disconnect_msg(client_id: &str, id: &str) -> Value {
    json!({"channel": "/meta/disconnect", "clientId": client_id, "id": id})
}

/// The first message on `channel` (panics if there is none).
pub fn find<'a>(messages: &'a [Value], channel: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["channel"] == channel)
        .unwrap_or_else(|| panic!("no message on {channel} in {messages:?}"))
}

/// The reply with message id `id`, if any.
pub fn reply<'a>(messages: &'a [Value], id: &str) -> Option<&'a Value> {
    messages.iter().find(|m| m["id"] == id)
}

/// Deliveries (messages with `data`) on `channel`.
pub fn deliveries<'a>(messages: &'a [Value], channel: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| m["channel"] == channel && m.get("data").is_some())
        .collect()
}

/// The messages of a response body or frame: a JSON array, or one object (which some servers
/// send for a single reply).
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<Value>, Error> {
    match serde_json::from_slice(bytes)? {
        Value::Array(a) => Ok(a),
        other @ Value::Object(_) => Ok(vec![other]),
        other => Err(format!("not a Bayeux batch: {other}").into()),
    }
}

/// The reply with id `id` in `frame`, if it is there and successful; otherwise an error that
/// shows the frame or the failed reply.
pub fn successful_reply(frame: &[u8], id: &str) -> Result<Value, Error> {
    let mut messages = parse_batch(frame)?;
    let at = messages.iter().position(|m| m["id"] == id).ok_or_else(|| {
        format!(
            "no reply with id {id} in {}",
            String::from_utf8_lossy(frame)
        )
    })?;
    let reply = messages.swap_remove(at);
    if reply["successful"] == true {
        Ok(reply)
    } else {
        Err(format!("request failed: {reply}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_found_by_id() {
        let frame = br#"[{"channel":"/a","data":1},{"id":"2","successful":true,"clientId":"c"}]"#;
        assert_eq!(successful_reply(frame, "2").unwrap()["clientId"], "c");
        assert!(successful_reply(frame, "3").is_err());
        let failed = br#"{"id":"2","successful":false}"#;
        assert!(successful_reply(failed, "2").is_err());
        assert!(parse_batch(b"5").is_err());
        let batch = parse_batch(frame).unwrap();
        assert_eq!(deliveries(&batch, "/a").len(), 1);
        assert_eq!(reply(&batch, "2").unwrap()["successful"], true);
    }
}
