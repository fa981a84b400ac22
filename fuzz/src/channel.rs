//! Channel names and patterns: parsing never panics, parsing is consistent between
//! `ChannelId` and `ChannelPattern`, normalisation is idempotent, and the matcher agrees with a
//! naive segment-by-segment reference and with `ChannelId::wildcard_ancestors` (which the
//! router uses to find wildcard subscribers).

use arbitrary::Arbitrary;
use bayeux_core::{ChannelId, ChannelKind, ChannelPattern, Wildcard};

/// Building blocks for names likely to be valid and to match each other.
const SEGMENTS: &[&str] = &[
    "a",
    "b",
    "ab",
    "meta",
    "service",
    "*",
    "**",
    "***",
    "",
    " ",
    "a b",
    "{id}",
    "x.y",
    "\u{e9}",
    "a*",
    "%",
    "-_!~()$@#+.{}",
    "0",
];

/// One name in the input: raw text, or assembled from segments.
#[derive(Debug, Arbitrary)]
pub enum NameInput {
    /// Any text.
    Raw(String),
    /// `/` + segments joined by `/`, optionally padded with whitespace or a trailing `/`.
    Built {
        /// Indexes into the segment table.
        segments: Vec<u8>,
        /// Append a `/`.
        trailing_slash: bool,
        /// Surround with spaces.
        padded: bool,
    },
}

impl NameInput {
    /// The name as text.
    pub fn text(&self) -> String {
        match self {
            NameInput::Raw(s) => s.clone(),
            NameInput::Built {
                segments,
                trailing_slash,
                padded,
            } => {
                let mut s = String::new();
                for i in segments.iter().take(6) {
                    s.push('/');
                    s.push_str(SEGMENTS[*i as usize % SEGMENTS.len()]);
                }
                if *trailing_slash {
                    s.push('/');
                }
                if *padded { format!(" {s}\t") } else { s }
            }
        }
    }
}

/// A fuzz input: a handful of names, each used both as a channel and as a pattern.
#[derive(Debug, Arbitrary)]
pub struct ChannelInput {
    /// The names.
    pub names: Vec<NameInput>,
}

/// The reference matcher: compares segment lists. `pattern` and `channel` are normalised names.
pub fn naive_matches(pattern: &str, channel: &str) -> bool {
    let ps: Vec<&str> = pattern.split('/').skip(1).collect();
    let cs: Vec<&str> = channel.split('/').skip(1).collect();
    let n = ps.len();
    match ps.last() {
        Some(&"**") => cs.len() >= n && ps[..n - 1] == cs[..n - 1],
        Some(&"*") => cs.len() == n && ps[..n - 1] == cs[..n - 1],
        _ => ps == cs,
    }
}

/// Checks every property on the input's names. Panics when one fails.
pub fn check(input: &ChannelInput) {
    let names: Vec<String> = input.names.iter().take(16).map(NameInput::text).collect();
    check_names(&names);
}

/// Checks every property on `names`.
pub fn check_names(names: &[String]) {
    let mut channels = Vec::new();
    let mut patterns = Vec::new();
    for name in names {
        let id = ChannelId::parse(name);
        let pattern = ChannelPattern::parse(name);
        if let Ok(id) = &id {
            // A concrete name is also a (non-wildcard) pattern with the same normalised text.
            let p = pattern
                .as_ref()
                .expect("a channel id must parse as a pattern");
            assert_eq!(p.wildcard(), Wildcard::None, "{name:?}");
            assert_eq!(p.as_str(), id.as_str(), "{name:?}");
            assert_eq!(p.kind(), id.kind());
            assert!(p.matches(id), "{name:?} does not match itself");
            // Normalisation is idempotent: the normalised text parses to the same channel.
            let again = ChannelId::parse(id.as_str())
                .unwrap_or_else(|e| panic!("{name:?} -> {:?} does not re-parse: {e}", id.as_str()));
            assert_eq!(&again, id, "{name:?}");
            check_shape(id.as_str());
            channels.push(id.clone());
        }
        if let Ok(p) = &pattern {
            let again = ChannelPattern::parse(p.as_str())
                .unwrap_or_else(|e| panic!("{name:?} -> {:?} does not re-parse: {e}", p.as_str()));
            assert_eq!(&again, p, "{name:?}");
            check_shape(p.as_str());
            let expected = match p.as_str().rsplit('/').next() {
                Some("**") => Wildcard::Deep,
                Some("*") => Wildcard::One,
                _ => Wildcard::None,
            };
            assert_eq!(p.wildcard(), expected, "{name:?}");
            if p.wildcard() == Wildcard::None {
                assert!(
                    id.is_ok(),
                    "{name:?} is a concrete pattern but not a channel"
                );
            } else {
                assert!(
                    id.is_err(),
                    "{name:?} is a wildcard but parsed as a channel"
                );
            }
            let kind = if p.as_str() == "/meta" || p.as_str().starts_with("/meta/") {
                ChannelKind::Meta
            } else if p.as_str() == "/service" || p.as_str().starts_with("/service/") {
                ChannelKind::Service
            } else {
                ChannelKind::Broadcast
            };
            assert_eq!(p.kind(), kind, "{name:?}");
            patterns.push(p.clone());
        }
    }
    for c in &channels {
        let ancestors: Vec<String> = c.wildcard_ancestors().collect();
        for a in &ancestors {
            match ChannelPattern::parse(a) {
                Ok(p) => assert!(p.matches(c), "ancestor {a:?} does not match {c:?}"),
                // A channel near the length limit has ancestors just over it (`/x/b` ->
                // `/x/**`): no subscription can name them, so the router never finds them.
                Err(_) => assert!(
                    a.len() > bayeux_core::channel::MAX_CHANNEL_LEN,
                    "ancestor {a:?} of {c:?} is not a pattern"
                ),
            }
        }
        for p in &patterns {
            let want = naive_matches(p.as_str(), c.as_str());
            assert_eq!(p.matches(c), want, "pattern {p:?} channel {c:?}");
            // The router finds wildcard subscribers only through the ancestors list.
            if p.wildcard() != Wildcard::None {
                let listed = ancestors.iter().any(|a| a == p.as_str());
                assert_eq!(
                    listed, want,
                    "pattern {p:?} channel {c:?} ancestors {ancestors:?}"
                );
            }
        }
    }
}

/// What every normalised name looks like: `/` + non-empty segments, no surrounding whitespace.
fn check_shape(name: &str) {
    assert!(name.starts_with('/') && name.len() >= 2, "{name:?}");
    assert_eq!(
        name.trim(),
        name,
        "normalised name keeps whitespace: {name:?}"
    );
    assert!(
        name.len() <= bayeux_core::channel::MAX_CHANNEL_LEN,
        "{name:?}"
    );
    assert!(name[1..].split('/').all(|s| !s.is_empty()), "{name:?}");
}

/// The fuzz target's form: names one per line (invalid UTF-8 is replaced, not skipped, so the
/// parser also sees U+FFFD).
pub fn check_text(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let names: Vec<String> = text.split('\n').take(32).map(str::to_owned).collect();
    check_names(&names);
}
