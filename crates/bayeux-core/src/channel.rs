//! Channel names, channel patterns and the one wildcard matcher of the project.
//!
//! Validation follows CometD's `ChannelId` and `Bayeux.Validator`: names start with `/`, segments
//! are non-empty and use `[A-Za-z0-9]` plus `! # $ ( ) + - . @ _ { ~ }` and space; a trailing `/` is
//! stripped; `*` and `**` are allowed only as the whole last segment.

use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// Maximum length of a channel name, in bytes. CometD sets no limit; an unbounded name is an easy
/// way to grow the router, so we set one.
pub const MAX_CHANNEL_LEN: usize = 1024;

/// What kind of channel a name denotes (Bayeux spec, "Channels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `/meta/**`: protocol channels, handled by the engine, never broadcast.
    Meta,
    /// `/service/**`: request/response with server-side listeners, never broadcast.
    Service,
    /// Every other channel: broadcast to subscribers.
    Broadcast,
}

/// The wildcard form of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wildcard {
    /// No wildcard: the pattern names exactly one channel.
    None,
    /// `/a/*`: exactly one more segment.
    One,
    /// `/a/**`: one or more further segments.
    Deep,
}

fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b' ' | b'!'
                | b'#'
                | b'$'
                | b'('
                | b')'
                | b'+'
                | b'-'
                | b'.'
                | b'@'
                | b'_'
                | b'{'
                | b'}'
                | b'~'
        )
}

