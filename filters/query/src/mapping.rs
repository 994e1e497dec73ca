//! Records from a source that carries plain JSON objects (a Kafka topic a user already has)
//! rather than framegate's envelopes: the stream route's `map` says which fields make the
//! metric, the timestamp, the value, the dimensions and the tags.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::eval::Bit;
use crate::retention::Metric;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    db: String,
    namespace: String,
    /// The metric: a fixed name...
    metric: Option<String>,
    /// ...or the field holding it.
    metric_field: Option<String>,
    /// The field holding the timestamp (milliseconds); without it, the time of arrival.
    timestamp: Option<String>,
    /// The field holding the value.
    value: String,
    /// The fields that become dimensions; without it, every other field that is a number or text.
    dimensions: Option<Vec<String>>,
    /// The fields that become tags.
    #[serde(default)]
    tags: Vec<String>,
}

impl Mapping {
    pub fn check(&self) -> Result<(), String> {
        if self.metric.is_some() == self.metric_field.is_some() {
            return Err("query config: map needs exactly one of `metric` and `metric_field`".into());
        }
        Ok(())
    }

    /// The metric and record a JSON object stands for.
    pub fn read(&self, payload: &[u8], now: i64) -> Result<(Metric, Bit), String> {
        let object: Map<String, Value> =
            serde_json::from_slice(payload).map_err(|e| format!("not a JSON object: {e}"))?;
        let text = |field: &str| match object.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(format!("field {field} is not text")),
        };
        let name = match (&self.metric, &self.metric_field) {
            (Some(metric), _) => metric.clone(),
            (None, Some(field)) => text(field)?,
            (None, None) => unreachable!("checked at init"),
        };
        let taken = |field: &String| {
            Some(field) == self.timestamp.as_ref()
                || *field == self.value
                || Some(field) == self.metric_field.as_ref()
                || self.tags.contains(field)
        };
        let pick = |fields: &mut dyn Iterator<Item = &String>| -> Map<String, Value> {
            fields
                .filter_map(|f| {
                    object
                        .get(f)
                        .filter(|v| v.is_number() || v.is_string())
                        .map(|v| (f.clone(), v.clone()))
                })
                .collect()
        };
        let dimensions = match &self.dimensions {
            Some(fields) => pick(&mut fields.iter()),
            None => pick(&mut object.keys().filter(|f| !taken(f))),
        };
        let mut bit = Map::new();
        if let Some(field) = &self.timestamp {
            bit.insert("timestamp".into(), object.get(field).cloned().unwrap_or(Value::Null));
        }
        bit.insert("value".into(), object.get(&self.value).cloned().unwrap_or(Value::Null));
        bit.insert("dimensions".into(), Value::Object(dimensions));
        bit.insert("tags".into(), Value::Object(pick(&mut self.tags.iter())));
        let metric = Metric {
            db: self.db.clone(),
            namespace: self.namespace.clone(),
            name,
        };
        Ok((metric, Bit::from_json(&Value::Object(bit), now)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(json: &str) -> Mapping {
        let mapping: Mapping = serde_json::from_str(json).unwrap();
        mapping.check().unwrap();
        mapping
    }

    #[test]
    fn fields_become_a_record() {
        let m = mapping(
            r#"{"db":"shop","namespace":"eu","metric":"orders","timestamp":"ts","value":"amount","tags":["team"]}"#,
        );
        let (metric, bit) = m
            .read(
                br#"{"ts":5,"amount":2.5,"country":"IT","qty":3,"team":"a","nested":{"x":1}}"#,
                9,
            )
            .unwrap();
        assert_eq!((metric.db.as_str(), metric.name.as_str()), ("shop", "orders"));
        assert_eq!(
            bit.to_json(),
            r#"{"timestamp":5,"value":2.5,"dimensions":{"country":"IT","qty":3},"tags":{"team":"a"}}"#
        );
        let m = mapping(r#"{"db":"d","namespace":"n","metric_field":"kind","value":"v","dimensions":["a"]}"#);
        let (metric, bit) = m.read(br#"{"kind":"cpu","v":1,"a":"x","b":"y"}"#, 9).unwrap();
        assert_eq!(metric.name, "cpu");
        assert_eq!(
            bit.to_json(),
            r#"{"timestamp":9,"value":1,"dimensions":{"a":"x"},"tags":{}}"#
        );
        assert!(m.read(br#"{"kind":"cpu"}"#, 0).unwrap_err().contains("value"));
        assert!(m.read(b"[1]", 0).is_err());
        let both: Mapping =
            serde_json::from_str(r#"{"db":"d","namespace":"n","metric":"m","metric_field":"k","value":"v"}"#).unwrap();
        assert!(both.check().is_err());
    }
}
