//! The one place that makes a peer's URL fit to print: whatever a URL carries before its host
//! (`user:password@`) is replaced, so no credential reaches a log, a metric, /readyz or a client.

/// The URL as logs and errors show it: `amqp://***@host:5672/%2f`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = scheme_end + 3;
    let authority_end = url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i);
    match url[after..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..after], &url[after + at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://token@host:4222"), "nats://***@host:4222");
        assert_eq!(redact("redis://:p%40ss@h/0"), "redis://***@h/0");
        assert_eq!(redact("ws://host/a@b"), "ws://host/a@b");
        assert_eq!(redact("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
        assert_eq!(redact("127.0.0.1:9092"), "127.0.0.1:9092");
    }
}
