//! Checking one message against a stream's columns. Pure: no host calls, so it is tested on
//! the build machine. A message is a JSON object (a row) or an array of them; every problem of
//! every row is reported, and a message with any problem is refused whole.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::schema::{Column, Stream, Type};

/// What to do with keys the schema does not name.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Extra {
    /// Refuse the message.
    Reject,
    /// Remove them (the message is rewritten).
    Drop,
    /// Pass them on untouched.
    #[default]
    Keep,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub extra: Extra,
    /// Accept `"42"` for a number column, rewriting it as `42`.
    pub coerce_numeric_strings: bool,
}

/// One problem: where, what was expected, what came.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The row of an array message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// The column, dotted for nested ones (`pickup.lat`, `stops[2].name`); empty for the message.
    pub column: String,
    /// `not_json`, `not_object`, `missing`, `null`, `pk_missing`, `pk_null`, `wrong_type`,
    /// `out_of_range`, `invalid` or `extra`.
    pub reason: &'static str,
    pub expected: String,
    pub got: String,
    /// The name it is counted under: `REASON:COLUMN`, the column as the schema names it (array
    /// indexes left out, `stops[].name`; an extra key as `*`), so the counters stay as few as
    /// the schema's columns whatever clients send.
    #[serde(skip)]
    pub counted_as: String,
}

/// The most violations a refusal lists; the others are only counted (`Refused::more`), so a
/// message of many bad rows cannot make an answer, a dead-letter header and a count per problem
/// without end (docs/filters/schema.md, Limits).
pub const MAX_VIOLATIONS: usize = 100;
/// The longest column a violation names, in bytes (a key a client chose can be long); longer
/// ones are cut and end in `...`.
pub const MAX_COLUMN: usize = 256;

/// Why a message was refused: its first `MAX_VIOLATIONS` problems, and how many more it had.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub violations: Vec<Violation>,
    pub more: usize,
}

/// A message that passed: unchanged, or rewritten (dropped keys, coerced strings).
#[derive(Debug, PartialEq)]
pub enum Passed {
    Unchanged,
    Rewritten { payload: Vec<u8>, coerced: usize },
}

struct Checker<'a> {
    policy: &'a Policy,
    row: Option<usize>,
    violations: Vec<Violation>,
    more: usize,
    coerced: usize,
    dropped: bool,
}

pub fn check(stream: &Stream, policy: &Policy, payload: &[u8]) -> Result<Passed, Refused> {
    let mut checker = Checker {
        policy,
        row: None,
        violations: Vec::new(),
        more: 0,
        coerced: 0,
        dropped: false,
    };
    let mut value: Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(e) => {
            checker.violation("", "not_json", "a JSON object", &e.to_string());
            return Err(checker.refused());
        }
    };
    match &mut value {
        Value::Object(row) => checker.row(&stream.columns, row, ""),
        Value::Array(rows) => {
            for (i, row) in rows.iter_mut().enumerate() {
                checker.row = Some(i);
                match row {
                    Value::Object(row) => checker.row(&stream.columns, row, ""),
                    other => {
                        let got = describe(other);
                        checker.violation("", "not_object", "a JSON object", &got);
                    }
                }
            }
        }
        other => {
            let got = describe(other);
            checker.violation("", "not_object", "a JSON object or an array of them", &got);
        }
    }
    if !checker.violations.is_empty() {
        return Err(checker.refused());
    }
    if checker.coerced == 0 && !checker.dropped {
        return Ok(Passed::Unchanged);
    }
    let payload = serde_json::to_vec(&value).expect("a JSON value serializes");
    Ok(Passed::Rewritten {
        payload,
        coerced: checker.coerced,
    })
}

/// A value as reasons show it: its JSON, cut short.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// `text` at most `max` bytes, cut at a character and ending in `...` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = (0..=max - 3).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}...", &text[..end])
}

