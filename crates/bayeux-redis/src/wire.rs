//! What crosses Redis: Redis channel names and the frame that carries one message.
//!
//! Channel names (`<ns>` is [`crate::RedisConfig::namespace`], `bayeux` by default):
//! - `<ns>:c:<bayeux channel>`: a broadcast published on that channel, e.g. `bayeux:c:/chat/a`;
//! - `<ns>:u:<principal>`: a delivery to every session of that user, e.g. `bayeux:u:agent1`.
//!
//! A node subscribes to the exact name of each concrete channel a local session is subscribed
//! to, and to a glob for each wildcard pattern: `/a/*` and `/a/**` both become
//! `<ns>:c:/a/*` (a Redis `*` also matches `/`), so Redis sends a superset and our own matcher
//! makes the final choice. Bayeux channel names cannot hold the glob characters `*?[]\` (apart
//! from the wildcard segment, which is not sent), and the prefix is escaped anyway.
//!
//! Frame (the Redis message payload), 25 bytes of header then the message:
//! ```text
//! 0      version, 1
//! 1..17  origin node id (16 random bytes chosen at start)
//! 17..25 sequence number of the origin, u64 big-endian, from 1, one counter for all channels
//! 25..   the message as the origin's engine serialized it: {"channel":..,"data":..[,"ext":..]}
//! ```
//! The node id lets a node skip its own messages (it delivered them locally already); the
//! sequence number lets it drop the second copy Redis sends when a message matches both an
//! exact subscription and a pattern of the same node.
//!
//! **Redis is not trusted.** Anyone who can `PUBLISH` on this Redis can put any bytes on these
//! channels, with a header naming any node. So a received message is never relayed as bytes:
//! [`parse_delivery`] reads `channel`, `data` and `ext` out of it with the codec that reads
//! client input (same depth and surrogate checks, a size limit, one JSON object and nothing
//! after it), refuses any channel but a broadcast one, and the engine serializes a new delivery
//! from those three fields. Whatever else the object holds (`advice`, `successful`, `id`,
//! `clientId`, a second `channel`...) never reaches a client. A Redis publisher can therefore
//! make clients receive exactly what a publisher on that broadcast channel could (or a
//! per-user delivery on a broadcast channel), and nothing else; every refusal is counted
//! ([`Invalid::label`], `bayeux_redis_rejected_total{reason}`).

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;

use bayeux_core::{ChannelId, ChannelKind, ChannelPattern, Limits, Raw, Wildcard, decode_batch};
use bytes::Bytes;
use redis::{RedisWrite, ToRedisArgs};

/// Version byte of the frame format.
pub const FRAME_VERSION: u8 = 1;
/// Length of the frame header.
pub const HEADER_LEN: usize = 1 + 16 + 8;

/// A node's identity on the backplane: 16 random bytes chosen when the backplane starts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> NodeId {
        let mut b = [0u8; 16];
        // Without an OS random source the engine cannot make session ids either; fail loudly.
        getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
        NodeId(b)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why an incoming Redis message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The Redis channel is not one of ours (wrong prefix, or not a valid broadcast channel:
    /// `<ns>:c:/meta/..` and `<ns>:c:/service/..` are refused here).
    Channel,
    /// Shorter than the header.
    Short,
    /// Unknown frame version.
    Version,
    /// Larger than [`crate::RedisConfig::max_message_bytes`].
    TooLarge,
    /// The message is not one JSON object (an array of messages, a string...).
    NotObject,
    /// Not a delivery: invalid UTF-8 or JSON, bytes after the object, too deep, a lone
    /// surrogate escape, a duplicate field, no valid `channel`, no `data`.
    Malformed,
    /// The message is on a `/meta/**` or `/service/**` channel: never relayed across nodes.
    NotBroadcast,
    /// The message names another channel than the Redis channel it was published on.
    ChannelMismatch,
}

impl Invalid {
    /// Every reason, in the order of [`Invalid::index`].
    pub const ALL: [Invalid; 8] = [
        Invalid::Channel,
        Invalid::Short,
        Invalid::Version,
        Invalid::TooLarge,
        Invalid::NotObject,
        Invalid::Malformed,
        Invalid::NotBroadcast,
        Invalid::ChannelMismatch,
    ];

