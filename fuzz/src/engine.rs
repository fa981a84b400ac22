//! Random operation sequences against the engine, checked step by step against a small model.
//!
//! Sessions are driven through `handle_batch` with JSON requests (long-polling or WebSocket
//! contexts) on a fake clock; server-side publishes, `deliver`, WebSocket `take_messages`, held
//! connects (finished or dropped), time and `sweep` are interleaved. After every step the
//! engine must agree with the model: each delivery carries a message that was published to a
//! channel the session was subscribed to (or delivered to it), in order and exactly once; no
//! queue exceeds `max_queue`; drops are counted; expired sessions are gone; held connects wake
//! when they should; the session, channel and held-connect counts match.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bayeux_core::{
    ChannelId, ChannelKind, ChannelPattern, Engine, EngineConfig, Framed, Hold, LocalSession,
    OverflowPolicy, RequestContext, TransportKind, Wake, decode_batch,
};

use crate::channel::naive_matches;
use serde_json::{Value, json};

/// Channel names and patterns the operations pick from (plus arbitrary text now and then).
const NAMES: &[&str] = &[
    "/a",
    "/a/b",
    "/a/b/c",
    "/b",
    "/a/c",
    "/a/*",
    "/a/**",
    "/**",
    "/*",
    "/a/b/*",
    "/b/**",
    "/meta/x",
    "/meta/**",
    "/service/x",
    "/service/**",
    "/a/b/",
    " /b ",
    "/a/*/b",
    "bad",
];

/// A channel name or pattern in an operation: mostly one of [`NAMES`], sometimes any text.
#[derive(Debug)]
pub enum Name {
    /// One of [`NAMES`].
    Known(u8),
    /// Any text.
    Raw(String),
}

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Name> {
        let b: u8 = u.arbitrary()?;
        if b < 240 {
            Ok(Name::Known(b))
        } else {
            Ok(Name::Raw(u.arbitrary()?))
        }
    }
}

/// A flag that is set for one input byte in sixteen (bad requests should not crowd out good
/// ones).
#[derive(Debug, Clone, Copy)]
pub struct Rare(pub bool);

impl<'a> Arbitrary<'a> for Rare {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Rare> {
        Ok(Rare(u.arbitrary::<u8>()? < 16))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            Name::Raw(s) => s.chars().take(40).collect(),
        }
    }
}

/// Client advice on handshake and connect.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum AdviceIn {
    /// No advice.
    None,
    /// `{timeout: 0}` (the JS client's first connect).
    Immediate,
    /// `{timeout: t}`.
    Timeout(u16),
    /// `{interval: i}`.
    Interval(u16),
}

impl AdviceIn {
    fn json(self) -> Option<Value> {
        match self {
            AdviceIn::None => None,
            AdviceIn::Immediate => Some(json!({"timeout": 0})),
            AdviceIn::Timeout(t) => Some(json!({ "timeout": t })),
            AdviceIn::Interval(i) => Some(json!({ "interval": i })),
        }
    }
}

/// One step.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// A new remote session.
    Handshake {
        /// WebSocket (else long-polling).
        websocket: bool,
        /// Client advice.
        advice: AdviceIn,
    },
    /// `/meta/connect` of session `s`.
    Connect {
        /// Session index.
        s: u8,
        /// Client advice.
        advice: AdviceIn,
        /// Send an unsupported connection type.
        bad_type: Rare,
    },
    /// `/meta/subscribe`.
    Subscribe {
        /// Session index.
        s: u8,
        /// Names (array form when more than one, or when `array`).
        names: Vec<Name>,
        /// Use the array form even for one name.
        array: bool,
    },
    /// `/meta/unsubscribe`.
    Unsubscribe {
        /// Session index.
        s: u8,
        /// Names.
        names: Vec<Name>,
    },
    /// A publish from session `s`.
    Publish {
        /// Session index.
        s: u8,
        /// Channel.
        channel: Name,
        /// Omit `data`.
        no_data: Rare,
    },
    /// `Engine::publish` from the server.
    ServerPublish {
        /// Channel.
        channel: Name,
    },
    /// `Engine::deliver` to session `s`.
    Deliver {
        /// Session index.
        s: u8,
        /// Channel.
        channel: Name,
    },
    /// The WebSocket writer takes session `s`'s queue.
    Take {
        /// Session index.
        s: u8,
    },
    /// Completes held connect `h` of session `s`.
    FinishHold {
        /// Session index.
        s: u8,
        /// Hold index.
        h: u8,
    },
    /// Drops held connect `h` of session `s` unanswered (the client went away).
    DropHold {
        /// Session index.
        s: u8,
        /// Hold index.
        h: u8,
    },
    /// `/meta/disconnect`.
    Disconnect {
        /// Session index.
        s: u8,
    },
    /// A message naming a session that does not exist.
    Unknown {
        /// Which meta channel.
        which: u8,
    },
    /// The server-side session subscribes.
    LocalSubscribe {
        /// Pattern.
        pattern: Name,
    },
    /// The clock moves.
    Advance {
        /// Steps of 8 ms (so up to about 2 s: long enough to expire sessions and hit hold
        /// deadlines, short enough not to expire everything at once).
        steps: u8,
    },
    /// `Engine::sweep`.
    Sweep,
}