/// A column path with its array indexes left out: `stops[2].name` is `stops[].name`.
fn without_indexes(column: &str) -> String {
    let mut out = String::with_capacity(column.len());
    let mut rest = column;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with(']') {
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl Checker<'_> {
    fn violation(&mut self, column: &str, reason: &'static str, expected: &str, got: &str) {
        self.counted_violation(column, reason, expected, got, column);
    }

    /// A violation counted under `counted` (the column as the schema names it).
    fn counted_violation(&mut self, column: &str, reason: &'static str, expected: &str, got: &str, counted: &str) {
        if self.violations.len() == MAX_VIOLATIONS {
            self.more += 1;
            return;
        }
        self.violations.push(Violation {
            row: self.row,
            column: cut(column, MAX_COLUMN),
            reason,
            expected: expected.to_string(),
            got: got.to_string(),
            counted_as: format!("{reason}:{}", cut(&without_indexes(counted), MAX_COLUMN)),
        });
    }

    fn refused(self) -> Refused {
        Refused {
            violations: self.violations,
            more: self.more,
        }
    }

    fn row(&mut self, columns: &[Column], row: &mut Map<String, Value>, path: &str) {
        for column in columns {
            let here = join(path, &column.name);
            match row.get_mut(&column.name) {
                None if !column.nullable => {
                    let reason = if column.pk { "pk_missing" } else { "missing" };
                    self.violation(&here, reason, column.kind.name(), "nothing");
                }
                Some(Value::Null) if !column.nullable => {
                    let reason = if column.pk { "pk_null" } else { "null" };
                    self.violation(&here, reason, column.kind.name(), "null");
                }
                None | Some(Value::Null) => {}
                Some(value) => self.value(column, value, &here),
            }
        }
        if self.policy.extra == Extra::Keep {
            return;
        }
        let extra: Vec<String> = row
            .keys()
            .filter(|key| !columns.iter().any(|c| &c.name == *key))
            .cloned()
            .collect();
        for key in extra {
            if self.policy.extra == Extra::Reject {
                let got = describe(&row[&key]);
                let column = join(path, &key);
                self.counted_violation(&column, "extra", "no such column", &got, &join(path, "*"));
            } else {
                row.remove(&key);
                self.dropped = true;
            }
        }
    }

    fn value(&mut self, column: &Column, value: &mut Value, here: &str) {
        let kind = &column.kind;
        let expected = kind.name();
        match kind {
            Type::Int16 | Type::Int32 | Type::Int64 | Type::Uint64 | Type::Float32 | Type::Float64 => {
                self.number(kind, value, here);
            }
            Type::Boolean if !value.is_boolean() => self.wrong_type(here, expected, value),
            Type::String if !value.is_string() => self.wrong_type(here, expected, value),
            Type::Uuid | Type::Inet | Type::Mac | Type::Bytea | Type::Date32 => self.formatted(kind, value, here),
            Type::Json => match value {
                Value::Object(object) => self.row(&column.columns, object, here),
                Value::Array(_) if column.columns.is_empty() => {}
                other => self.wrong_type(here, "a JSON object", other),
            },
            Type::ListJson | Type::ListInt64 | Type::ListFloat64 | Type::ListString => {
                let Value::Array(items) = value else {
                    return self.wrong_type(here, expected, value);
                };
                let item_kind = match kind {
                    Type::ListInt64 => Type::Int64,
                    Type::ListFloat64 => Type::Float64,
                    Type::ListString => Type::String,
                    _ => Type::Json,
                };
                let item = Column {
                    name: String::new(),
                    kind: item_kind,
                    pk: false,
                    nullable: false,
                    columns: column.columns.clone(),
                };
                for (i, value) in items.iter_mut().enumerate() {
                    let at = format!("{here}[{i}]");
                    if value.is_null() {
                        self.violation(&at, "null", item.kind.name(), "null");
                    } else {
                        self.value(&item, value, &at);
                    }
                }
            }
            Type::Boolean | Type::String => {}
        }
    }

    fn wrong_type(&mut self, here: &str, expected: &str, value: &Value) {
        let got = describe(value);
        self.violation(here, "wrong_type", expected, &got);
    }

    fn number(&mut self, kind: &Type, value: &mut Value, here: &str) {
        let expected = kind.name();
        if let Value::String(text) = value
            && self.policy.coerce_numeric_strings
        {
            let parsed = text
                .trim()
                .parse::<i64>()
                .map(Number::from)
                .ok()
                .or_else(|| text.trim().parse::<u64>().ok().map(Number::from))
                .or_else(|| text.trim().parse::<f64>().ok().and_then(Number::from_f64));
            if let Some(number) = parsed {
                *value = Value::Number(number);
                self.coerced += 1;
            }
        }
        let Value::Number(number) = &*value else {
            return self.wrong_type(here, expected, value);
        };
        let integer_range = match kind {
            Type::Int16 => Some((i16::MIN as i128, i16::MAX as i128)),
            Type::Int32 => Some((i32::MIN as i128, i32::MAX as i128)),
            Type::Int64 => Some((i64::MIN as i128, i64::MAX as i128)),
            Type::Uint64 => Some((0, u64::MAX as i128)),
            _ => None,
        };
        match integer_range {
            Some((low, high)) => {
                let whole = number
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| number.as_u64().map(i128::from));
                match whole {
                    None => {
                        let got = number.to_string();
                        self.violation(here, "wrong_type", expected, &got);
                    }
                    Some(n) if n < low || n > high => {
                        let got = number.to_string();
                        self.violation(here, "out_of_range", expected, &got);
                    }
                    Some(_) => {}
                }
            }
            None => {
                let x = number.as_f64().unwrap_or(f64::INFINITY);
                if *kind == Type::Float32 && x.abs() > f32::MAX as f64 {
                    let got = number.to_string();
                    self.violation(here, "out_of_range", expected, &got);
                }
            }
        }
    }

    /// Types carried as strings with a form of their own (and Date32 also as a day number).
    fn formatted(&mut self, kind: &Type, value: &Value, here: &str) {
        let expected = kind.name();
        if *kind == Type::Date32
            && let Some(days) = value.as_i64()
        {
            if i32::try_from(days).is_err() {
                self.violation(here, "out_of_range", expected, &days.to_string());
            }
            return;
        }
        if *kind == Type::Bytea
            && let Value::Array(bytes) = value
        {
            if !bytes.iter().all(|b| b.as_u64().is_some_and(|b| b <= 255)) {
                self.wrong_type(here, "bytea (base64 or an array of bytes)", value);
            }
            return;
        }
        let Value::String(text) = value else {
            return self.wrong_type(here, expected, value);
        };
        let valid = match kind {
            Type::Uuid => is_uuid(text),
            Type::Inet => is_inet(text),
            Type::Mac => is_mac(text),
            Type::Bytea => is_base64(text),
            _ => is_date(text),
        };
        if !valid {
            let got = describe(value);
            self.violation(here, "invalid", expected, &got);
        }
    }
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An IP address, or a network in CIDR form, as Postgres's inet takes.
fn is_inet(text: &str) -> bool {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let bits = if address.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= bits))
}