/// Validates `name` and returns the normalised form (trimmed, without a trailing `/`) and its
/// wildcard kind.
fn validate(name: &str) -> Result<(&str, Wildcard), Error> {
    let name = name.trim();
    // Whitespace before a stripped trailing `/` goes too, so that the result is its own normal
    // form: "/a/b /" -> "/a/b", and "/ /" -> "/" (refused) instead of "/ ".
    let name = if name.len() > 1 {
        name.strip_suffix('/').map_or(name, str::trim_end)
    } else {
        name
    };
    let invalid = || Error::InvalidChannel(truncate(name));
    if name.len() > MAX_CHANNEL_LEN || !name.starts_with('/') || name.len() < 2 {
        return Err(invalid());
    }
    let mut wildcard = Wildcard::None;
    let mut segments = name[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() {
            return Err(invalid());
        }
        let last = segments.peek().is_none();
        match seg {
            "*" | "**" if !last => return Err(invalid()),
            "*" => wildcard = Wildcard::One,
            "**" => wildcard = Wildcard::Deep,
            _ => {
                if !seg.bytes().all(valid_char) {
                    return Err(invalid());
                }
            }
        }
    }
    Ok((name, wildcard))
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn kind_of(name: &str) -> ChannelKind {
    if name == "/meta" || name.starts_with("/meta/") {
        ChannelKind::Meta
    } else if name == "/service" || name.starts_with("/service/") {
        ChannelKind::Service
    } else {
        ChannelKind::Broadcast
    }
}

/// A concrete (non-wildcard) channel name such as `/v2/me/calls`.
///
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(Arc<str>);

impl ChannelId {
    /// Parses and validates a concrete channel name.
    ///
    /// ```
    /// use bayeux_core::ChannelId;
    /// assert_eq!(ChannelId::parse("/chat/room1/").unwrap().as_str(), "/chat/room1");
    /// assert!(ChannelId::parse("/chat/*").is_err());
    /// assert!(ChannelId::parse("chat").is_err());
    /// ```
    pub fn parse(name: &str) -> Result<Self, Error> {
        match validate(name)? {
            (n, Wildcard::None) => Ok(ChannelId(Arc::from(n))),
            (n, _) => Err(Error::InvalidChannel(truncate(n))),
        }
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Meta, service or broadcast.
    pub fn kind(&self) -> ChannelKind {
        kind_of(&self.0)
    }

    /// The wildcard patterns that match this channel, most specific first:
    /// `/a/b/c` gives `/a/b/*`, `/a/b/**`, `/a/**`, `/**`.
    pub fn wildcard_ancestors(&self) -> impl Iterator<Item = String> + '_ {
        let s: &str = &self.0;
        let last_slash = s.rfind('/').unwrap_or(0);
        let one = std::iter::once(format!("{}/*", &s[..last_slash]));
        let deep = s
            .char_indices()
            .filter(|&(_, c)| c == '/')
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(move |i| format!("{}/**", &s[..i]));
        one.chain(deep)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription pattern: a concrete channel, `/a/*` or `/a/**`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelPattern {
    name: Arc<str>,
    wildcard: WildcardOrd,
}

// `Wildcard` in a form that can derive `Ord` for the pattern.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct WildcardOrd(u8);

impl ChannelPattern {
    /// Parses and validates a pattern.
    ///
    /// ```
    /// use bayeux_core::{ChannelId, ChannelPattern};
    /// let p = ChannelPattern::parse("/chat/**").unwrap();
    /// assert!(p.matches(&ChannelId::parse("/chat/a/b").unwrap()));
    /// assert!(!p.matches(&ChannelId::parse("/chat").unwrap()));
    /// assert!(ChannelPattern::parse("/chat/**/x").is_err());
    /// ```
    pub fn parse(name: &str) -> Result<Self, Error> {
        let (n, w) = validate(name)?;
        let w = match w {
            Wildcard::None => 0,
            Wildcard::One => 1,
            Wildcard::Deep => 2,
        };
        Ok(ChannelPattern {
            name: Arc::from(n),
            wildcard: WildcardOrd(w),
        })
    }

    /// The pattern as written (normalised).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name, shared: the router, the session and the Redis interest map keep this one
    /// allocation instead of a copy each.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its wildcard form.
    pub fn wildcard(&self) -> Wildcard {
        match self.wildcard.0 {
            0 => Wildcard::None,
            1 => Wildcard::One,
            _ => Wildcard::Deep,
        }
    }

    /// Meta, service or broadcast, judged by the pattern's prefix (`/**` counts as broadcast).
    pub fn kind(&self) -> ChannelKind {
        kind_of(&self.name)
    }

    /// Whether this pattern matches the concrete channel. This is the project's only matcher.
    pub fn matches(&self, channel: &ChannelId) -> bool {
        matches(&self.name, self.wildcard(), channel.as_str())
    }
}

/// The matcher: `pattern` is a validated pattern name with wildcard kind `w`, `channel` a
/// validated concrete name.
fn matches(pattern: &str, w: Wildcard, channel: &str) -> bool {
    match w {
        Wildcard::None => pattern == channel,
        Wildcard::One => {
            // "/a/*" -> prefix "/a/"; the rest must be one non-empty segment.
            let prefix = &pattern[..pattern.len() - 1];
            channel
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        }
        Wildcard::Deep => {
            let prefix = &pattern[..pattern.len() - 2];
            channel
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty())
        }
    }
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelId {
        ChannelId::parse(s).unwrap()
    }

    #[test]
    fn validation_table() {
        let ok = [
            "/a",
            "/a/b",
            "/a/b/",
            " /a ",
            "/a-b_c!~()$@",
            "/v2/me/calls",
            "/a/{id}",
            "/a.b+c#d",
        ];
        for n in ok {
            assert!(ChannelId::parse(n).is_ok(), "{n}");
        }
        let bad = [
            "",
            "/",
            "a",
            "//",
            "/a//b",
            "/a/*",
            "/a/**",
            "/a/%",
            "/a/\u{e9}",
            "/a/b\"c",
            "/a/\tb",
        ];
        for n in bad {
            assert!(ChannelId::parse(n).is_err(), "{n:?}");
        }
        let patterns_ok = ["/a/*", "/a/**", "/*", "/**", "/a"];
        for n in patterns_ok {
            assert!(ChannelPattern::parse(n).is_ok(), "{n}");
        }
        let patterns_bad = ["/*/a", "/**/a", "/a/***", "/a*", "/a/b*", "/a/*/"];
        for n in patterns_bad {
            // "/a/*/" normalises to "/a/*", which is valid.
            if n == "/a/*/" {
                assert!(ChannelPattern::parse(n).is_ok());
                continue;
            }
            assert!(ChannelPattern::parse(n).is_err(), "{n}");
        }
        assert!(ChannelId::parse(&format!("/{}", "a".repeat(MAX_CHANNEL_LEN))).is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(ch("/meta/connect").kind(), ChannelKind::Meta);
        assert_eq!(ch("/meta").kind(), ChannelKind::Meta);
        assert_eq!(ch("/metadata").kind(), ChannelKind::Broadcast);
        assert_eq!(ch("/service/echo").kind(), ChannelKind::Service);
        assert_eq!(ch("/v2/me/calls").kind(), ChannelKind::Broadcast);
        assert_eq!(
            ChannelPattern::parse("/meta/**").unwrap().kind(),
            ChannelKind::Meta
        );
    }

    #[test]
    fn matcher_table() {
        let cases = [
            ("/a/*", "/a/b", true),
            ("/a/*", "/a", false),
            ("/a/*", "/a/b/c", false),
            ("/a/*", "/ab/c", false),
            ("/a/**", "/a/b", true),
            ("/a/**", "/a/b/c", true),
            ("/a/**", "/a", false),
            ("/a/**", "/ab", false),
            ("/**", "/a", true),
            ("/*", "/a", true),
            ("/*", "/a/b", false),
            ("/a/b", "/a/b", true),
            ("/a/b", "/a/bc", false),
        ];
        for (p, c, want) in cases {
            assert_eq!(
                ChannelPattern::parse(p).unwrap().matches(&ch(c)),
                want,
                "{p} {c}"
            );
        }
    }

    #[test]
    fn ancestors() {
        let a: Vec<_> = ch("/a/b/c").wildcard_ancestors().collect();
        assert_eq!(a, ["/a/b/*", "/a/b/**", "/a/**", "/**"]);
        let a: Vec<_> = ch("/a").wildcard_ancestors().collect();
        assert_eq!(a, ["/*", "/**"]);
    }
}