/// Engine settings chosen by the input.
#[derive(Debug, Arbitrary)]
pub struct ConfigIn {
    /// `max_queue` is 1 + this % 8.
    pub max_queue: u8,
    /// `OverflowPolicy::Disconnect` (else drop-oldest).
    pub disconnect_on_overflow: Rare,
    /// `broadcast_to_publisher`.
    pub broadcast_to_publisher: bool,
    /// `max_subscriptions` is this % 6.
    pub max_subscriptions: u8,
    /// `max_sessions` is 1 + this % 12.
    pub max_sessions: u8,
    /// `timeout_ms`: 0, 100, 1000 or 30000 by this % 4.
    pub timeout: u8,
    /// `max_interval_ms`: 0, 500, 2000 or 10000 by this % 4.
    pub max_interval: u8,
    /// `interval_ms`: 0, 0, 50 or 1000 by this % 4.
    pub interval: u8,
    /// Add a server-side (local) session.
    pub local_session: bool,
}

/// Most operations in one scenario.
pub const MAX_OPS: usize = 200;

/// A fuzz input: settings and a sequence of operations.
#[derive(Debug)]
pub struct Scenario {
    /// Settings.
    pub config: ConfigIn,
    /// Operations (at most [`MAX_OPS`] are run).
    pub ops: Vec<Op>,
}

impl Scenario {
    /// Draws settings, then operations until the input runs out. (`Vec<Op>`'s own `Arbitrary`
    /// spends a continuation byte per element, so random input gives about one operation.)
    pub fn generate(u: &mut Unstructured<'_>) -> arbitrary::Result<Scenario> {
        let config = u.arbitrary()?;
        let mut ops = Vec::new();
        while !u.is_empty() && ops.len() < MAX_OPS {
            match u.arbitrary() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        Ok(Scenario { config, ops })
    }

    /// [`Scenario::generate`] over a whole fuzz input.
    pub fn from_bytes(data: &[u8]) -> arbitrary::Result<Scenario> {
        Scenario::generate(&mut Unstructured::new(data))
    }
}

struct ModelSession {
    id: String,
    websocket: bool,
    alive: bool,
    /// Removed by `/meta/disconnect` (not by expiry or overflow).
    disconnected: bool,
    subs: BTreeSet<String>,
    queue: VecDeque<u64>,
    timeout: Option<u64>,
    interval: Option<u64>,
    connected: bool,
    generation: u64,
    held: bool,
    /// When the session expires unless heard from (never while `held`), ms on the fake clock.
    expires: u64,
    received: BTreeSet<u64>,
    holds: Vec<(Hold, u64)>,
}

struct Runner {
    engine: Engine,
    config: EngineConfig,
    base: Instant,
    now: u64,
    sessions: Vec<ModelSession>,
    local: Option<(LocalSession, Arc<Mutex<Vec<u64>>>)>,
    local_subs: BTreeSet<String>,
    local_expected: Vec<u64>,
    next_n: u64,
    drops: u64,
    next_id: u64,
    coverage: Coverage,
}

/// What a run exercised, so tests can tell that scenarios reach deep states.
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    /// Deliveries received and checked.
    pub deliveries: u64,
    /// Connects held.
    pub holds: u64,
    /// Sessions removed by `sweep`.
    pub expired: u64,
    /// Messages dropped at a full queue.
    pub drops: u64,
}

