//! Sink templates (src/connectors/template.rs): `{meta.KEY}`, `{route}`, `{conn}`, `{key}` in a
//! destination, parsed from the config and rendered over a record whose metadata and key come
//! from the input (`TEMPLATE\nKEY=VALUE\n...`). Nothing panics; a template with no placeholder
//! renders as itself.

use std::sync::Arc;

use crate::connectors::template::Template;
use crate::types::{Opcode, Record};
use bytes::Bytes;

/// One input: panics on what must not happen.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Ok(template) = Template::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    let meta = lines
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    let record = Record {
        id: 1,
        route: Arc::from("route"),
        conn: 7,
        opcode: Opcode::Text,
        key: text.len().is_multiple_of(2).then(|| Bytes::from_static(b"key")),
        payload: Bytes::new(),
        headers: Vec::new(),
        meta: Arc::new(meta),
    };
    let rendered = template.render(&record);
    if let Some(literal) = template.literal() {
        assert_eq!(rendered.as_deref().ok(), Some(literal));
    }
}