fn is_mac(text: &str) -> bool {
    let separator = if text.contains('-') { '-' } else { ':' };
    let groups: Vec<&str> = text.split(separator).collect();
    groups.len() == 6
        && groups
            .iter()
            .all(|g| g.len() == 2 && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// `YYYY-MM-DD`, a real day of the Gregorian calendar.
fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts[..] else { return false };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (year.parse::<u32>(), month.parse::<u32>(), day.parse::<u32>()) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RawStream;

    fn taxi() -> Stream {
        let raw: RawStream = serde_json::from_value(serde_json::json!({
            "stream": "taxi_rides",
            "columns": [
                {"name": "log_id", "databrewType": "Int32", "nativeConnectorType": "integer", "pk": true, "nullable": false},
                {"name": "timestamp", "databrewType": "String", "nativeConnectorType": "varchar", "pk": false, "nullable": true},
                {"name": "driver_id", "databrewType": "Int32", "nativeConnectorType": "numeric", "pk": false, "nullable": false}
            ]
        }))
        .unwrap();
        Stream::from_raw(raw).unwrap()
    }

    fn reasons(stream: &Stream, policy: &Policy, message: &str) -> Vec<(String, &'static str)> {
        match check(stream, policy, message.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(refused) => refused.violations.into_iter().map(|v| (v.column, v.reason)).collect(),
        }
    }

    #[test]
    fn valid_rows_pass_unchanged() {
        let message = r#"{"log_id": 1, "timestamp": null, "driver_id": 7, "other": true}"#;
        assert_eq!(
            check(&taxi(), &Policy::default(), message.as_bytes()),
            Ok(Passed::Unchanged)
        );
    }

    #[test]
    fn every_problem_is_named() {
        let policy = Policy::default();
        let r = |m| reasons(&taxi(), &policy, m);
        assert_eq!(
            r(r#"{"timestamp": "x"}"#),
            [("log_id".into(), "pk_missing"), ("driver_id".into(), "missing")]
        );
        assert_eq!(r(r#"{"log_id": null, "driver_id": 1}"#), [("log_id".into(), "pk_null")]);
        assert_eq!(
            r(r#"{"log_id": "1", "driver_id": 1.5}"#),
            [("log_id".into(), "wrong_type"), ("driver_id".into(), "wrong_type")]
        );
        assert_eq!(
            r(r#"{"log_id": 2147483648, "driver_id": 1}"#),
            [("log_id".into(), "out_of_range")]
        );
        assert_eq!(r(r#"[1, {"log_id": 1, "driver_id": 1}]"#), [("".into(), "not_object")]);
        assert_eq!(r("not json"), [("".into(), "not_json")]);
        let rejecting = Policy {
            extra: Extra::Reject,
            ..Policy::default()
        };
        assert_eq!(
            reasons(&taxi(), &rejecting, r#"{"log_id": 1, "driver_id": 1, "x": 0}"#),
            [("x".into(), "extra")]
        );
    }

    #[test]
    fn array_rows_carry_their_index() {
        let violations = check(
            &taxi(),
            &Policy::default(),
            br#"[{"log_id":1,"driver_id":1},{"log_id":2}]"#,
        )
        .unwrap_err()
        .violations;
        assert_eq!(violations[0].row, Some(1));
        assert_eq!(violations[0].column, "driver_id");
    }

    /// Found with the schema fuzz target (fuzz/corpus/schema/regression-many-violations): a
    /// message of many bad rows listed every one, and counted each extra key (any name a client chose) and each
    /// list index under a name of its own: the answer, the dead-letter header and the number
    /// of counters grew with the message.
    #[test]
    fn a_refusal_lists_at_most_max_violations_and_counts_by_the_schemas_columns() {
        let rows = vec![r#"{"log_id":1}"#; 100_000].join(",");
        let refused = check(&taxi(), &Policy::default(), format!("[{rows}]").as_bytes()).unwrap_err();
        assert_eq!(refused.violations.len(), MAX_VIOLATIONS);
        assert_eq!(refused.more, 100_000 - MAX_VIOLATIONS);

        let rejecting = Policy {
            extra: Extra::Reject,
            ..Policy::default()
        };
        let long_key = "k".repeat(10_000);
        let message = format!(r#"{{"log_id":1,"driver_id":1,"{long_key}":0,"other":0}}"#);
        let refused = check(&taxi(), &rejecting, message.as_bytes()).unwrap_err();
        let counted: Vec<&str> = refused.violations.iter().map(|v| v.counted_as.as_str()).collect();
        assert_eq!(counted, ["extra:*", "extra:*"]);
        assert_eq!(refused.violations[0].column.len(), MAX_COLUMN);
        assert!(refused.violations[0].column.ends_with("..."));

        assert_eq!(without_indexes("stops[2].name[10]"), "stops[].name[]");
        assert_eq!(without_indexes("odd[x]"), "odd[x]");
    }

    #[test]
    fn drop_and_coerce_rewrite() {
        let policy = Policy {
            extra: Extra::Drop,
            coerce_numeric_strings: true,
        };
        let passed = check(&taxi(), &policy, br#"{"log_id":"5","driver_id":1,"x":0}"#).unwrap();
        assert_eq!(
            passed,
            Passed::Rewritten {
                payload: br#"{"driver_id":1,"log_id":5}"#.to_vec(),
                coerced: 1
            }
        );
    }

    #[test]
    fn formats_are_checked() {
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400"));
        assert!(is_inet("10.0.0.1") && is_inet("::1") && is_inet("10.0.0.0/8") && !is_inet("10.0.0.0/33"));
        assert!(is_mac("00:1a:2B:3c:4d:5e") && is_mac("00-1a-2b-3c-4d-5e") && !is_mac("00:1a:2b:3c:4d"));
        assert!(is_date("2024-02-29") && !is_date("2023-02-29") && !is_date("2024-13-01"));
        assert!(is_base64("aGk=") && !is_base64("aGk") && !is_base64("a*k="));
    }

    #[test]
    fn nested_columns_and_lists() {
        let raw: RawStream = serde_json::from_value(serde_json::json!({
            "stream": "s",
            "columns": [
                {"name": "pickup", "databrewType": "JSON", "nullable": false, "columns": [
                    {"name": "lat", "databrewType": "Float64", "nullable": false}
                ]},
                {"name": "stops", "databrewType": "List<JSON>", "columns": [
                    {"name": "name", "databrewType": "String", "nullable": false}
                ]},
                {"name": "fares", "databrewType": "List<Float64>"},
                {"name": "day", "databrewType": "Date32"}
            ]
        }))
        .unwrap();
        let stream = Stream::from_raw(raw).unwrap();
        let policy = Policy::default();
        assert_eq!(
            reasons(
                &stream,
                &policy,
                r#"{"pickup":{"lat":1.5},"stops":[{"name":"a"}],"fares":[1,2.5],"day":"2024-01-31"}"#
            ),
            []
        );
        assert_eq!(
            reasons(
                &stream,
                &policy,
                r#"{"pickup":{},"stops":[{"name":1}],"fares":["x"],"day":"2024-01-32"}"#
            ),
            [
                ("pickup.lat".into(), "missing"),
                ("stops[0].name".into(), "wrong_type"),
                ("fares[0]".into(), "wrong_type"),
                ("day".into(), "invalid")
            ]
        );
    }

    #[test]
    fn unknown_types_are_config_errors() {
        assert!(
            Type::parse("Int8")
                .unwrap_err()
                .contains("unknown databrewType \"Int8\"")
        );
        assert_eq!(Type::parse("list< json >"), Ok(Type::ListJson));
    }
}
