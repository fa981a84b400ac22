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

/// A static file: its content type and bytes, by path below [`STATIC_PREFIX`].
pub(crate) fn static_file(path: &str) -> Option<(&'static str, Vec<u8>)> {
    let rest = path.strip_prefix(STATIC_PREFIX)?;
    match rest {
        "/openapi.json" => Some(("application/json", OPENAPI.as_bytes().to_vec())),
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
    }
}
