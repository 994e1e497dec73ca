//! The metrics registry read back: the Prometheus text the registry writes, parsed into
//! samples the console's snapshot looks up by name and labels. The registry stays the one
//! place the counts live.

use std::collections::BTreeMap;

/// One line of the exposition: a series and its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

pub struct Samples(Vec<Sample>);

impl Samples {
    /// Every sample of `exposition`; a line it cannot read (none the registry writes) is left out.
    pub fn parse(exposition: &str) -> Samples {
        Samples(exposition.lines().filter_map(sample).collect())
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.0
            .iter()
            .filter(move |s| s.name == name && labels.iter().all(|(key, value)| s.label(key) == Some(value)))
    }

    /// The sum of the series of `name` that carry `labels`; 0 when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The series of `name` that carry `labels`, summed by the value of their label `by`.
    pub fn by(&self, name: &str, labels: &[(&str, &str)], by: &str) -> BTreeMap<String, f64> {
        let mut values = BTreeMap::new();
        for sample in self.matching(name, labels) {
            if let Some(key) = sample.label(by) {
                *values.entry(key.to_string()).or_default() += sample.value;
            }
        }
        values
    }

    /// Every value label `label` takes in the series of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        self.by(name, &[], label).into_keys().collect()
    }
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// `name{key="value",...} value`, or `name value`.
fn sample(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = inside;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let (value, after) = quoted(after)?;
            labels.push((key.trim_start_matches(',').to_string(), value));
            rest = after;
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// A label value up to its closing quote, unescaped, and what follows the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_with_and_without_labels() {
        let samples = Samples::parse(
            "# HELP framegate_messages Messages.\n\
             framegate_messages_total{route=\"echo\",dir=\"in\"} 5\n\
             framegate_messages_total{route=\"echo\",dir=\"out\"} 3\n\
             framegate_messages_total{route=\"a \\\"b\\\"\",dir=\"in\"} 1\n\
             framegate_config_reloads_refused_total 2\n\
             # EOF\n",
        );
        assert_eq!(samples.value("framegate_messages_total", &[("route", "echo")]), 8.0);
        assert_eq!(
            samples.value("framegate_messages_total", &[("route", "a \"b\""), ("dir", "in")]),
            1.0
        );
        assert_eq!(samples.value("framegate_config_reloads_refused_total", &[]), 2.0);
        assert_eq!(
            samples.by("framegate_messages_total", &[("route", "echo")], "dir"),
            BTreeMap::from([("in".to_string(), 5.0), ("out".to_string(), 3.0)])
        );
        assert_eq!(
            samples.label_values("framegate_messages_total", "route"),
            ["a \"b\"", "echo"]
        );
    }

    #[test]
    fn reads_what_the_registry_writes() {
        let metrics = crate::metrics::Metrics::default();
        let route = metrics.route("echo");
        route.closed(1000);
        route.closed(1000);
        route.closed(1006);
        let feed = metrics.feed("upstream");
        feed.connected.set(1);
        feed.reconnects.inc();
        feed.paused_seconds.inc_by(1.5);
        let filter = metrics.filter("echo");
        filter.call_seconds.observe(std::time::Duration::from_millis(250));
        filter.failure("trap");
        let samples = Samples::parse(&metrics.render());
        // The names the console's snapshot reads.
        assert_eq!(
            samples.by("framegate_connections_closed_total", &[("route", "echo")], "code"),
            BTreeMap::from([("1000".to_string(), 2.0), ("1006".to_string(), 1.0)])
        );
        let source = [("source", "upstream")];
        assert_eq!(samples.value("framegate_feed_connected", &source), 1.0);
        assert_eq!(samples.by("framegate_feed_total", &source, "event")["reconnects"], 1.0);
        assert_eq!(samples.value("framegate_feed_paused_seconds_total", &source), 1.5);
        let echo = [("filter", "echo")];
        assert_eq!(samples.value("framegate_filter_call_seconds_count", &echo), 1.0);
        assert_eq!(samples.value("framegate_filter_call_seconds_sum", &echo), 0.25);
        assert_eq!(
            samples.by("framegate_filter_failures_total", &echo, "kind")["trap"],
            1.0
        );
    }
}
