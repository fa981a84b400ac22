//! The codec property: `decode_batch` never panics, and whatever it accepts survives
//! `encode_batch` -> `decode_batch` unchanged (and re-encodes to the same bytes).

use bayeux_core::{Error, Limits, decode_batch, encode_batch};

/// Checks one input under the default limits. Panics when a property fails.
pub fn check(input: &[u8]) {
    check_with(input, &Limits::default());
}

/// Checks one input under `limits`.
pub fn check_with(input: &[u8], limits: &Limits) {
    let batch = match decode_batch(input, limits) {
        Ok(b) => b,
        Err(e) => {
            // Every refusal maps to a Bayeux error string without panicking, and size refusals
            // only happen for inputs that are actually over the limit.
            let s = e.bayeux_error();
            assert!(
                s.len() >= 5 && s.as_bytes()[3] == b':',
                "bad error string {s:?}"
            );
            if let Error::TooLarge { limit } = e {
                assert!(input.len() > limit, "TooLarge for {} bytes", input.len());
            }
            return;
        }
    };
    assert!(input.len() <= limits.max_bytes);
    assert!(
        batch.len() <= limits.max_messages,
        "{} messages",
        batch.len()
    );
    // `data` and `ext` are relayed verbatim to other clients: what is accepted must have no
    // lone surrogate escapes, which strict parsers refuse (one publisher would break every
    // subscriber's batch). Numbers beyond f64 are valid JSON that only some parsers refuse.
    for m in &batch {
        for raw in [&m.data, &m.ext].into_iter().flatten() {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(raw.get()) {
                let e = e.to_string();
                assert!(
                    !e.contains("escape") && !e.contains("unicode"),
                    "accepted a payload with a bad \\u escape ({e}): {raw:?}"
                );
            }
        }
    }
    let encoded = encode_batch(&batch);
    let again = decode_batch(&encoded, limits).unwrap_or_else(|e| {
        panic!(
            "re-encoded batch no longer decodes: {e}\ninput: {:?}\nencoded: {:?}",
            String::from_utf8_lossy(&input[..input.len().min(2000)]),
            String::from_utf8_lossy(&encoded[..encoded.len().min(2000)])
        )
    });
    assert_eq!(batch, again, "round trip changed the messages");
    assert_eq!(encode_batch(&again), encoded, "encoding is not stable");
}

/// A JSON value for structured inputs.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum JsonIn {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A big unsigned integer.
    Big(u64),
    /// A float (non-finite ones render as a number out of range).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<JsonIn>),
    /// An object.
    Obj(Vec<(String, JsonIn)>),
}

/// A message id as clients send them.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum IdIn {
    /// A string.
    Str(String),
    /// A digit string (as the CometD JS client sends).
    Counter(u32),
    /// A number.
    Num(JsonIn),
}

/// A subscription field.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum SubIn {
    /// One name.
    One(String),
    /// An array of names.
    Many(Vec<String>),
    /// Anything else.
    Other(JsonIn),
}

/// One Bayeux-like message; each field may be present or absent.
#[derive(Debug, arbitrary::Arbitrary)]
pub struct MessageIn {
    channel: Option<String>,
    meta: Option<u8>,
    id: Option<IdIn>,
    client_id: Option<String>,
    data: Option<JsonIn>,
    ext: Option<JsonIn>,
    advice: Option<(Option<JsonIn>, Option<JsonIn>)>,
    subscription: Option<SubIn>,
    connection_type: Option<String>,
    supported: Option<Vec<String>>,
    version: Option<String>,
    unknown: Option<(String, JsonIn)>,
}

/// A structured batch: rendered as JSON text with varying whitespace and escaping, then
/// checked like raw bytes. Reaches deep decoder paths far more often than random bytes.
#[derive(Debug, arbitrary::Arbitrary)]
pub struct BatchInput {
    /// Send one bare object instead of an array (when there is exactly one message).
    pub bare: bool,
    /// Whitespace style.
    pub spacing: u8,
    /// Escape non-ASCII characters as `\u` sequences.
    pub ascii: bool,
    /// The messages.
    pub messages: Vec<MessageIn>,
}

struct Render {
    out: String,
    spacing: u8,
    ascii: bool,
}

impl Render {
    fn ws(&mut self) {
        match self.spacing % 4 {
            0 => {}
            1 => self.out.push(' '),
            2 => self.out.push_str("\n  "),
            _ => self.out.push_str("\t\r\n"),
        }
    }

