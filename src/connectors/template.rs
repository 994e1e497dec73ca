//! Templates for where a record goes (`subject = "events.{meta.tenant}"`): literal text and
//! `{meta.KEY}`, `{route}`, `{conn}`, `{key}` placeholders filled from the record, so that a
//! filter or a client decides the destination (`{key}`, the record's key, per record). A placeholder that cannot be filled fails the record.

use super::url::redact;
use crate::types::{DeliveryError, Record};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Meta(String),
    Route,
    Conn,
    Key,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("template {:?}: a '{{' without its '}}'", redact(source)))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "route" => Part::Route,
                "conn" => Part::Conn,
                "key" => Part::Key,
                _ => match name.strip_prefix("meta.") {
                    Some(key) if !key.is_empty() => Part::Meta(key.to_string()),
                    _ => {
                        let source = redact(source);
                        return Err(format!(
                            "template {source:?}: unknown placeholder {{{name}}}, expected {{meta.KEY}}, {{route}}, {{conn}} or {{key}}"
                        ));
                    }
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The text of a template without placeholders: the same for every record.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// The template filled from a record; one it cannot fill refuses the record.
    pub fn render(&self, record: &Record) -> Result<String, DeliveryError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Route => out.push_str(&record.route),
                Part::Conn => out.push_str(&record.conn.to_string()),
                Part::Key => {
                    let key = record.key.as_ref().ok_or_else(|| {
                        DeliveryError::Refused(format!("{:?}: the record has no key", redact(&self.source)))
                    })?;
                    out.push_str(&String::from_utf8_lossy(key));
                }
                Part::Meta(key) => {
                    let value = record.meta.get(key).ok_or_else(|| {
                        DeliveryError::Refused(format!(
                            "{:?}: the record has no metadata {key:?}",
                            redact(&self.source)
                        ))
                    })?;
                    out.push_str(&String::from_utf8_lossy(value));
                }
            }
        }
        Ok(out)
    }
}

/// Deserializes a template option, checking its placeholders when the config is read.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Template, D::Error> {
    let source = <String as serde::Deserialize>::deserialize(deserializer)?;
    Template::parse(&source).map_err(serde::de::Error::custom)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::types::Opcode;
    use std::sync::Arc;

    /// A text record of route `in`, connection 7, with metadata `query.topic = orders`.
    pub(in crate::connectors) fn record() -> Record {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("query.topic".to_string(), bytes::Bytes::from("orders"));
        Record {
            id: 1,
            route: "in".into(),
            conn: 7,
            opcode: Opcode::Text,
            key: None,
            payload: "x".into(),
            headers: vec![],
            meta: Arc::new(meta),
        }
    }

    #[test]
    fn fills_placeholders() {
        let t = Template::parse("events.{meta.query.topic}.{route}.{conn}").unwrap();
        assert_eq!(t.render(&record()).unwrap(), "events.orders.in.7");
        assert_eq!(Template::parse("plain").unwrap().render(&record()).unwrap(), "plain");
        assert_eq!(Template::parse("plain").unwrap().literal(), Some("plain"));
        assert_eq!(Template::parse("").unwrap().literal(), Some(""));
        assert_eq!(t.literal(), None);
        let keyed = Record {
            key: Some("db.ns.m".into()),
            ..record()
        };
        assert_eq!(
            Template::parse("nsdb.{key}").unwrap().render(&keyed).unwrap(),
            "nsdb.db.ns.m"
        );
        assert_eq!(
            Template::parse("nsdb.{key}")
                .unwrap()
                .render(&record())
                .unwrap_err()
                .to_string(),
            "refused: \"nsdb.{key}\": the record has no key"
        );
    }

    #[test]
    fn refuses_what_it_cannot_fill() {
        let t = Template::parse("{meta.tenant}").unwrap();
        assert_eq!(
            t.render(&record()).unwrap_err().to_string(),
            "refused: \"{meta.tenant}\": the record has no metadata \"tenant\""
        );
        assert!(
            Template::parse("a.{nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(Template::parse("a.{meta.x").unwrap_err().contains("without its"));
    }
}
