//! The message model and the codec: bytes in, typed messages out; replies and deliveries out as
//! bytes.
//!
//! `data` and `ext` stay unparsed ([`Raw`]): the engine routes messages, it does not rewrite
//! payloads. Decoding enforces limits on bytes, messages per batch and JSON nesting before serde
//! sees the input, and never panics.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Reconnect};

/// Limits applied by [`decode_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of one request body or WebSocket message, in bytes.
    pub max_bytes: usize,
    /// Maximum number of messages in one batch.
    pub max_messages: usize,
    /// Maximum JSON nesting depth (arrays and objects), counting the batch array itself.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_messages: 1000,
            max_depth: 64,
        }
    }
}

/// An unparsed JSON value (`data`, `ext`), compared by its text.
#[derive(Clone)]
pub struct Raw(pub Box<RawValue>);

impl Raw {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Makes a `Raw` from JSON text, checking that it is one valid JSON value.
    pub fn from_json(json: &str) -> Result<Raw, Error> {
        RawValue::from_string(json.to_owned())
            .map(Raw)
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// Serializes any value into a `Raw`.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Raw, Error> {
        serde_json::value::to_raw_value(value)
            .map(Raw)
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// Parses the value as `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        serde_json::from_str(self.0.get()).ok()
    }
}

impl PartialEq for Raw {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Raw)
    }
}

/// `subscription`: one channel pattern or an array of them, kept in the form the client used so
/// the reply can echo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// `"subscription": "/a"`.
    One(String),
    /// `"subscription": ["/a", "/b"]`.
    Many(Vec<String>),
}

impl Subscription {
    /// The names, whichever form was used.
    pub fn names(&self) -> &[String] {
        match self {
            Subscription::One(s) => std::slice::from_ref(s),
            Subscription::Many(v) => v,
        }
    }
}

