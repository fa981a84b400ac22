//! The machine-readable contract and the static files served under `/voice/` without
//! authentication: the OpenAPI 3.1 document of the REST API (whose `components.schemas` also
//! hold the notifications' JSON Schemas), each notification's schema as a standalone JSON
//! Schema (2020-12) document, and the agent page.

use serde_json::Value;

/// Where the static files are served.
pub(crate) const STATIC_PREFIX: &str = "/voice";

/// The OpenAPI 3.1 document, checked in at `openapi/voice-api.json` (the crate's directory).
pub const OPENAPI: &str = include_str!("../openapi/voice-api.json");

/// The notifications that have a schema: `(messageType, channel)`.
pub const NOTIFICATION_SCHEMAS: [(&str, &str); 2] = [
    ("CallStateChangeMessage", "/v2/me/calls"),
    ("DeviceStateChangeMessage", "/v2/me/devices"),
];

/// The standalone JSON Schema of one of the OpenAPI document's schemas (e.g. a notification's
/// `data`, `CallStateChangeMessage`): the document's `components.schemas` become `$defs` and
/// the root refers to `name`. `None` when the document has no such schema.
pub fn json_schema(name: &str) -> Option<Value> {
    let doc: Value = serde_json::from_str(OPENAPI).ok()?;
    doc.pointer(&format!("/components/schemas/{name}"))?;
    let defs = serde_json::to_string(&doc["components"]["schemas"]).ok()?;
    let defs: Value =
        serde_json::from_str(&defs.replace("#/components/schemas/", "#/$defs/")).ok()?;
    Some(serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{STATIC_PREFIX}/schemas/{name}.schema.json"),
        "$ref": format!("#/$defs/{name}"),
        "$defs": defs,
    }))
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The agent page.
const AGENT_HTML: &str = include_str!("../web/agent.html");
const AGENT_JS: &str = include_str!("../web/agent.mjs");

/// The official CometD JavaScript client (version 9.0.0, Apache License 2.0, see
/// `web/cometd/README.md`), unmodified ES modules served under `/voice/cometd/`.
const COMETD: [(&str, &str); 16] = [
    ("cometd.js", include_str!("../web/cometd/cometd.js")),
    ("Client.js", include_str!("../web/cometd/Client.js")),
    ("Extension.js", include_str!("../web/cometd/Extension.js")),
    (
        "AckExtension.js",
        include_str!("../web/cometd/AckExtension.js"),
    ),
    (
        "BinaryExtension.js",
        include_str!("../web/cometd/BinaryExtension.js"),
    ),
    (
        "ReloadExtension.js",
        include_str!("../web/cometd/ReloadExtension.js"),
    ),
    (
        "TimeStampExtension.js",
        include_str!("../web/cometd/TimeStampExtension.js"),
    ),
    (
        "TimeSyncExtension.js",
        include_str!("../web/cometd/TimeSyncExtension.js"),
    ),
    ("Transport.js", include_str!("../web/cometd/Transport.js")),
    (
        "RequestTransport.js",
        include_str!("../web/cometd/RequestTransport.js"),
    ),
    (
        "CallbackPollingTransport.js",
        include_str!("../web/cometd/CallbackPollingTransport.js"),
    ),
    (
        "LongPollingTransport.js",
        include_str!("../web/cometd/LongPollingTransport.js"),
    ),
    (
        "WebSocketTransport.js",
        include_str!("../web/cometd/WebSocketTransport.js"),
    ),
    (
        "TransportRegistry.js",
        include_str!("../web/cometd/TransportRegistry.js"),
    ),
    ("Z85.js", include_str!("../web/cometd/Z85.js")),
    ("LICENSE", include_str!("../web/cometd/LICENSE")),
];

/// A static file: its content type and bytes, by path below [`STATIC_PREFIX`].
pub(crate) fn static_file(path: &str) -> Option<(&'static str, Vec<u8>)> {
    let rest = path.strip_prefix(STATIC_PREFIX)?;
    match rest {
        "/openapi.json" => Some(("application/json", OPENAPI.as_bytes().to_vec())),
        "/" | "/agent.html" => Some((HTML, AGENT_HTML.as_bytes().to_vec())),
        "/agent.mjs" => Some((JS, AGENT_JS.as_bytes().to_vec())),
        _ if rest.starts_with("/cometd/") => {
            let name = &rest["/cometd/".len()..];
            COMETD.iter().find(|(n, _)| *n == name).map(|(n, text)| {
                let kind = if n.ends_with(".js") {
                    JS
                } else {
                    "text/plain; charset=utf-8"
                };
                (kind, text.as_bytes().to_vec())
            })
        }
        _ => {
            let name = rest
                .strip_prefix("/schemas/")?
                .strip_suffix(".schema.json")?;
            NOTIFICATION_SCHEMAS
                .iter()
                .any(|(n, _)| *n == name)
                .then(|| json_schema(name))
                .flatten()
                .and_then(|v| serde_json::to_vec_pretty(&v).ok())
                .map(|b| ("application/schema+json", b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_parses_and_every_reference_resolves() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = OPENAPI;
        let mut rest = text;
        let mut refs = 0;
        while let Some(i) = rest.find("\"#/components/schemas/") {
            let tail = &rest[i + 1..];
            let end = tail.find('"').unwrap();
            let pointer = &tail[1..end];
            assert!(doc.pointer(pointer).is_some(), "dangling {pointer}");
            refs += 1;
            rest = &tail[end..];
        }
        assert!(refs > 20);
        for (name, _) in NOTIFICATION_SCHEMAS {
            let s = json_schema(name).unwrap();
            assert!(s["$defs"][name].is_object());
            assert!(!s.to_string().contains("#/components/"));
            assert!(static_file(&format!("/voice/schemas/{name}.schema.json")).is_some());
        }
        assert!(json_schema("Nope").is_none());
        assert!(static_file("/voice/schemas/Call.schema.json").is_none());
        assert!(static_file("/voice/openapi.json").is_some());
        assert!(static_file("/voice/nope").is_none());
        assert!(static_file("/voice/").is_some_and(|(t, _)| t.starts_with("text/html")));
        assert!(
            static_file("/voice/cometd/Client.js")
                .is_some_and(|(t, _)| t.starts_with("text/javascript"))
        );
        assert!(static_file("/voice/cometd/LICENSE").is_some());
        assert!(static_file("/voice/cometd/../agent.mjs").is_none());
        // Every module the page imports, directly or through cometd.js, is served.
        for text in [AGENT_JS].into_iter().chain(COMETD.iter().map(|(_, t)| *t)) {
            for line in text
                .lines()
                .filter(|l| l.starts_with("import ") || l.starts_with("export * from"))
            {
                let spec = line.split('"').nth(1).unwrap();
                let name = spec.rsplit('/').next().unwrap();
                assert!(
                    COMETD.iter().any(|(n, _)| *n == name),
                    "{spec} is not served"
                );
            }
        }
    }
}
