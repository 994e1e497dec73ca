//! The bundled `subscribe` filter: when a connection opens, it subscribes it to a source, so
//! the source's messages flow to the client (acked as they pass). Config:
//! `{ source = "bus", spec = "news" }`, or `spec_from = "path.topic"` to take the spec from a
//! metadata key (a path capture, a query parameter, a header) of each connection.

use framegate_guest::{Conn, Filter, Message, Open, Verdict, export_filter};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "bus")]
    source: String,
    spec: Option<String>,
    spec_from: Option<String>,
}

fn bus() -> String {
    "bus".into()
}

#[derive(Default)]
struct Subscribe {
    source: String,
    spec: Option<String>,
    spec_from: Option<String>,
}

impl Filter for Subscribe {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let config: Config = serde_json::from_slice(config).map_err(|e| format!("subscribe: config: {e}"))?;
        if config.spec.is_some() == config.spec_from.is_some() {
            return Err("subscribe: config: give exactly one of `spec` and `spec_from`".into());
        }
        *self = Subscribe {
            source: config.source,
            spec: config.spec,
            spec_from: config.spec_from,
        };
        Ok(())
    }

    fn on_open(&mut self, conn: &Conn) -> Open {
        let spec = match (&self.spec, &self.spec_from) {
            (Some(spec), _) => Some(spec.clone()),
            (None, Some(key)) => conn.meta_str(key),
            (None, None) => None,
        };
        let Some(spec) = spec.filter(|s| !s.is_empty()) else {
            let _ = conn.reject(400, b"nothing to subscribe to");
            return Open::Reject;
        };
        match conn.subscribe(&self.source, &spec) {
            Ok(_) => Open::Accept,
            Err(e) => {
                let _ = conn.reject(
                    400,
                    format!("cannot subscribe to {} {spec}: {e}", self.source).as_bytes(),
                );
                Open::Reject
            }
        }
    }

    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        if !message.from_client() {
            let sub = conn.meta_str("msg.sub").and_then(|s| s.parse().ok());
            if let (Some(sub), Some(id)) = (sub, conn.meta_str("msg.id")) {
                let _ = conn.ack(sub, &id);
            }
        }
        Verdict::Continue
    }
}

export_filter!(Subscribe);
