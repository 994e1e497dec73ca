//! Connectors: what framegate talks to besides its clients. One folder (or file) per peer holds
//! its sink, its source and the client code they share; `sinks` is the runner every sink sits
//! behind (queue, retries, dead letters, results), `sources` runs subscriptions. The registry
//! below is the one place that lists the kinds a config's `type` may name, and the one place
//! that parses a connector's options, once per loaded config.
//!
//! Adding a connector: a folder with its options (`Deserialize`), a `SinkConnector` and/or
//! `SourceConnector` impl on them, and one line in `CONNECTORS`.

pub mod amqp;
pub mod bus;
pub mod file;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod pulsar;
pub mod redis;
pub mod sinks;
pub mod sources;
pub mod stdout;
pub mod template;
pub mod url;
pub mod ws;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{BUS_SOURCE, Config, ConfigError};
pub use sinks::{SinkConnector, Sinks};
pub use sources::{SourceConnector, Sources};

/// A sink's parsed options: a connector behind the sink runner, or a route's upstream.
#[derive(Clone)]
pub enum SinkKind {
    Queued(Arc<dyn SinkConnector>),
    /// One upstream connection per client connection, relaying both ways (a `ws` sink).
    Upstream(Arc<ws::Upstream>),
}

/// A source's parsed options: a broker that subscriptions consume, or an upstream feed that
/// routes are fed by (a `ws` source).
#[derive(Clone)]
pub enum SourceKind {
    Subscribed(Arc<dyn SourceConnector>),
    Feed(Arc<ws::Upstream>),
}

type ParseSink = fn(&toml::Table) -> Result<SinkKind, String>;
type ParseSource = fn(&toml::Table) -> Result<SourceKind, String>;

/// A connector kind: the name `type` gives it, and how its options are parsed for each
/// direction it serves.
struct Registered {
    kind: &'static str,
    sink: Option<ParseSink>,
    source: Option<ParseSource>,
}

/// Every connector kind, in the order errors list them.
const CONNECTORS: &[Registered] = &[
    Registered {
        kind: "stdout",
        sink: Some(queued::<stdout::Options>),
        source: None,
    },
    Registered {
        kind: "file",
        sink: Some(queued::<file::Options>),
        source: None,
    },
    Registered {
        kind: "bus",
        sink: Some(queued::<bus::SinkOptions>),
        source: None,
    },
    Registered {
        kind: "ws",
        sink: Some(ws::sink),
        source: Some(ws::source),
    },
    Registered {
        kind: "nats",
        sink: Some(queued::<nats::SinkOptions>),
        source: Some(subscribed::<nats::SourceOptions>),
    },
    Registered {
        kind: "jetstream",
        sink: Some(nats::jetstream_sink),
        source: Some(subscribed::<nats::JetstreamOptions>),
    },
    Registered {
        kind: "redis",
        sink: Some(queued::<redis::SinkOptions>),
        source: Some(subscribed::<redis::SourceOptions>),
    },
    Registered {
        kind: "kafka",
        sink: Some(queued::<kafka::SinkOptions>),
        source: Some(subscribed::<kafka::SourceOptions>),
    },
    Registered {
        kind: "amqp",
        sink: Some(queued::<amqp::SinkOptions>),
        source: Some(subscribed::<amqp::SourceOptions>),
    },
    Registered {
        kind: "mqtt",
        sink: Some(queued::<mqtt::SinkOptions>),
        source: Some(subscribed::<mqtt::SourceOptions>),
    },
    Registered {
        kind: "pulsar",
        sink: Some(queued::<pulsar::SinkOptions>),
        source: Some(subscribed::<pulsar::SourceOptions>),
    },
    Registered {
        kind: "http",
        sink: Some(queued::<http::Options>),
        source: None,
    },
];