    /// Position in [`Invalid::ALL`] (the per-reason counters are an array).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label of `bayeux_redis_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Invalid::Channel => "channel",
            Invalid::Short => "short",
            Invalid::Version => "version",
            Invalid::TooLarge => "too_large",
            Invalid::NotObject => "not_object",
            Invalid::Malformed => "malformed",
            Invalid::NotBroadcast => "not_broadcast",
            Invalid::ChannelMismatch => "channel_mismatch",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Channel => "not a backplane channel",
            Invalid::Short => "payload shorter than the frame header",
            Invalid::Version => "unknown frame version",
            Invalid::TooLarge => "message larger than redis.max_message_bytes",
            Invalid::NotObject => "message is not one JSON object",
            Invalid::Malformed => "message is not a valid JSON delivery",
            Invalid::NotBroadcast => "message on a /meta or /service channel",
            Invalid::ChannelMismatch => "message names another channel",
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The node that published it.
    pub origin: NodeId,
    /// The origin's sequence number.
    pub seq: u64,
    /// The serialized message (a slice of the payload, not a copy).
    pub message: Bytes,
}

/// Encodes a frame into a new buffer (tests and tools; the publisher writes frames straight
/// into the Redis command buffer with [`FrameArg`]).
pub fn encode(origin: &NodeId, seq: u64, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + message.len());
    write_frame(&mut out, origin, seq, message);
    out
}

fn write_frame(out: &mut impl std::io::Write, origin: &NodeId, seq: u64, message: &[u8]) {
    // Writes into a Vec or a command buffer cannot fail.
    let _ = out.write_all(&[FRAME_VERSION]);
    let _ = out.write_all(&origin.0);
    let _ = out.write_all(&seq.to_be_bytes());
    let _ = out.write_all(message);
}

/// Decodes a frame. Never panics, whatever the payload.
pub fn decode(payload: Bytes) -> Result<Frame, Invalid> {
    if payload.len() < HEADER_LEN {
        return Err(Invalid::Short);
    }
    if payload[0] != FRAME_VERSION {
        return Err(Invalid::Version);
    }
    let mut origin = [0u8; 16];
    origin.copy_from_slice(&payload[1..17]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[17..25]);
    Ok(Frame {
        origin: NodeId(origin),
        seq: u64::from_be_bytes(seq),
        message: payload.slice(HEADER_LEN..),
    })
}

/// A frame as one Redis command argument, written straight into the command buffer: the
/// serialized message is copied once, into the outgoing command, and never re-serialized.
#[derive(Debug, Clone, Copy)]
pub struct FrameArg<'a> {
    /// Origin node.
    pub origin: &'a NodeId,
    /// Sequence number.
    pub seq: u64,
    /// The serialized message.
    pub message: &'a [u8],
}

impl ToRedisArgs for FrameArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        let mut w = out.writer_for_next_arg();
        write_frame(&mut w, self.origin, self.seq, self.message);
        let _ = w.flush();
    }
}

/// A delivery read from another node's message: the only three fields a client will see, from
/// which the engine serializes a new message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The channel the body names, valid and a broadcast channel.
    pub channel: ChannelId,
    /// The payload, one valid JSON value.
    pub data: Raw,
    /// The `ext` of the publish, if any.
    pub ext: Option<Raw>,
}

/// Reads a delivery out of `message` (a frame's message bytes), refusing anything that is not
/// one JSON object of at most `limits.max_bytes` bytes, valid under the client codec's checks
/// (`limits.max_depth`, no lone surrogate escapes, no trailing bytes), with a valid broadcast
/// `channel` and a `data`. Never panics.
pub fn parse_delivery(message: &[u8], limits: &Limits) -> Result<Received, Invalid> {
    if message.len() > limits.max_bytes {
        return Err(Invalid::TooLarge);
    }
    // The codec also takes an array of messages (a client's batch); from another node only the
    // one object the engine wrote is valid.
    if message.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Invalid::NotObject);
    }
    let limits = Limits {
        max_messages: 1,
        ..*limits
    };
    let mut batch = decode_batch(message, &limits).map_err(|_| Invalid::Malformed)?;
    let (Some(m), true) = (batch.pop(), batch.is_empty()) else {
        return Err(Invalid::Malformed);
    };
    let channel = m
        .channel
        .as_deref()
        .and_then(|c| ChannelId::parse(c).ok())
        .ok_or(Invalid::Malformed)?;
    let data = m.data.ok_or(Invalid::Malformed)?;
    if channel.kind() != ChannelKind::Broadcast {
        return Err(Invalid::NotBroadcast);
    }
    Ok(Received {
        channel,
        data,
        ext: m.ext,
    })
}