    fn string(&mut self, s: &str) {
        if self.ascii {
            self.out.push('"');
            for c in s.chars() {
                match c {
                    '"' => self.out.push_str("\\\""),
                    '\\' => self.out.push_str("\\\\"),
                    c if (c as u32) < 0x20 || !c.is_ascii() => {
                        let mut buf = [0u16; 2];
                        for unit in c.encode_utf16(&mut buf) {
                            self.out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        } else {
            self.out
                .push_str(&serde_json::to_string(s).expect("strings serialize"));
        }
    }

    fn value(&mut self, v: &JsonIn, depth: usize) {
        match v {
            JsonIn::Null => self.out.push_str("null"),
            JsonIn::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            JsonIn::Int(i) => self.out.push_str(&i.to_string()),
            JsonIn::Big(u) => self.out.push_str(&u.to_string()),
            JsonIn::Float(f) if f.is_finite() => self.out.push_str(&format!("{f:e}")),
            JsonIn::Float(_) => self.out.push_str("1e400"),
            JsonIn::Str(s) => self.string(s),
            JsonIn::Arr(items) if depth < 80 => {
                self.out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(x, depth + 1);
                }
                self.out.push(']');
            }
            JsonIn::Obj(fields) if depth < 80 => {
                self.out.push('{');
                for (i, (k, x)) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    self.string(k);
                    self.out.push(':');
                    self.ws();
                    self.value(x, depth + 1);
                }
                self.out.push('}');
            }
            JsonIn::Arr(_) | JsonIn::Obj(_) => self.out.push('0'),
        }
    }

    fn field(&mut self, first: &mut bool, name: &str) {
        if !*first {
            self.out.push(',');
        }
        *first = false;
        self.ws();
        self.string(name);
        self.out.push(':');
    }

    fn message(&mut self, m: &MessageIn) {
        const META: &[&str] = &[
            "/meta/handshake",
            "/meta/connect",
            "/meta/subscribe",
            "/meta/unsubscribe",
            "/meta/disconnect",
            "/chat/room",
        ];
        self.out.push('{');
        let mut first = true;
        if let Some(i) = m.meta {
            self.field(&mut first, "channel");
            self.string(META[i as usize % META.len()]);
        } else if let Some(c) = &m.channel {
            self.field(&mut first, "channel");
            self.string(c);
        }
        if let Some(id) = &m.id {
            self.field(&mut first, "id");
            match id {
                IdIn::Str(s) => self.string(s),
                IdIn::Counter(n) => self.string(&n.to_string()),
                IdIn::Num(v) => self.value(v, 1),
            }
        }
        if let Some(c) = &m.client_id {
            self.field(&mut first, "clientId");
            self.string(c);
        }
        if let Some(d) = &m.data {
            self.field(&mut first, "data");
            self.value(d, 2);
        }
        if let Some(e) = &m.ext {
            self.field(&mut first, "ext");
            self.value(e, 2);
        }
        if let Some((timeout, interval)) = &m.advice {
            self.field(&mut first, "advice");
            self.out.push('{');
            let mut f = true;
            if let Some(t) = timeout {
                self.field(&mut f, "timeout");
                self.value(t, 3);
            }
            if let Some(i) = interval {
                self.field(&mut f, "interval");
                self.value(i, 3);
            }
            self.out.push('}');
        }
        if let Some(s) = &m.subscription {
            self.field(&mut first, "subscription");
            match s {
                SubIn::One(n) => self.string(n),
                SubIn::Many(v) => {
                    let v = JsonIn::Arr(v.iter().cloned().map(JsonIn::Str).collect());
                    self.value(&v, 2);
                }
                SubIn::Other(v) => self.value(v, 2),
            }
        }
        if let Some(t) = &m.connection_type {
            self.field(&mut first, "connectionType");
            self.string(t);
        }
        if let Some(v) = &m.supported {
            self.field(&mut first, "supportedConnectionTypes");
            let v = JsonIn::Arr(v.iter().cloned().map(JsonIn::Str).collect());
            self.value(&v, 2);
        }
        if let Some(v) = &m.version {
            self.field(&mut first, "version");
            self.string(v);
        }
        if let Some((k, v)) = &m.unknown {
            self.field(&mut first, k);
            self.value(v, 2);
        }
        self.ws();
        self.out.push('}');
    }
}

impl BatchInput {
    /// The batch as JSON text.
    pub fn render(&self) -> String {
        let mut r = Render {
            out: String::new(),
            spacing: self.spacing,
            ascii: self.ascii,
        };
        if self.bare && self.messages.len() == 1 {
            r.message(&self.messages[0]);
        } else {
            r.out.push('[');
            for (i, m) in self.messages.iter().enumerate() {
                if i > 0 {
                    r.out.push(',');
                }
                r.ws();
                r.message(m);
            }
            r.ws();
            r.out.push(']');
        }
        r.out
    }
}
