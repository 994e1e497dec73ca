//! The one place that makes a peer's URL fit to print: whatever a URL carries before its host
//! (`user:password@`) and the values of query parameters named like credentials (`token`,
//! `api_key`, `password`, ...) are replaced, so no credential reaches a log, a metric, /readyz or
//! a client.

/// Query parameter names holding any of these (in any case) are taken for credentials.
const SECRET_NAMES: [&str; 7] = ["token", "pass", "secret", "key", "auth", "sig", "credential"];

/// The URL as logs and errors show it: `amqp://***@host:5672/%2f`, `wss://host/feed?token=***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = scheme_end + 3;
    let authority_end = url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i);
    let mut shown = match url[after..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..after], &url[after + at..authority_end]),
        None => url[..authority_end].to_string(),
    };
    let rest = &url[authority_end..];
    let (before_fragment, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            shown.push_str(path);
            shown.push('?');
            let parameters: Vec<String> = query.split('&').map(redact_parameter).collect();
            shown.push_str(&parameters.join("&"));
        }
        None => shown.push_str(before_fragment),
    }
    shown.push_str(fragment);
    shown
}

fn redact_parameter(parameter: &str) -> String {
    match parameter.split_once('=') {
        Some((name, _)) if SECRET_NAMES.iter().any(|s| name.to_ascii_lowercase().contains(s)) => {
            format!("{name}=***")
        }
        _ => parameter.to_string(),
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

    #[test]
    fn credential_parameters_never_show() {
        assert_eq!(
            redact("wss://u:p@host/feed?stream=a&token=t0k&API_KEY=k#top"),
            "wss://***@host/feed?stream=a&token=***&API_KEY=***#top"
        );
        assert_eq!(redact("http://host/in?x=1&flag"), "http://host/in?x=1&flag");
        assert_eq!(redact("ws://host/?access_token=abc"), "ws://host/?access_token=***");
    }
}