/// A connector's options from its part of the config table.
pub fn parse<T: DeserializeOwned>(options: &toml::Table) -> Result<T, String> {
    toml::Value::Table(options.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

fn queued<T: SinkConnector + DeserializeOwned>(options: &toml::Table) -> Result<SinkKind, String> {
    let options: T = parse(options)?;
    options.check()?;
    Ok(SinkKind::Queued(Arc::new(options)))
}

fn subscribed<T: SourceConnector + DeserializeOwned>(options: &toml::Table) -> Result<SourceKind, String> {
    let options: T = parse(options)?;
    options.check()?;
    Ok(SourceKind::Subscribed(Arc::new(options)))
}

/// The connectors of one config, their options parsed and checked.
#[derive(Clone, Default)]
pub struct Catalog {
    pub sinks: BTreeMap<String, SinkKind>,
    pub sources: BTreeMap<String, SourceKind>,
}

impl Catalog {
    /// Parses every sink's and source's options with its connector; an error names the key.
    pub fn parse(config: &Config) -> Result<Catalog, ConfigError> {
        let kinds = |direction: fn(&Registered) -> bool| {
            CONNECTORS
                .iter()
                .filter(|c| direction(c))
                .map(|c| c.kind)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut catalog = Catalog::default();
        for (name, sink) in &config.sinks {
            let parse = CONNECTORS
                .iter()
                .find(|c| c.kind == sink.kind)
                .and_then(|c| c.sink)
                .ok_or_else(|| {
                    config.error(
                        format!("sinks.{name}.type"),
                        format!(
                            "unknown sink type {:?}, expected one of {}",
                            sink.kind,
                            kinds(|c| c.sink.is_some())
                        ),
                    )
                })?;
            sinks::RecordTemplates::new(sink).map_err(|m| config.error(format!("sinks.{name}"), m))?;
            let parsed = parse(&sink.options).map_err(|m| config.error(format!("sinks.{name}"), m))?;
            catalog.sinks.insert(name.clone(), parsed);
        }
        for (name, source) in &config.sources {
            debug_assert_ne!(name, BUS_SOURCE, "config validation keeps the bus's name");
            let parse = CONNECTORS
                .iter()
                .find(|c| c.kind == source.kind)
                .and_then(|c| c.source)
                .ok_or_else(|| {
                    config.error(
                        format!("sources.{name}.type"),
                        format!(
                            "unknown source type {:?}, expected one of {}",
                            source.kind,
                            kinds(|c| c.source.is_some())
                        ),
                    )
                })?;
            let parsed = parse(&source.options).map_err(|m| config.error(format!("sources.{name}"), m))?;
            catalog.sources.insert(name.clone(), parsed);
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        let config = Config::parse(text, "test.toml").unwrap();
        Catalog::parse(&config).err().expect("refused").to_string()
    }

    #[test]
    fn options_are_checked_by_the_connector() {
        assert_eq!(
            parse_err("[sinks.f]\ntype = \"file\"\n"),
            "test.toml: sinks.f: missing field `path`"
        );
        let e = parse_err("[sinks.f]\ntype = \"kafkaa\"\n");
        assert!(
            e.contains("sinks.f.type: unknown sink type \"kafkaa\", expected one of stdout, file"),
            "{e}"
        );
        let e = parse_err("[sinks.f]\ntype = \"stdout\"\nfoo = 1\n");
        assert!(e.starts_with("test.toml: sinks.f: unknown field `foo`"), "{e}");
        let e = parse_err("[sources.s]\ntype = \"http\"\n");
        assert!(
            e.contains("sources.s.type: unknown source type \"http\", expected one of ws, nats"),
            "{e}"
        );
        let e = parse_err("[sinks.w]\ntype = \"ws\"\nurl = \"ws://x/\"\nqueue = 5\non_full = \"block\"\n");
        assert!(e.contains("sinks.w: on_full: only a ws source takes it"), "{e}");
    }

    #[test]
    fn every_kind_parses_its_defaults() {
        let config = Config::parse(
            "[sinks.n]\ntype = \"nats\"\nsubject = \"s\"\n[sinks.j]\ntype = \"jetstream\"\nsubject = \"s\"\n\
             [sources.k]\ntype = \"kafka\"\n[sources.w]\ntype = \"ws\"\nurl = \"wss://example.com/feed\"\n",
            "test.toml",
        )
        .unwrap();
        let catalog = Catalog::parse(&config).unwrap();
        assert!(matches!(catalog.sinks["j"], SinkKind::Queued(_)));
        assert!(matches!(catalog.sources["k"], SourceKind::Subscribed(_)));
        assert!(matches!(catalog.sources["w"], SourceKind::Feed(_)));
    }
}