/// A Redis subscription: an exact channel (`SUBSCRIBE`) or a glob (`PSUBSCRIBE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RedisSub {
    /// `SUBSCRIBE` this channel.
    Channel(Arc<str>),
    /// `PSUBSCRIBE` this glob.
    Pattern(Arc<str>),
}

impl RedisSub {
    /// The channel or glob.
    pub fn name(&self) -> &str {
        match self {
            RedisSub::Channel(s) | RedisSub::Pattern(s) => s,
        }
    }
}

/// What an incoming Redis channel addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A broadcast on this Bayeux channel.
    Broadcast(ChannelId),
    /// A delivery to every session of this principal.
    User(String),
}

/// The naming scheme of one namespace.
#[derive(Debug, Clone)]
pub struct Naming {
    broadcast: String,
    user: String,
    glob: String,
}

/// Escapes the Redis glob characters of `s`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Naming {
    /// The scheme for namespace `ns` (`bayeux` by default).
    pub fn new(ns: &str) -> Naming {
        Naming {
            broadcast: format!("{ns}:c:"),
            user: format!("{ns}:u:"),
            glob: glob_escape(&format!("{ns}:c:")),
        }
    }

    /// The Redis channel of a broadcast on `channel`.
    pub fn broadcast(&self, channel: &str) -> String {
        let mut s = String::with_capacity(self.broadcast.len() + channel.len());
        s.push_str(&self.broadcast);
        s.push_str(channel);
        s
    }

    /// The Redis channel of deliveries to `principal`.
    pub fn user(&self, principal: &str) -> String {
        let mut s = String::with_capacity(self.user.len() + principal.len());
        s.push_str(&self.user);
        s.push_str(principal);
        s
    }

    /// The Redis subscription that covers a local subscription to `pattern`, or `None` for
    /// `/meta/**` and `/service/**`, which never cross nodes.
    pub fn subscription(&self, pattern: &ChannelPattern) -> Option<RedisSub> {
        if pattern.kind() != ChannelKind::Broadcast {
            return None;
        }
        let name = pattern.as_str();
        Some(match pattern.wildcard() {
            Wildcard::None => RedisSub::Channel(self.broadcast(name).into()),
            Wildcard::One | Wildcard::Deep => {
                // "/a/*" and "/a/**" -> "<ns>:c:/a/*": every channel below /a/, at any depth.
                let prefix = name.trim_end_matches('*');
                RedisSub::Pattern(format!("{}{}*", self.glob, glob_escape(prefix)).into())
            }
        })
    }

    /// The Redis subscription of deliveries to `principal`.
    pub fn user_subscription(&self, principal: &str) -> RedisSub {
        RedisSub::Channel(self.user(principal).into())
    }

    /// What the Redis channel `name` addresses. Only valid broadcast channels and user
    /// channels of this namespace are accepted.
    pub fn parse(&self, name: &[u8]) -> Result<Target, Invalid> {
        let name = std::str::from_utf8(name).map_err(|_| Invalid::Channel)?;
        if let Some(channel) = name.strip_prefix(self.broadcast.as_str()) {
            let id = ChannelId::parse(channel).map_err(|_| Invalid::Channel)?;
            // Exactly the normalized name (no trailing '/' or spaces) and a broadcast. This
            // checks only the routing: the message itself names its channel, which
            // `parse_delivery` checks again (and the engine once more), since a user channel
            // routes no channel at all and the body is what clients would read.
            if id.as_str() != channel || id.kind() != ChannelKind::Broadcast {
                return Err(Invalid::Channel);
            }
            return Ok(Target::Broadcast(id));
        }
        if let Some(p) = name.strip_prefix(self.user.as_str())
            && !p.is_empty()
        {
            return Ok(Target::User(p.to_owned()));
        }
        Err(Invalid::Channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }

    #[test]
    fn frame_round_trip_keeps_the_message_bytes() {
        let node = NodeId([7; 16]);
        let msg = br#"{"channel":"/a","data":{"x":1}}"#;
        let payload = Bytes::from(encode(&node, 42, msg));
        assert_eq!(payload.len(), HEADER_LEN + msg.len());
        let f = decode(payload).unwrap();
        assert_eq!(f.origin, node);
        assert_eq!(f.seq, 42);
        assert_eq!(&f.message[..], msg);
    }

    #[test]
    fn frame_arg_writes_the_same_bytes_as_encode() {
        let node = NodeId::random();
        let msg = br#"{"channel":"/a","data":1}"#;
        let arg = FrameArg {
            origin: &node,
            seq: u64::MAX,
            message: msg,
        };
        assert_eq!(arg.to_redis_args(), vec![encode(&node, u64::MAX, msg)]);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg("ch").arg(arg);
        assert_eq!(cmd.args_iter().count(), 3);
    }

    #[test]
    fn corrupt_payloads_are_refused_without_panic() {
        assert_eq!(decode(Bytes::new()), Err(Invalid::Short));
        assert_eq!(decode(Bytes::from_static(b"hello")), Err(Invalid::Short));
        let mut bad = encode(&NodeId([1; 16]), 1, b"{}");
        bad[0] = 9;
        assert_eq!(decode(Bytes::from(bad)), Err(Invalid::Version));
        // A header and nothing else is a frame with an empty message: refused later as JSON.
        let empty = decode(Bytes::from(encode(&NodeId([1; 16]), 1, b""))).unwrap();
        assert_eq!(
            parse_delivery(&empty.message, &Limits::default()),
            Err(Invalid::NotObject)
        );
        // Every prefix and arbitrary bytes: no panic.
        let full = encode(&NodeId([3; 16]), 5, br#"{"channel":"/a","data":1}"#);
        for i in 0..full.len() {
            let _ = decode(Bytes::copy_from_slice(&full[..i]));
        }
        let mut x: u32 = 12345;
        for len in 0..200 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            if let Ok(f) = decode(Bytes::from(v)) {
                let _ = parse_delivery(&f.message, &Limits::default());
            }
        }
    }

    fn parse(m: &[u8]) -> Result<Received, Invalid> {
        parse_delivery(m, &Limits::default())
    }

    #[test]
    fn deliveries_are_read_field_by_field() {
        let d = parse(br#"{"channel":"/a/b","data":{"k":[1,2]}}"#).unwrap();
        assert_eq!(d.channel.as_str(), "/a/b");
        assert_eq!(d.data.get(), r#"{"k":[1,2]}"#);
        assert_eq!(d.ext, None);
        let d = parse(b" {\"data\":null,\"ext\":{\"x\":1},\"channel\":\"/a\"}\n").unwrap();
        assert_eq!((d.channel.as_str(), d.data.get()), ("/a", "null"));
        assert_eq!(d.ext.unwrap().get(), r#"{"x":1}"#);
        // Fields a delivery does not have are read past, never kept: `Received` has no room
        // for them, so they cannot reach a client.
        let d = parse(
            br#"{"channel":"/a","data":1,"advice":{"reconnect":"none"},"successful":false,"id":"7","clientId":"c"}"#,
        )
        .unwrap();
        assert_eq!((d.channel.as_str(), d.data.get(), d.ext), ("/a", "1", None));
    }

    #[test]
    fn anything_but_one_delivery_object_on_a_broadcast_channel_is_refused() {
        use Invalid::*;
        let cases: &[(&[u8], Invalid)] = &[
            // The array form, which the old relay framed as it was.
            (br#"[{"channel":"/a","data":1}]"#, NotObject),
            (br#"[{"channel":"/meta/disconnect","successful":true,"advice":{"reconnect":"none"}}]"#, NotObject),
            (br#"["/a",1]"#, NotObject),
            (b"\"/a\"", NotObject),
            (b"", NotObject),
            (b"  ", NotObject),
            (br#"{"channel":"/meta/disconnect","data":{},"advice":{"reconnect":"none"}}"#, NotBroadcast),
            (br#"{"channel":"/meta/connect","data":null,"successful":false}"#, NotBroadcast),
            (br#"{"channel":"/service/x","data":1}"#, NotBroadcast),
            (br#"{"channel":"/a"}"#, Malformed),
            (br#"{"data":1}"#, Malformed),
            (br#"{"channel":"nope","data":1}"#, Malformed),
            (br#"{"channel":"/a/*","data":1}"#, Malformed),
            (br#"{"channel":5,"data":1}"#, Malformed),
            (br#"{"channel":"/a","data":1}trailing"#, Malformed),
            (br#"{"channel":"/a","data":1}{"channel":"/meta/connect","data":1}"#, Malformed),
            (br#"{"channel":"/a","data":1,"#, Malformed),
            // A second channel would be read by clients that keep the last key.
            (br#"{"channel":"/a","data":1,"channel":"/meta/disconnect"}"#, Malformed),
            (br#"{"channel":"/a","data":"\ud800"}"#, Malformed),
            (b"{\"channel\":\"/a\",\"data\":\"\xff\xfe\"}", Malformed),
            (b"{\xff\xfe", Malformed),
        ];
        for (m, why) in cases {
            assert_eq!(parse(m), Err(*why), "{}", String::from_utf8_lossy(m));
        }
        let deep = format!(
            r#"{{"channel":"/a","data":{}1{}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert_eq!(parse(deep.as_bytes()), Err(Malformed));
    }

    #[test]
    fn the_size_limit_is_the_configured_one() {
        let m = br#"{"channel":"/a","data":"0123456789"}"#;
        let at = |max_bytes| {
            parse_delivery(
                m,
                &Limits {
                    max_bytes,
                    ..Limits::default()
                },
            )
        };
        assert!(at(m.len()).is_ok());
        assert_eq!(at(m.len() - 1), Err(Invalid::TooLarge));
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: std::collections::HashSet<_> = Invalid::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Invalid::ALL.len());
        for (i, r) in Invalid::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn channel_names() {
        let n = Naming::new("bayeux");
        assert_eq!(n.broadcast("/chat/a"), "bayeux:c:/chat/a");
        assert_eq!(n.user("agent1"), "bayeux:u:agent1");
        assert_eq!(
            n.subscription(&pat("/chat/a")),
            Some(RedisSub::Channel("bayeux:c:/chat/a".into()))
        );
        // Both wildcard forms share one conservative glob.
        assert_eq!(
            n.subscription(&pat("/chat/*")),
            Some(RedisSub::Pattern("bayeux:c:/chat/*".into()))
        );
        assert_eq!(
            n.subscription(&pat("/chat/**")),
            n.subscription(&pat("/chat/*"))
        );
        assert_eq!(
            n.subscription(&pat("/**")),
            Some(RedisSub::Pattern("bayeux:c:/*".into()))
        );
        // Never across nodes.
        assert_eq!(n.subscription(&pat("/service/echo")), None);
        assert_eq!(n.subscription(&pat("/service/**")), None);
        assert_eq!(n.subscription(&pat("/meta/**")), None);
        assert_eq!(
            n.user_subscription("u1"),
            RedisSub::Channel("bayeux:u:u1".into())
        );
    }

    #[test]
    fn glob_characters_of_the_namespace_are_escaped() {
        let n = Naming::new("a*b[1]?\\");
        assert_eq!(
            n.subscription(&pat("/x/*")),
            Some(RedisSub::Pattern("a\\*b\\[1\\]\\?\\\\:c:/x/*".into()))
        );
        // Exact names are not globs: no escaping.
        assert_eq!(n.broadcast("/x"), "a*b[1]?\\:c:/x");
    }

    #[test]
    fn incoming_channel_names_are_validated() {
        let n = Naming::new("bayeux");
        assert_eq!(
            n.parse(b"bayeux:c:/chat/a"),
            Ok(Target::Broadcast(ChannelId::parse("/chat/a").unwrap()))
        );
        assert_eq!(
            n.parse(b"bayeux:u:agent1"),
            Ok(Target::User("agent1".into()))
        );
        for bad in [
            &b"bayeux:c:/meta/connect"[..],
            b"bayeux:c:/service/x",
            b"bayeux:c:/a/*",
            b"bayeux:c:/a/",
            b"bayeux:c:nope",
            b"bayeux:u:",
            b"other:c:/a",
            b"bayeux:x:/a",
            b"\xff",
            b"",
        ] {
            assert_eq!(n.parse(bad), Err(Invalid::Channel), "{bad:?}");
        }
    }
}