/// Runs a scenario. Panics when the engine and the model disagree.
pub fn run(scenario: &Scenario) -> Coverage {
    let c = &scenario.config;
    let config = EngineConfig {
        timeout_ms: [0, 100, 1000, 30_000][c.timeout as usize % 4],
        interval_ms: [0, 0, 50, 1000][c.interval as usize % 4],
        max_interval_ms: [0, 500, 2000, 10_000][c.max_interval as usize % 4],
        max_queue: 1 + c.max_queue as usize % 8,
        overflow: if c.disconnect_on_overflow.0 {
            OverflowPolicy::Disconnect
        } else {
            OverflowPolicy::DropOldest
        },
        max_sessions: 1 + c.max_sessions as usize % 12,
        max_subscriptions: c.max_subscriptions as usize % 6,
        broadcast_to_publisher: c.broadcast_to_publisher,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config.clone());
    let local = c.local_session.then(|| {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let ls = engine.local_session(None, move |d| {
            let v: Value = serde_json::from_str(d.data.get()).expect("local delivery data");
            g.lock().unwrap().push(v["n"].as_u64().expect("n"));
        });
        (ls, got)
    });
    let mut r = Runner {
        engine,
        config,
        base: Instant::now(),
        now: 0,
        sessions: Vec::new(),
        local,
        local_subs: BTreeSet::new(),
        local_expected: Vec::new(),
        next_n: 0,
        drops: 0,
        next_id: 0,
        coverage: Coverage::default(),
    };
    for op in scenario.ops.iter().take(MAX_OPS) {
        r.step(op);
        r.check();
    }
    // Ending: drop every hold, then the engine's counters return to zero.
    for s in &mut r.sessions {
        s.holds.clear();
    }
    assert_eq!(
        r.engine
            .stats()
            .held_connects
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    r.engine.close_all();
    drop(r.local.take());
    assert_eq!(r.engine.session_count(), 0);
    assert_eq!(r.engine.channel_count(), 0);
    Coverage {
        drops: r.drops,
        ..r.coverage
    }
}

/// Parses replies and deliveries: each is one message framed as a one-element array.
fn parse_replies(replies: &[Framed]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in replies {
        let items: Vec<Value> = serde_json::from_slice(b.array()).expect("replies are JSON arrays");
        assert_eq!(items.len(), 1, "a serialized message holds one message");
        out.extend(items);
    }
    out
}

impl Runner {
    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn ctx(&self, websocket: bool) -> RequestContext {
        RequestContext::new(if websocket {
            TransportKind::WebSocket
        } else {
            TransportKind::LongPolling
        })
    }

    fn send(&mut self, websocket: bool, msg: &Value) -> bayeux_core::Outcome {
        // Liveness: any message naming a live session extends its life to at least
        // now + max_interval.
        let least = self.now + self.config.max_interval_ms;
        if let Some(s) = self
            .sessions
            .iter_mut()
            .find(|s| s.alive && msg["clientId"] == s.id.as_str())
        {
            s.expires = s.expires.max(least);
        }
        let text = msg.to_string();
        let batch =
            decode_batch(text.as_bytes(), &self.config.limits).expect("our requests decode");
        self.engine
            .handle_batch(&self.ctx(websocket), batch, self.instant())
    }

    fn pick(&self, s: u8) -> Option<usize> {
        (!self.sessions.is_empty()).then(|| s as usize % self.sessions.len())
    }

    fn alive_count(&self) -> usize {
        self.sessions.iter().filter(|s| s.alive).count() + usize::from(self.local.is_some())
    }

    fn apply_advice(&mut self, i: usize, advice: AdviceIn) {
        let max_t = self.config.max_client_timeout_ms;
        let max_i = self.config.max_interval_ms;
        let s = &mut self.sessions[i];
        match advice {
            AdviceIn::None => {}
            AdviceIn::Immediate => s.timeout = Some(0),
            AdviceIn::Timeout(t) => s.timeout = Some((t as u64).min(max_t)),
            AdviceIn::Interval(v) => s.interval = Some((v as u64).min(max_i)),
        }
    }

    fn remove(&mut self, i: usize) {
        let s = &mut self.sessions[i];
        s.alive = false;
        s.subs.clear();
        s.queue.clear();
    }

    /// Offers message `n` to session `i`'s queue, applying the overflow policy.
    fn offer(&mut self, i: usize, n: u64) -> bool {
        let max = self.config.max_queue;
        let disconnect = self.config.overflow == OverflowPolicy::Disconnect;
        let s = &mut self.sessions[i];
        if s.queue.len() >= max {
            self.drops += 1;
            if disconnect {
                self.remove(i);
                return false;
            }
            s.queue.pop_front();
        }
        self.sessions[i].queue.push_back(n);
        true
    }

    /// Fan-out of message `n` on `channel` (server publish or a remote publish by `publisher`).
    /// Returns the expected recipient count.
    fn fan_out(&mut self, channel: &ChannelId, n: u64, publisher: Option<usize>) -> usize {
        let exclude = if self.config.broadcast_to_publisher {
            None
        } else {
            publisher
        };
        let broadcast = channel.kind() == ChannelKind::Broadcast;
        let mut count = 0;
        if broadcast {
            let targets: Vec<usize> = (0..self.sessions.len())
                .filter(|&i| Some(i) != exclude && self.sessions[i].alive)
                .filter(|&i| {
                    self.sessions[i]
                        .subs
                        .iter()
                        .any(|p| naive_matches(p, channel.as_str()))
                })
                .collect();
            for i in targets {
                // A recipient is counted when the message was queued: a session that the
                // `disconnect` policy ends at its bound did not get it.
                if self.offer(i, n) {
                    count += 1;
                }
            }
        }
        if self.local.is_some()
            && self
                .local_subs
                .iter()
                .any(|p| naive_matches(p, channel.as_str()))
        {
            // The local session is excluded only when it is the publisher, never here.
            self.local_expected.push(n);
            count += 1;
        }
        count
    }

    fn data(&mut self) -> (u64, Value) {
        self.next_n += 1;
        (self.next_n, json!({ "n": self.next_n }))
    }

    /// Checks a list of deliveries (`{"channel","data"}`) against what session `i` expects.
    fn receive(&mut self, i: usize, deliveries: &[Value]) {
        let s = &mut self.sessions[i];
        let expected: Vec<u64> = s.queue.drain(..).collect();
        let got: Vec<u64> = deliveries
            .iter()
            .map(|d| {
                assert!(
                    d.get("clientId").is_none(),
                    "delivery carries clientId: {d}"
                );
                assert!(d.get("id").is_none(), "delivery carries id: {d}");
                d["data"]["n"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("not a delivery: {d}"))
            })
            .collect();
        assert_eq!(got, expected, "session {i} deliveries");
        for n in got {
            assert!(s.received.insert(n), "session {i} received {n} twice");
            self.coverage.deliveries += 1;
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Handshake { websocket, advice } => self.handshake(*websocket, *advice),
            Op::Connect {
                s,
                advice,
                bad_type,
            } => {
                if let Some(i) = self.pick(*s) {
                    self.connect(i, *advice, bad_type.0);
                }
            }
            Op::Subscribe { s, names, array } => {
                if let Some(i) = self.pick(*s) {
                    let names: Vec<String> = names.iter().take(4).map(Name::text).collect();
                    self.subscribe(i, names, *array, true);
                }
            }
            Op::Unsubscribe { s, names } => {
                if let Some(i) = self.pick(*s) {
                    let names: Vec<String> = names.iter().take(4).map(Name::text).collect();
                    self.subscribe(i, names, true, false);
                }
            }
            Op::Publish {
                s,
                channel,
                no_data,
            } => {
                if let Some(i) = self.pick(*s) {
                    self.publish(i, &channel.text(), no_data.0);
                }
            }
            Op::ServerPublish { channel } => {
                let Ok(ch) = ChannelId::parse(&channel.text()) else {
                    return;
                };
                let (n, data) = self.data();
                let raw = serde_json::value::to_raw_value(&data).unwrap();
                let count = self.engine.publish(&ch, &raw);
                let want = self.fan_out(&ch, n, None);
                assert_eq!(count, want, "server publish on {ch:?} recipients");
            }
            Op::Deliver { s, channel } => {
                let Some(i) = self.pick(*s) else { return };
                let Ok(ch) = ChannelId::parse(&channel.text()) else {
                    return;
                };
                let (n, data) = self.data();
                let raw = serde_json::value::to_raw_value(&data).unwrap();
                let id = self.sessions[i].id.clone();
                let result = self.engine.deliver(&id, &ch, &raw);
                if self.sessions[i].alive {
                    let queued = self.offer(i, n);
                    assert_eq!(result.is_ok(), queued, "deliver to session {i}: {result:?}");
                } else {
                    assert!(result.is_err(), "deliver to a removed session succeeded");
                }
            }
            Op::Take { s } => {
                let Some(i) = self.pick(*s) else { return };
                let session = self.engine.session(&self.sessions[i].id);
                assert_eq!(session.is_some(), self.sessions[i].alive);
                if let Some(session) = session {
                    let taken = session.take_messages();
                    if self.sessions[i].websocket {
                        let parsed = parse_replies(&taken);
                        self.receive(i, &parsed);
                    } else {
                        assert!(taken.is_empty(), "take_messages on a polling session");
                    }
                }
            }
            Op::FinishHold { s, h } => {
                let Some((i, hold, generation)) = self.take_hold(*s, *h) else {
                    return;
                };
                let replies = self.engine.finish_hold(hold, self.instant());
                let mut parsed = parse_replies(&replies);
                let reply = parsed.pop().expect("a connect reply");
                assert_eq!(reply["channel"], "/meta/connect");
                let s = &mut self.sessions[i];
                let current = generation == s.generation;
                if current {
                    s.held = false;
                    let grace =
                        s.interval.unwrap_or(self.config.interval_ms) + self.config.max_interval_ms;
                    s.expires = s.expires.max(self.now + grace);
                }
                if s.disconnected {
                    // The client asked to disconnect: its pending connect succeeds and says stop.
                    assert_eq!(reply["successful"], true, "{reply}");
                    assert_eq!(reply["advice"]["reconnect"], "none", "{reply}");
                    assert!(parsed.is_empty());
                } else if !s.alive {
                    assert_eq!(reply["successful"], false, "{reply}");
                    assert_eq!(reply["error"], "402::session_unknown");
                    assert_eq!(reply["advice"]["reconnect"], "handshake");
                    assert!(parsed.is_empty());
                } else {
                    assert_eq!(reply["successful"], true, "{reply}");
                    assert_eq!(reply["advice"]["reconnect"], "retry");
                    if current {
                        self.receive(i, &parsed);
                    } else {
                        assert!(parsed.is_empty(), "a superseded connect carried messages");
                    }
                }
            }
            Op::DropHold { s, h } => {
                let Some((i, hold, generation)) = self.take_hold(*s, *h) else {
                    return;
                };
                let deadline = hold.deadline();
                drop(hold);
                let s = &mut self.sessions[i];
                if generation == s.generation {
                    s.held = false;
                    let d = deadline.duration_since(self.base).as_millis() as u64;
                    let grace =
                        s.interval.unwrap_or(self.config.interval_ms) + self.config.max_interval_ms;
                    s.expires = s.expires.max(d + grace);
                }
            }
            Op::Disconnect { s } => {
                let Some(i) = self.pick(*s) else { return };
                let id = self.id();
                let msg = json!({"channel": "/meta/disconnect", "clientId": self.sessions[i].id, "id": id});
                let out = self.send(self.sessions[i].websocket, &msg);
                let replies = parse_replies(&out.replies);
                assert_eq!(replies.len(), 1);
                assert_eq!(replies[0]["id"], id.as_str());
                assert_eq!(
                    replies[0]["successful"], self.sessions[i].alive,
                    "{}",
                    replies[0]
                );
                if self.sessions[i].alive {
                    self.remove(i);
                    self.sessions[i].disconnected = true;
                } else {
                    assert_eq!(replies[0]["error"], "402::session_unknown");
                }
            }
            Op::Unknown { which } => {
                let channel = ["/meta/connect", "/meta/subscribe", "/meta/disconnect", "/a"]
                    [*which as usize % 4];
                let msg = json!({"channel": channel, "clientId": "0123456789abcdef0123456789abcdef01234567",
                    "subscription": "/a", "data": {}, "connectionType": "long-polling"});
                let out = self.send(false, &msg);
                let replies = parse_replies(&out.replies);
                assert_eq!(replies.len(), 1);
                assert_eq!(replies[0]["successful"], false);
                assert_eq!(replies[0]["error"], "402::session_unknown");
                assert_eq!(replies[0]["advice"]["reconnect"], "handshake");
                assert!(out.hold.is_none());
            }
            Op::LocalSubscribe { pattern } => {
                let Some((ls, _)) = &self.local else { return };
                let text = pattern.text();
                let ok = ls.subscribe(&text).is_ok();
                match ChannelPattern::parse(&text) {
                    Ok(p) => {
                        assert!(ok);
                        self.local_subs.insert(p.as_str().to_owned());
                    }
                    Err(_) => assert!(!ok),
                }
            }
            Op::Advance { steps } => self.now += *steps as u64 * 8,
            Op::Sweep => {
                let now = self.now;
                let expired: Vec<usize> = (0..self.sessions.len())
                    .filter(|&i| {
                        let s = &self.sessions[i];
                        s.alive && !s.held && now > s.expires
                    })
                    .collect();
                let n = self.engine.sweep(self.instant());
                assert_eq!(n, expired.len(), "swept sessions");
                self.coverage.expired += n as u64;
                for i in expired {
                    self.remove(i);
                }
            }
        }
    }

    fn handshake(&mut self, websocket: bool, advice: AdviceIn) {
        let id = self.id();
        let mut msg = json!({
            "channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0", "id": id,
            "supportedConnectionTypes": ["websocket", "long-polling", "callback-polling"],
        });
        if let Some(a) = advice.json() {
            msg["advice"] = a;
        }
        // The budget counts the endpoint's remote sessions; local sessions have none.
        let full = self.sessions.iter().filter(|s| s.alive).count() >= self.config.max_sessions;
        let out = self.send(websocket, &msg);
        let replies = parse_replies(&out.replies);
        assert_eq!(replies.len(), 1);
        let r = &replies[0];
        assert_eq!(r["id"], id.as_str());
        assert!(out.hold.is_none());
        if full {
            assert_eq!(r["successful"], false, "{r}");
            assert_eq!(r["error"], "503::too_many_sessions");
            return;
        }
        assert_eq!(r["successful"], true, "{r}");
        assert!(out.handshake);
        let client_id = r["clientId"].as_str().expect("clientId").to_owned();
        assert!(
            self.sessions.iter().all(|s| s.id != client_id),
            "duplicate client id"
        );
        self.sessions.push(ModelSession {
            id: client_id,
            websocket,
            alive: true,
            disconnected: false,
            subs: BTreeSet::new(),
            queue: VecDeque::new(),
            timeout: None,
            interval: None,
            connected: false,
            generation: 0,
            held: false,
            expires: self.now + self.config.interval_ms + self.config.max_interval_ms,
            received: BTreeSet::new(),
            holds: Vec::new(),
        });
        // Handshake advice is not applied: the session's advice starts from the server's.
    }

    fn connect(&mut self, i: usize, advice: AdviceIn, bad_type: bool) {
        let id = self.id();
        let websocket = self.sessions[i].websocket;
        let ct = if bad_type {
            "flash"
        } else if websocket {
            "websocket"
        } else {
            "long-polling"
        };
        let mut msg = json!({"channel": "/meta/connect", "clientId": self.sessions[i].id,
            "connectionType": ct, "id": id});
        if let Some(a) = advice.json() {
            msg["advice"] = a;
        }
        let out = self.send(websocket, &msg);
        let mut replies = parse_replies(&out.replies);
        if !self.sessions[i].alive || bad_type {
            assert!(out.hold.is_none());
            assert_eq!(replies.len(), 1);
            assert_eq!(replies[0]["successful"], false);
            let want = if self.sessions[i].alive {
                "400::connection_type_unsupported"
            } else {
                "402::session_unknown"
            };
            assert_eq!(replies[0]["error"], want);
            return;
        }
        let immediate = matches!(advice, AdviceIn::Immediate | AdviceIn::Timeout(0));
        if !immediate {
            self.apply_advice(i, advice);
        }
        let now = self.now;
        let default_timeout = self.config.timeout_ms;
        let default_interval = self.config.interval_ms;
        let max_interval = self.config.max_interval_ms;
        let s = &mut self.sessions[i];
        let timeout = s.timeout.unwrap_or(default_timeout);
        let first = !s.connected;
        s.connected = true;
        let pending = !s.queue.is_empty() && !s.websocket;
        let hold = !first && !immediate && timeout > 0 && !pending;
        s.generation += 1;
        if hold {
            let h = out.hold.expect("the engine should hold this connect");
            assert!(replies.is_empty(), "a held connect replied: {replies:?}");
            assert_eq!(
                h.deadline(),
                self.base + Duration::from_millis(now + timeout),
                "hold deadline"
            );
            s.held = true;
            self.coverage.holds += 1;
            let generation = s.generation;
            s.holds.push((h, generation));
        } else {
            assert!(
                out.hold.is_none(),
                "the engine held a connect it should answer"
            );
            s.held = false;
            s.expires = now + s.interval.unwrap_or(default_interval) + max_interval;
            let reply = replies.pop().expect("connect reply");
            assert_eq!(reply["channel"], "/meta/connect");
            assert_eq!(reply["successful"], true, "{reply}");
            assert_eq!(reply["id"], id.as_str());
            self.receive(i, &replies);
        }
    }

    fn subscribe(&mut self, i: usize, names: Vec<String>, array: bool, subscribe: bool) {
        let id = self.id();
        let channel = if subscribe {
            "/meta/subscribe"
        } else {
            "/meta/unsubscribe"
        };
        let subscription = if names.len() == 1 && !array {
            json!(names[0])
        } else {
            json!(names)
        };
        let msg = json!({"channel": channel, "clientId": self.sessions[i].id, "id": id,
            "subscription": subscription});
        let out = self.send(self.sessions[i].websocket, &msg);
        let replies = parse_replies(&out.replies);
        assert_eq!(replies.len(), 1);
        let r = &replies[0];
        assert_eq!(r["id"], id.as_str());
        assert_eq!(r["subscription"], subscription, "subscription echoed");
        let parsed: Result<Vec<ChannelPattern>, _> =
            names.iter().map(|n| ChannelPattern::parse(n)).collect();
        let want_error = match &parsed {
            _ if !self.sessions[i].alive => Some("402::session_unknown"),
            _ if names.is_empty() => Some("403::subscription_missing"),
            Err(_) => Some("403::subscription_invalid"),
            Ok(patterns) if subscribe => {
                let s = &self.sessions[i];
                // Distinct new names; /service/** ones are never recorded, so never counted.
                let new = patterns
                    .iter()
                    .filter(|p| p.kind() != ChannelKind::Service && !s.subs.contains(p.as_str()))
                    .map(|p| p.as_str())
                    .collect::<BTreeSet<_>>()
                    .len();
                if patterns.iter().any(|p| p.kind() == ChannelKind::Meta) {
                    Some("403:denied_by_security_policy:subscribe_denied")
                } else if s.subs.len() + new > self.config.max_subscriptions {
                    Some("403:too_many_subscriptions:subscribe_denied")
                } else {
                    None
                }
            }
            Ok(_) => None,
        };
        match want_error {
            Some(e) => {
                assert_eq!(r["successful"], false, "{r}");
                assert_eq!(r["error"], e, "{r}");
            }
            None => {
                assert_eq!(r["successful"], true, "{r}");
                let s = &mut self.sessions[i];
                for p in parsed.unwrap() {
                    if p.kind() == ChannelKind::Service {
                        continue;
                    }
                    if subscribe {
                        s.subs.insert(p.as_str().to_owned());
                    } else {
                        s.subs.remove(p.as_str());
                    }
                }
            }
        }
    }

    fn publish(&mut self, i: usize, name: &str, no_data: bool) {
        const HANDLED: &[&str] = &[
            "/meta/handshake",
            "/meta/connect",
            "/meta/subscribe",
            "/meta/unsubscribe",
            "/meta/disconnect",
        ];
        if HANDLED.contains(&name) {
            return;
        }
        let id = self.id();
        let (n, data) = self.data();
        let mut msg = json!({"channel": name, "clientId": self.sessions[i].id, "id": id});
        if !no_data {
            msg["data"] = data;
        }
        let out = self.send(self.sessions[i].websocket, &msg);
        let replies = parse_replies(&out.replies);
        assert_eq!(replies.len(), 1);
        let r = &replies[0];
        assert_eq!(r["id"], id.as_str());
        assert!(r.get("data").is_none(), "publish reply carries data: {r}");
        let channel = ChannelId::parse(name);
        let want_error = match &channel {
            Err(_) => Some("405::channel_invalid"),
            Ok(_) if !self.sessions[i].alive => Some("402::session_unknown"),
            Ok(c) if c.kind() == ChannelKind::Meta => {
                Some("403:denied_by_security_policy:publish_denied")
            }
            Ok(_) if no_data => Some("400::data_missing"),
            Ok(_) => None,
        };
        match want_error {
            Some(e) => {
                assert_eq!(r["successful"], false, "{r}");
                assert_eq!(r["error"], e, "{r}");
            }
            None => {
                assert_eq!(r["successful"], true, "{r}");
                self.fan_out(&channel.unwrap(), n, Some(i));
            }
        }
    }

    /// Removes hold number `h` (modulo their count) of session `s`, if it has any: the
    /// session's index, the hold and the generation it was made in.
    fn take_hold(&mut self, s: u8, h: u8) -> Option<(usize, Hold, u64)> {
        let i = self.pick(s)?;
        let holds = &mut self.sessions[i].holds;
        if holds.is_empty() {
            return None;
        }
        let (hold, generation) = holds.remove(h as usize % holds.len());
        Some((i, hold, generation))
    }

    fn check(&self) {
        let stats = self.engine.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            self.engine.session_count(),
            self.alive_count(),
            "session count"
        );
        assert_eq!(load(&stats.queue_drops), self.drops, "queue drops");
        let holds: usize = self.sessions.iter().map(|s| s.holds.len()).sum();
        assert_eq!(load(&stats.held_connects), holds as u64, "held connects");
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for s in self.sessions.iter().filter(|s| s.alive) {
            for p in &s.subs {
                *names.entry(p).or_default() += 1;
            }
        }
        for p in &self.local_subs {
            *names.entry(p).or_default() += 1;
        }
        assert_eq!(self.engine.channel_count(), names.len(), "channel count");
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for (i, s) in self.sessions.iter().enumerate() {
            let session = self.engine.session(&s.id);
            assert_eq!(session.is_some(), s.alive, "session {i} presence");
            if let Some(session) = &session {
                assert!(session.queue_len() <= self.config.max_queue);
                assert_eq!(session.queue_len(), s.queue.len(), "session {i} queue");
                let mut subs: Vec<String> = session
                    .subscriptions()
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect();
                subs.sort();
                assert_eq!(
                    subs,
                    s.subs.iter().cloned().collect::<Vec<_>>(),
                    "session {i} subs"
                );
            }
            for (hold, generation) in &s.holds {
                let want = if *generation != s.generation {
                    Poll::Ready(Wake::Superseded)
                } else if !s.alive {
                    Poll::Ready(Wake::Closed)
                } else if !s.queue.is_empty() {
                    Poll::Ready(Wake::Messages)
                } else {
                    Poll::Pending
                };
                assert_eq!(hold.poll_wake(&mut cx), want, "session {i} hold wake");
            }
        }
        if let Some((_, got)) = &self.local {
            assert_eq!(
                *got.lock().unwrap(),
                self.local_expected,
                "local deliveries"
            );
        }
    }
}
