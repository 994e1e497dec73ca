//! The `probe` filter: every ABI call, driven by text commands from the client, answering
//! what the host said. The integration tests use it to check the host end to end; it is also
//! a tour of the SDK. Commands (one per message, words separated by spaces):
//!
//! `meta KEY`, `keys PREFIX` (the metadata keys with that prefix, comma separated), `set KEY VALUE`, `del KEY`, `emit SINK PAYLOAD`, `sub SOURCE SPEC`, `unsub ID`,
//! `timer MS`, `cancel ID`, `close CODE REASON`, `replace TEXT` (then on to the sinks),
//! `pass`, `drop`, `bad-utf8` (replace with invalid UTF-8), `count NAME`, `panic`,
//! `ack SUB ID`, `nack SUB ID`, `hold 1|0` (hold or resume deliveries); the module's shared
//! store: `sget KEY`, `sset KEY VALUE`, `sdel KEY`, `skeys PREFIX`, `sadd KEY DELTA`.
//!
//! At the upgrade: `?reject=STATUS` refuses it; `?sub=TOPIC` subscribes to a bus topic.
//! Towards the client, messages are tagged `[sub ID msg MSG] ` and acked, unless `?manual=1`
//! (then the client acks with `ack`). `?show=key,header.h` adds those `msg.*` values to the tag:
//! `[sub ID msg MSG key=K header.h=V] `. On close, the code is emitted to the sink `log` if the
//! route has one.

use framegate_guest::{Conn, Filter, Level, Message, Open, Record, SinkResult, Verdict, export_filter, store};

#[derive(Default)]
struct Probe;

fn answer<T: std::fmt::Display>(result: Result<T, framegate_guest::Error>) -> String {
    match result {
        Ok(value) => format!("ok {value}"),
        Err(e) => format!("err {e}"),
    }
}

impl Probe {
    fn command(&self, conn: &Conn, message: &mut Message) -> Verdict {
        let text = message.text().unwrap_or_default().to_string();
        let mut words = text.splitn(3, ' ');
        let (command, first, rest) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let reply = match command {
            "meta" => conn.meta_str(first).unwrap_or_else(|| "<none>".into()),
            "keys" => conn.meta_keys(first).join(","),
            "set" => answer(conn.set_meta(first, rest.as_bytes()).map(|()| "")),
            "del" => answer(conn.delete_meta(first).map(|()| "")),
            "emit" => {
                let context = format!("ctx:{rest}");
                let record = Record {
                    key: Some(b"k"),
                    headers: &[("h", b"v")],
                    context: context.as_bytes(),
                };
                answer(conn.emit_with(first, rest.as_bytes(), record))
            }
            "sub" => answer(conn.subscribe(first, rest)),
            "ack" => answer(conn.ack(first.parse().unwrap_or(0), rest).map(|()| "")),
            "nack" => answer(conn.nack(first.parse().unwrap_or(0), rest).map(|()| "")),
            "unsub" => answer(conn.unsubscribe(first.parse().unwrap_or(0)).map(|()| "")),
            "hold" => answer(conn.hold(first == "1").map(|()| "")),
            "sget" => store::get(first).map_or_else(|| "<none>".into(), |v| String::from_utf8_lossy(&v).into_owned()),
            "sset" => answer(store::set(first, rest.as_bytes()).map(|()| "")),
            "sdel" => answer(store::delete(first).map(|()| "")),
            "skeys" => store::keys(first).join(","),
            "sadd" => answer(store::add(first, rest.parse().unwrap_or(0))),
            "timer" => answer(conn.set_timer(first.parse().unwrap_or(0))),
            "cancel" => answer(conn.cancel_timer(first.parse().unwrap_or(0)).map(|()| "")),
            "close" => {
                let _ = conn.close(first.parse().unwrap_or(1000), rest);
                return Verdict::Close;
            }
            "replace" => {
                return match message.replace(first.as_bytes()) {
                    Ok(()) => Verdict::Continue,
                    Err(_) => Verdict::Close,
                };
            }
            "pass" => return Verdict::Continue,
            "drop" => return Verdict::Drop,
            "bad-utf8" => answer(message.replace(&[0xff, 0xfe]).map(|()| "")),
            "count" => {
                framegate_guest::count(first, 1.0);
                "ok".into()
            }
            "panic" => panic!("asked to"),
            other => format!("unknown command {other:?}"),
        };
        let _ = conn.send_text(&reply);
        Verdict::Drop
    }
}

impl Filter for Probe {
    fn on_open(&mut self, conn: &Conn) -> Open {
        if let Some(status) = conn.meta_str("query.reject") {
            let _ = conn.reject(status.parse().unwrap_or(403), b"rejected by probe");
            return Open::Reject;
        }
        if let Some(topic) = conn.meta_str("query.sub")
            && conn.subscribe("bus", &topic).is_err()
        {
            framegate_guest::log(Level::Warn, "subscribe at open failed");
        }
        Open::Accept
    }

    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        if message.from_client() {
            return self.command(conn, message);
        }
        let sub = conn.meta_str("msg.sub").unwrap_or_default();
        let id = conn.meta_str("msg.id").unwrap_or_default();
        if let Ok(sub) = sub.parse()
            && conn.meta_str("query.manual").is_none()
        {
            let _ = conn.ack(sub, &id);
        }
        let mut tag = format!("[sub {sub} msg {id}");
        for name in conn
            .meta_str("query.show")
            .unwrap_or_default()
            .split(',')
            .filter(|n| !n.is_empty())
        {
            let value = conn.meta_str(&format!("msg.{name}")).unwrap_or_else(|| "<none>".into());
            tag.push_str(&format!(" {name}={value}"));
        }
        tag.push_str("] ");
        let tagged = [tag.as_bytes(), message.payload()].concat();
        match message.replace(&tagged) {
            Ok(()) => Verdict::Continue,
            Err(_) => Verdict::Drop,
        }
    }

    fn on_result(&mut self, conn: &Conn, result: SinkResult) {
        let line = format!(
            "result {} {} {} {}",
            result.ticket,
            if result.ok { "ok" } else { "failed" },
            String::from_utf8_lossy(&result.detail),
            String::from_utf8_lossy(&result.context)
        );
        let _ = conn.send_text(&line);
    }

    fn on_timer(&mut self, conn: &Conn, timer: u64) {
        let _ = conn.send_text(&format!("fired {timer}"));
    }

    fn on_close(&mut self, conn: &Conn, code: u16) {
        let _ = conn.emit("log", format!("closed {code}").as_bytes());
    }
}

export_filter!(Probe);
