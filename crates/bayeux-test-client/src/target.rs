//! Where a Bayeux endpoint is.

use std::net::SocketAddr;

use crate::Error;

/// A Bayeux endpoint: `http://host:port/path` (or `ws://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`: what is connected to, and the `Host` header.
    pub authority: String,
    /// The endpoint path, e.g. `/cometd`.
    pub path: String,
}

impl Target {
    /// The endpoint `path` at `addr`.
    pub fn new(addr: SocketAddr, path: &str) -> Target {
        Target {
            authority: addr.to_string(),
            path: path.to_owned(),
        }
    }

    /// Parses `http://host:port/path` or `ws://host:port/path` (no TLS; the port is required).
    pub fn parse(url: &str) -> Result<Target, Error> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|p| url.strip_prefix(p))
            .ok_or_else(|| format!("unsupported URL {url}: use http://host:port/path"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !authority.contains(':') {
            return Err(format!("URL {url} needs an explicit port").into());
        }
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The URL as `http://...`.
    pub fn http_url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }

    /// The URL as `ws://...`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path)
    }
}

/// The conventional endpoint, `/cometd`, at `addr`.
impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::new(addr, "/cometd")
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/cometd").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/cometd");
        assert_eq!(t.ws_url(), "ws://127.0.0.1:8080/cometd");
        assert_eq!(Target::parse("ws://h:1").unwrap().path, "/");
        assert!(Target::parse("https://h:1/").is_err());
        assert!(Target::parse("http://h/x").is_err());
    }
}