impl Serialize for Subscription {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Subscription::One(one) => s.serialize_str(one),
            Subscription::Many(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Subscription {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Subscription;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel name or an array of channel names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Subscription, E> {
                Ok(Subscription::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Subscription, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Subscription::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Client-sent advice on `/meta/handshake` and `/meta/connect`: only `timeout` and `interval` are
/// read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdviceIn {
    /// Requested connect hold time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Requested pause between connects, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<f64>,
}

/// A message id: CometD clients send strings; some send numbers. Kept as text; numbers are echoed
/// back as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageId {
    /// `"id": "12"`.
    Text(String),
    /// `"id": 12`.
    Number(String),
}

impl MessageId {
    /// The id's text.
    pub fn as_str(&self) -> &str {
        match self {
            MessageId::Text(s) | MessageId::Number(s) => s,
        }
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageId::Text(t) => s.serialize_str(t),
            MessageId::Number(n) => match n.parse::<serde_json::Number>() {
                Ok(num) => num.serialize(s),
                Err(_) => s.serialize_str(n),
            },
        }
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MessageId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageId, E> {
                Ok(MessageId::Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageId, E> {
                Ok(MessageId::Number(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageId, E> {
                Ok(MessageId::Number(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MessageId, E> {
                // Non-integral ids are not alphanumeric; keep the text so validation refuses it.
                Ok(MessageId::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `data` keeps an explicit `null` (`Some(Raw("null"))`), distinct from an absent field.
fn some_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Raw>, D::Error> {
    Raw::deserialize(d).map(Some)
}

/// One inbound Bayeux message. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Destination channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Message id, echoed on the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Payload of a publish.
    #[serde(
        default,
        deserialize_with = "some_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Raw>,
    /// Extension fields.
    #[serde(
        default,
        deserialize_with = "some_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub ext: Option<Raw>,
    /// Client advice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<AdviceIn>,
    /// Subscribe / unsubscribe target(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// Handshake: the client's connection types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<String>>,
    /// Connect: the connection type in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<String>,
    /// Handshake: protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Handshake: minimum acceptable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<String>,
}

impl Message {
    /// The `ext` object's field `name`, if `ext` is an object that has it.
    pub fn ext_field(&self, name: &str) -> Option<serde_json::Value> {
        let ext = self.ext.as_ref()?;
        let map: serde_json::Map<String, serde_json::Value> = ext.parse()?;
        map.get(name).cloned()
    }
}

/// Checks the JSON nesting depth of `input` without parsing it, and that no `\u` escape is a
/// lone UTF-16 surrogate. Strings are skipped, so brackets inside them do not count.
///
/// `data` and `ext` stay unparsed ([`Raw`]) and serde_json does not check escapes in what it
/// skips, so without the surrogate check a publisher could have `"\ud800"` relayed verbatim to
/// every subscriber, whose strict JSON parsers then reject the whole batch it arrives in.
fn check_depth(input: &[u8], limit: usize) -> Result<(), Error> {
    // A bare object is a batch of one: its implicit array counts as a level, as it does once
    // the batch is re-encoded (`encode_batch` always writes an array).
    let bare = input.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut depth = usize::from(bare);
    let mut in_string = false;
    // A high surrogate escape waiting for its low half, which must come next.
    let mut high = false;
    let lone = || Error::Malformed("lone surrogate in a \\u escape".into());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        i += 1;
        if in_string {
            if b == b'\\' {
                let e = input.get(i).copied();
                i += 1;
                if e == Some(b'u') {
                    let unit = input
                        .get(i..i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u16::from_str_radix(h, 16).ok());
                    i += 4;
                    match unit {
                        Some(0xD800..=0xDBFF) if !high => {
                            high = true;
                            continue;
                        }
                        Some(0xDC00..=0xDFFF) if high => {
                            high = false;
                            continue;
                        }
                        Some(0xD800..=0xDFFF) => return Err(lone()),
                        _ => {}
                    }
                }
            } else if b == b'"' {
                in_string = false;
            }
            if high {
                return Err(lone());
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(Error::TooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Counts the messages of a batch while deserializing, refusing more than the limit before they
/// are all allocated.
struct BoundedBatch {
    limit: usize,
}

impl<'de> de::DeserializeSeed<'de> for BoundedBatch {
    type Value = Vec<Message>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Message>, D::Error> {
        struct V(usize);
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Message>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bayeux message or an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Message>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(self.0).min(64));
                while let Some(m) = seq.next_element_seed(ObjectOnly)? {
                    if out.len() == self.0 {
                        return Err(de::Error::custom(TOO_MANY));
                    }
                    out.push(m);
                }
                Ok(out)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<Message>, A::Error> {
                let m = Message::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(vec![m])
            }
        }
        d.deserialize_any(V(self.limit))
    }
}

/// A message must be a JSON object: serde's derived struct visitor would also take an array and
/// fill the fields by position.
struct ObjectOnly;

impl<'de> de::DeserializeSeed<'de> for ObjectOnly {
    type Value = Message;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bayeux message object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Message, A::Error> {
                Message::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V)
    }
}

const TOO_MANY: &str = "\u{0}too many messages";

/// Decodes a request body (a JSON array of messages, or one message object) under `limits`.
///
/// ```
/// use bayeux_core::{decode_batch, Limits};
/// let batch = decode_batch(br#"[{"channel":"/meta/connect","clientId":"x","id":"7"}]"#, &Limits::default()).unwrap();
/// assert_eq!(batch[0].channel.as_deref(), Some("/meta/connect"));
/// assert!(decode_batch(b"[1]", &Limits::default()).is_err());
/// ```
pub fn decode_batch(input: &[u8], limits: &Limits) -> Result<Vec<Message>, Error> {
    if input.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            limit: limits.max_bytes,
        });
    }
    check_depth(input, limits.max_depth)?;
    let mut de = serde_json::Deserializer::from_slice(input);
    let batch = de::DeserializeSeed::deserialize(
        BoundedBatch {
            limit: limits.max_messages,
        },
        &mut de,
    )
    .and_then(|b| de.end().map(|()| b))
    .map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            Error::TooManyMessages {
                limit: limits.max_messages,
            }
        } else {
            Error::Malformed(e.to_string())
        }
    })?;
    Ok(batch)
}

/// Encodes messages as a JSON array (the inverse of [`decode_batch`]).
pub fn encode_batch(messages: &[Message]) -> Bytes {
    // Serializing our own types into a Vec cannot fail.
    serde_json::to_vec(messages)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Advice sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// What the client does next.
    #[serde(serialize_with = "ser_reconnect")]
    pub reconnect: Reconnect,
    /// Pause before the next connect, ms.
    pub interval: u64,
    /// How long a connect is held, ms.
    pub timeout: u64,
    /// Session expiry after the last connect, ms (sent so clients can re-handshake on their own).
    #[serde(rename = "maxInterval", skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<u64>,
    /// Another session of the same browser is already long-polling.
    #[serde(
        rename = "multiple-clients",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub multiple_clients: bool,
}

fn ser_reconnect<S: Serializer>(r: &Reconnect, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A reply to a meta message or a publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// The channel of the request (`null` when the request had none).
    pub channel: Option<String>,
    /// The request's id, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// Session id (meta replies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Whether the request succeeded.
    pub successful: bool,
    /// CometD error string on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Advice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    /// Echo of the subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// Handshake: protocol version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// Handshake: minimum version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<&'static str>,
    /// Handshake: the server's connection types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<String>>,
    /// Extension fields set by outgoing extensions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Reply {
    /// A reply on `channel` echoing `id`.
    pub fn new(channel: Option<&str>, id: Option<MessageId>, successful: bool) -> Reply {
        Reply {
            channel: channel.map(str::to_owned),
            id,
            client_id: None,
            successful,
            error: None,
            advice: None,
            subscription: None,
            version: None,
            minimum_version: None,
            supported_connection_types: None,
            ext: None,
        }
    }

    /// Sets one `ext` field.
    pub fn set_ext(&mut self, name: &str, value: serde_json::Value) {
        self.ext
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
    }

    /// The reply, serialized ([`Framed`]).
    pub fn encode(&self) -> Framed {
        Framed::encode(self)
    }
}

/// One serialized Bayeux message, framed as a one-element JSON array: `[{"channel":..}]`.
///
/// Every message the engine writes (a reply, a delivery) is serialized once into this form. A
/// delivery's bytes go into every recipient's queue; when a recipient has just that one message
/// waiting, they are the whole WebSocket frame or long-poll body as they are, with no copy; when
/// several wait, [`join_array`] joins their objects into one array. The type is the proof of the
/// framing: nothing needs to look at the bytes to know it.
///
/// A transport may attach one derived form of the bytes, computed once and shared by every
/// clone ([`Framed::compressed_with`]): the WebSocket transport keeps the message's
/// permessage-deflate payload there, so that a delivery is compressed once for all its
/// recipients, like it is serialized once.
#[derive(Clone)]
pub struct Framed(Arc<FramedInner>);

struct FramedInner {
    array: Bytes,
    /// The compressed form, once a transport asked for it (`None` inside: not worth it).
    compressed: OnceLock<Option<Bytes>>,
}

impl PartialEq for Framed {
    fn eq(&self, other: &Framed) -> bool {
        self.0.array == other.0.array
    }
}

impl Eq for Framed {}

impl Framed {
    fn new(array: Bytes) -> Framed {
        Framed(Arc::new(FramedInner {
            array,
            compressed: OnceLock::new(),
        }))
    }

    /// Serializes one of our own message types (a reply, a refusal).
    pub(crate) fn encode<T: Serialize>(message: &T) -> Framed {
        let mut out = Vec::with_capacity(128);
        out.push(b'[');
        // Serializing our own types into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, message);
        out.push(b']');
        Framed::new(Bytes::from(out))
    }

    /// Serializes a delivery (`{"channel":..,"data":..,"ext":..}`; deliveries carry no `id` and
    /// no `clientId`).
    pub fn delivery(channel: &str, data: &RawValue, ext: Option<&RawValue>) -> Framed {
        let mut out = BytesMut::with_capacity(channel.len() + data.get().len() + 34);
        out.put_slice(b"[{\"channel\":");
        // A validated channel has no characters that need escaping, but stay correct regardless.
        out.put_slice(&serde_json::to_vec(channel).unwrap_or_default());
        out.put_slice(b",\"data\":");
        out.put_slice(data.get().as_bytes());
        if let Some(ext) = ext {
            out.put_slice(b",\"ext\":");
            out.put_slice(ext.get().as_bytes());
        }
        out.put_slice(b"}]");
        Framed::new(out.freeze())
    }

    /// Frames one message object serialized elsewhere (the caller has checked that it is one
    /// JSON object). One copy.
    pub fn from_object(object: &[u8]) -> Framed {
        let mut out = BytesMut::with_capacity(object.len() + 2);
        out.put_u8(b'[');
        out.put_slice(object);
        out.put_u8(b']');
        Framed::new(out.freeze())
    }

    /// The whole one-element array: a complete WebSocket frame or long-poll body.
    pub fn array(&self) -> &Bytes {
        &self.0.array
    }

    /// The message object inside (a view of the same bytes, no copy).
    pub fn object(&self) -> &[u8] {
        let a = &self.0.array;
        &a[1..a.len() - 1]
    }

    /// The compressed form of [`Framed::array`]: `compress` runs on the first call, on any
    /// clone, and its result (`None`: not worth compressing) is kept and returned to every
    /// later call on any clone. One form per message: every caller must pass the same
    /// compression (the WebSocket transport's permessage-deflate, without context takeover).
    pub fn compressed_with(&self, compress: impl FnOnce(&[u8]) -> Option<Bytes>) -> Option<Bytes> {
        self.0
            .compressed
            .get_or_init(|| compress(&self.0.array))
            .clone()
    }
}

impl fmt::Debug for Framed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Framed({})", String::from_utf8_lossy(&self.0.array))
    }
}

/// Joins serialized messages into one JSON array, the body of a long-poll response or a
/// WebSocket frame. A single message is returned as it is, without a copy.
pub fn join_array<'a, I>(parts: I) -> Bytes
where
    I: IntoIterator<Item = &'a Framed>,
    I::IntoIter: Clone,
{
    let parts = parts.into_iter();
    let mut probe = parts.clone();
    if let (Some(only), None) = (probe.next(), probe.next()) {
        return only.0.array.clone();
    }
    let len: usize = parts.clone().map(|p| p.0.array.len()).sum::<usize>() + 2;
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(b'[');
    for (i, p) in parts.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(p.object());
    }
    out.put_u8(b']');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn the_compressed_form_is_computed_once_for_all_clones() {
        let data = RawValue::from_string("[1,2,3]".into()).unwrap();
        let f = Framed::delivery("/a", &data, None);
        let copies: Vec<Framed> = (0..3).map(|_| f.clone()).collect();
        let runs = std::cell::Cell::new(0);
        let z = |a: &[u8]| {
            runs.set(runs.get() + 1);
            Some(Bytes::copy_from_slice(&a[..3]))
        };
        for c in &copies {
            assert_eq!(c.compressed_with(z).as_deref(), Some(&b"[{\""[..]));
        }
        assert_eq!(
            f.compressed_with(|_| None),
            Some(Bytes::from_static(b"[{\""))
        );
        assert_eq!(runs.get(), 1);
        // "Not worth it" is kept too.
        let g = Framed::from_object(b"{}");
        assert_eq!(g.compressed_with(|_| None), None);
        assert_eq!(
            g.clone().compressed_with(|_| panic!("computed twice")),
            None
        );
        // A copy made from the same bytes is another message, with its own form.
        assert_eq!(Framed::from_object(f.object()), f);
    }

    #[test]
    fn single_object_and_array() {
        let a = decode_batch(br#"{"channel":"/a","data":1}"#, &lim()).unwrap();
        let b = decode_batch(br#"[{"channel":"/a","data":1}]"#, &lim()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn data_null_is_kept() {
        let m = decode_batch(br#"[{"channel":"/a","data":null}]"#, &lim()).unwrap();
        assert_eq!(m[0].data.as_ref().unwrap().get(), "null");
        let again = decode_batch(&encode_batch(&m), &lim()).unwrap();
        assert_eq!(m, again);
        let m = decode_batch(br#"[{"channel":"/a"}]"#, &lim()).unwrap();
        assert!(m[0].data.is_none());
    }

    #[test]
    fn subscription_forms() {
        let m = decode_batch(
            br#"[{"subscription":"/a"},{"subscription":["/a","/b"]}]"#,
            &lim(),
        )
        .unwrap();
        assert_eq!(m[0].subscription, Some(Subscription::One("/a".into())));
        assert_eq!(m[1].subscription.as_ref().unwrap().names().len(), 2);
        assert!(decode_batch(br#"[{"subscription":5}]"#, &lim()).is_err());
    }

    #[test]
    fn numeric_ids_round_trip_as_numbers() {
        let m = decode_batch(br#"[{"id":5,"channel":"/a"}]"#, &lim()).unwrap();
        assert_eq!(m[0].id, Some(MessageId::Number("5".into())));
        let r = Reply::new(Some("/a"), m[0].id.clone(), true).encode();
        assert_eq!(r.object(), br#"{"channel":"/a","id":5,"successful":true}"#);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            &b""[..],
            b"nope",
            b"[1]",
            b"\"x\"",
            b"[{\"channel\":5}]",
            b"[{}] trailing",
            b"[{\"channel\":\"/a\"",
            b"\xff\xfe",
            b"[{\"clientId\":[]}]",
        ] {
            assert!(
                matches!(decode_batch(bad, &lim()), Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let l = Limits {
            max_bytes: 100,
            max_messages: 2,
            max_depth: 4,
        };
        assert_eq!(
            decode_batch(&[b' '; 101], &l),
            Err(Error::TooLarge { limit: 100 })
        );
        assert_eq!(
            decode_batch(b"[{},{},{}]", &l),
            Err(Error::TooManyMessages { limit: 2 })
        );
        assert_eq!(
            decode_batch(br#"[{"data":[[[1]]]}]"#, &l),
            Err(Error::TooDeep { limit: 4 })
        );
        // Brackets inside strings do not count.
        assert!(decode_batch(br#"[{"data":"[[[[[[[["}]"#, &l).is_ok());
        let deep = "[".repeat(100_000);
        assert!(matches!(
            decode_batch(deep.as_bytes(), &Limits::default()),
            Err(Error::TooLarge { .. }) | Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn delivery_encoding() {
        let data = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        let framed = Framed::delivery("/a/b", &data, None);
        assert_eq!(
            &framed.array()[..],
            br#"[{"channel":"/a/b","data":{"x":1}}]"#
        );
        assert_eq!(framed.object(), br#"{"channel":"/a/b","data":{"x":1}}"#);
        assert_eq!(Framed::from_object(framed.object()), framed);
        // One delivery is its own frame: the very same buffer, no copy.
        assert_eq!(join_array([&framed]).as_ptr(), framed.array().as_ptr());
        let joined = join_array([&framed, &framed]);
        assert_eq!(
            &joined[..],
            br#"[{"channel":"/a/b","data":{"x":1}},{"channel":"/a/b","data":{"x":1}}]"#
        );
        assert_eq!(&join_array(std::iter::empty::<&Framed>())[..], b"[]");
    }
}
