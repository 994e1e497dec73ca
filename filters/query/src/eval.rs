//! Records (NSDb's `Bit`) and what a query does with them: whether one matches a condition,
//! and the answer over a window of records (plain: filtered, ordered, limited, projected;
//! windowed: grouped and aggregated). Integers stay integers and floats keep their point.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::sql::{Aggregate, Arg, Expr, Field, GroupBy, Op, Select, Term};

/// A value of a record: its `value`, a dimension or a tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Val {
    fn from_json(value: &Value) -> Option<Val> {
        match value {
            Value::String(s) => Some(Val::Text(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(Val::Int(i)),
                None if n.is_u64() => None,
                None => n.as_f64().filter(|f| f.is_finite()).map(Val::Float),
            },
            _ => None,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Text(_) => None,
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Val::Int(i) => out.push_str(&i.to_string()),
            Val::Float(f) => {
                let text = serde_json::to_string(f).expect("finite floats serialize");
                out.push_str(&text);
                if !text.contains(['.', 'e', 'E']) {
                    out.push_str(".0");
                }
            }
            Val::Text(s) => out.push_str(&crate::json(s)),
        }
    }

    /// Comparison as a condition sees it: numbers with numbers, text with text, else none.
    fn compare(&self, other: &Val) -> Option<Ordering> {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => Some(a.cmp(b)),
            (Val::Text(a), Val::Text(b)) => Some(a.cmp(b)),
            (Val::Text(_), _) | (_, Val::Text(_)) => None,
            (a, b) => a.number()?.partial_cmp(&b.number()?),
        }
    }

    /// A total order for sorting and grouping: numbers before text.
    fn total(&self, other: &Val) -> Ordering {
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => self.compare(other).unwrap_or(Ordering::Equal),
        }
    }
}

/// One record: NSDb's `Bit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bit {
    pub timestamp: i64,
    pub value: Val,
    pub dimensions: BTreeMap<String, Val>,
    pub tags: BTreeMap<String, Val>,
}

impl Bit {
    /// Reads `{timestamp, value, dimensions, tags}`; `timestamp` defaults to `now`.
    pub fn from_json(bit: &Value, now: i64) -> Result<Bit, String> {
        let bit = bit.as_object().ok_or("bit must be an object")?;
        let timestamp = match bit.get("timestamp") {
            None | Some(Value::Null) => now,
            Some(t) => t.as_i64().ok_or("bit.timestamp must be an integer (milliseconds)")?,
        };
        let value = match bit.get("value").map(Val::from_json) {
            Some(Some(v @ (Val::Int(_) | Val::Float(_)))) => v,
            _ => return Err("bit.value must be a number".into()),
        };
        let map = |key: &str| -> Result<BTreeMap<String, Val>, String> {
            match bit.get(key) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(Value::Object(entries)) => entries
                    .iter()
                    .map(|(k, v)| {
                        Val::from_json(v)
                            .map(|v| (k.clone(), v))
                            .ok_or_else(|| format!("bit.{key}.{k} must be a number or a string"))
                    })
                    .collect(),
                Some(_) => Err(format!("bit.{key} must be an object")),
            }
        };
        Ok(Bit {
            timestamp,
            value,
            dimensions: map("dimensions")?,
            tags: map("tags")?,
        })
    }

    /// NSDb's JSON for a record.
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"timestamp\":{},\"value\":", self.timestamp);
        self.value.write(&mut out);
        for (name, map) in [("dimensions", &self.dimensions), ("tags", &self.tags)] {
            out.push_str(&format!(",\"{name}\":{{"));
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&crate::json(k));
                out.push(':');
                v.write(&mut out);
            }
            out.push('}');
        }
        out.push('}');
        out
    }

    /// A name as conditions see it: `timestamp`, `value`, else a dimension, else a tag.
    fn field(&self, name: &str) -> Option<Val> {
        match name {
            "timestamp" => Some(Val::Int(self.timestamp)),
            "value" => Some(self.value.clone()),
            _ => self.dimensions.get(name).or_else(|| self.tags.get(name)).cloned(),
        }
    }
}

fn term_value(term: &Term, now: i64) -> Val {
    match term {
        Term::Int(i) => Val::Int(*i),
        Term::Float(f) => Val::Float(*f),
        Term::Text(s) => Val::Text(s.clone()),
        Term::Now(offset) => Val::Int(now.saturating_add(*offset)),
    }
}

/// `$` matches any run of characters.
fn like(text: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('$').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return text == pattern;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether a record meets a condition; `now` for `now`-relative times.
pub fn matches(expr: &Expr, bit: &Bit, now: i64) -> bool {
    match expr {
        Expr::And(a, b) => matches(a, bit, now) && matches(b, bit, now),
        Expr::Or(a, b) => matches(a, bit, now) || matches(b, bit, now),
        Expr::Not(e) => !matches(e, bit, now),
        Expr::Null(name, is_null) => bit.field(name).is_none() == *is_null,
        Expr::Like(name, pattern) => matches!(bit.field(name), Some(Val::Text(t)) if like(&t, pattern)),
        Expr::Range(name, lo, hi) => bit.field(name).is_some_and(|v| {
            let (lo, hi) = (term_value(lo, now), term_value(hi, now));
            v.compare(&lo).is_some_and(Ordering::is_ge) && v.compare(&hi).is_some_and(Ordering::is_le)
        }),
        Expr::Compare(name, op, term) => bit.field(name).is_some_and(|v| {
            v.compare(&term_value(term, now)).is_some_and(|o| match op {
                Op::Eq => o.is_eq(),
                Op::Gt => o.is_gt(),
                Op::Ge => o.is_ge(),
                Op::Lt => o.is_lt(),
                Op::Le => o.is_le(),
            })
        }),
    }
}

/// Whether the answer is computed over the whole window (aggregations, group by, distinct)
/// rather than record by record.
pub fn windowed(select: &Select) -> bool {
    select.distinct || select.group_by.is_some() || select.fields.iter().any(|f| matches!(f, Field::Aggregate(..)))
}

/// Checks what the grammar allows but a query cannot mean; `Err` is the reason.
pub fn check(select: &Select) -> Result<(), String> {
    let aggregates = select.fields.iter().any(|f| matches!(f, Field::Aggregate(..)));
    if select.distinct && (aggregates || select.fields.is_empty()) {
        return Err("select distinct needs fields, not * or aggregations".into());
    }
    if select.group_by.is_some() && !aggregates {
        return Err("group by needs an aggregation".into());
    }
    if aggregates {
        let grouped = match &select.group_by {
            Some(GroupBy::Dimension(d)) => Some(d.as_str()),
            _ => None,
        };
        if let Some(Field::Name(n)) = select
            .fields
            .iter()
            .find(|f| matches!(f, Field::Name(n) if Some(n.as_str()) != grouped))
        {
            return Err(format!("{n} is neither aggregated nor the group by dimension"));
        }
    }
    Ok(())
}

fn arg_text(aggregate: Aggregate, arg: &Arg) -> String {
    let name = match aggregate {
        Aggregate::Count | Aggregate::CountDistinct => "count",
        Aggregate::Sum => "sum",
        Aggregate::Min => "min",
        Aggregate::Max => "max",
        Aggregate::Avg => "avg",
        Aggregate::First => "first",
        Aggregate::Last => "last",
    };
    let distinct = if aggregate == Aggregate::CountDistinct {
        "distinct "
    } else {
        ""
    };
    match arg {
        Arg::Star => format!("{name}({distinct}*)"),
        Arg::Name(n) => format!("{name}({distinct}{n})"),
    }
}

fn aggregate(aggregate: Aggregate, arg: &Arg, group: &[&Bit]) -> Val {
    let read = |bit: &Bit| match arg {
        Arg::Star => Some(bit.value.clone()),
        Arg::Name(n) => bit.field(n),
    };
    let numbers = || group.iter().filter_map(|b| read(b)).filter(|v| v.number().is_some());
    match aggregate {
        Aggregate::Count => Val::Int(match arg {
            Arg::Star => group.len(),
            Arg::Name(_) => group.iter().filter(|b| read(b).is_some()).count(),
        } as i64),
        Aggregate::CountDistinct => {
            let mut seen: Vec<Val> = group.iter().filter_map(|b| read(b)).collect();
            seen.sort_by(Val::total);
            seen.dedup_by(|a, b| a.total(b).is_eq());
            Val::Int(seen.len() as i64)
        }
        Aggregate::Sum => numbers().fold(Val::Int(0), |sum, v| match (sum, v) {
            (Val::Int(a), Val::Int(b)) => a.checked_add(b).map_or(Val::Float(a as f64 + b as f64), Val::Int),
            (a, b) => Val::Float(a.number().unwrap_or(0.0) + b.number().unwrap_or(0.0)),
        }),
        Aggregate::Min => numbers().min_by(Val::total).unwrap_or(Val::Int(0)),
        Aggregate::Max => numbers()
            .reduce(|a, b| if b.total(&a).is_ge() { b } else { a })
            .unwrap_or(Val::Int(0)),
        Aggregate::Avg => {
            let all: Vec<f64> = numbers().filter_map(|v| v.number()).collect();
            Val::Float(if all.is_empty() {
                0.0
            } else {
                all.iter().sum::<f64>() / all.len() as f64
            })
        }
        Aggregate::First | Aggregate::Last => {
            let with: Vec<&&Bit> = group.iter().filter(|b| read(b).is_some()).collect();
            let pick = if aggregate == Aggregate::First {
                with.iter().min_by_key(|b| b.timestamp)
            } else {
                with.iter().rev().max_by_key(|b| b.timestamp)
            };
            pick.and_then(|b| read(b)).unwrap_or(Val::Int(0))
        }
    }
}

fn sort(bits: &mut [Bit], order_by: &Option<(String, bool)>) {
    if let Some((name, desc)) = order_by {
        bits.sort_by(|a, b| {
            let o = match (a.field(name), b.field(name)) {
                (Some(x), Some(y)) => x.total(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            if *desc { o.reverse() } else { o }
        });
    }
}

/// A record with only the named dimensions and tags (`timestamp` and `value` always stay).
fn project(bit: &Bit, fields: &[Field]) -> Bit {
    if fields.is_empty() {
        return bit.clone();
    }
    let keep = |map: &BTreeMap<String, Val>| {
        map.iter()
            .filter(|(k, _)| fields.iter().any(|f| matches!(f, Field::Name(n) if n == *k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Bit {
        timestamp: bit.timestamp,
        value: bit.value.clone(),
        dimensions: keep(&bit.dimensions),
        tags: keep(&bit.tags),
    }
}

/// A matching record as a live push carries it.
pub fn shape(select: &Select, bit: &Bit) -> Bit {
    project(bit, &select.fields)
}

/// The answer over a window (oldest first) for the records matching `condition`.
/// Whether a record meets the query's condition (all do without one).
pub fn selects(select: &Select, bit: &Bit, now: i64) -> bool {
    select.condition.as_ref().is_none_or(|c| matches(c, bit, now))
}

pub fn answer(select: &Select, window: &[Bit], now: i64) -> Vec<Bit> {
    let hits: Vec<&Bit> = window.iter().filter(|b| selects(select, b, now)).collect();
    let mut out = if select.distinct {
        let mut seen: Vec<Bit> = Vec::new();
        for bit in hits {
            let projected = project(bit, &select.fields);
            let same = |b: &Bit| b.dimensions == projected.dimensions && b.tags == projected.tags;
            if !seen.iter().any(same) {
                seen.push(projected);
            }
        }
        seen
    } else if windowed(select) {
        groups(select, &hits)
    } else {
        hits.into_iter().map(|b| project(b, &select.fields)).collect()
    };
    sort(&mut out, &select.order_by);
    if let Some(limit) = select.limit {
        out.truncate(limit);
    }
    out
}

/// One aggregated record per group (one for the whole window without group by).
fn groups(select: &Select, hits: &[&Bit]) -> Vec<Bit> {
    let aggregates: Vec<(Aggregate, &Arg)> = select
        .fields
        .iter()
        .filter_map(|f| match f {
            Field::Aggregate(a, arg) => Some((*a, arg)),
            Field::Name(_) => None,
        })
        .collect();
    let key = |bit: &Bit| -> Option<Val> {
        match &select.group_by {
            None => Some(Val::Int(0)),
            Some(GroupBy::Dimension(d)) => bit.field(d),
            Some(GroupBy::Interval(ms)) => Some(Val::Int(bit.timestamp.div_euclid(*ms).saturating_mul(*ms))),
        }
    };
    let mut keyed: Vec<(Val, &Bit)> = hits.iter().filter_map(|b| key(b).map(|k| (k, *b))).collect();
    keyed.sort_by(|a, b| a.0.total(&b.0));
    let mut out = Vec::new();
    let mut start = 0;
    while start < keyed.len() || (start == 0 && select.group_by.is_none()) {
        let end = start
            + keyed[start..]
                .iter()
                .take_while(|(k, _)| k.total(&keyed[start].0).is_eq())
                .count();
        let group: Vec<&Bit> = keyed[start..end].iter().map(|(_, b)| *b).collect();
        let results: Vec<(String, Val)> = aggregates
            .iter()
            .map(|(a, arg)| (arg_text(*a, arg), aggregate(*a, arg, &group)))
            .collect();
        let mut bit = Bit {
            timestamp: 0,
            value: results[0].1.clone(),
            dimensions: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        if results.len() > 1 {
            bit.tags.extend(results);
        }
        match &select.group_by {
            Some(GroupBy::Dimension(d)) => drop(bit.tags.insert(d.clone(), keyed[start].0.clone())),
            Some(GroupBy::Interval(ms)) => {
                let Val::Int(lower) = keyed[start].0 else {
                    unreachable!("interval keys are integers")
                };
                bit.timestamp = lower;
                bit.dimensions.insert("lowerBound".into(), Val::Int(lower));
                bit.dimensions
                    .insert("upperBound".into(), Val::Int(lower.saturating_add(*ms)));
            }
            None => {}
        }
        out.push(bit);
        if end == start {
            break; // the empty window without group by: one record
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse;

    fn bit(json: &str) -> Bit {
        Bit::from_json(&serde_json::from_str(json).unwrap(), 0).unwrap()
    }

    fn window() -> Vec<Bit> {
        [
            r#"{"timestamp":10,"value":1,"dimensions":{"city":"Rome","n":5}}"#,
            r#"{"timestamp":20,"value":2.5,"dimensions":{"city":"Paris","n":7}}"#,
            r#"{"timestamp":30,"value":3,"dimensions":{"city":"Rome"},"tags":{"kind":"x"}}"#,
            r#"{"timestamp":40,"value":-4,"dimensions":{"city":"Roma","n":5.0}}"#,
        ]
        .iter()
        .map(|j| bit(j))
        .collect()
    }

    fn run(query: &str) -> Vec<String> {
        let select = parse(query).unwrap();
        check(&select).unwrap();
        answer(&select, &window(), 1_000).iter().map(Bit::to_json).collect()
    }

    fn timestamps(query: &str) -> Vec<i64> {
        let select = parse(query).unwrap();
        answer(&select, &window(), 1_000).iter().map(|b| b.timestamp).collect()
    }

    #[test]
    fn json_keeps_integers_and_floats_apart() {
        let b = bit(r#"{"timestamp":1,"value":15.0,"dimensions":{"a":1,"b":2.0,"c":"x\"y"}}"#);
        assert_eq!(
            b.to_json(),
            r#"{"timestamp":1,"value":15.0,"dimensions":{"a":1,"b":2.0,"c":"x\"y"},"tags":{}}"#
        );
        assert_eq!(
            bit(r#"{"value":1e3}"#).to_json(),
            r#"{"timestamp":0,"value":1000.0,"dimensions":{},"tags":{}}"#
        );
        assert!(Bit::from_json(&serde_json::json!({"value": "1"}), 0).is_err());
        assert!(Bit::from_json(&serde_json::json!({"value": 1, "dimensions": {"a": null}}), 0).is_err());
        assert!(Bit::from_json(&serde_json::json!({"value": 1, "timestamp": 1.5}), 0).is_err());
    }

    #[test]
    fn conditions() {
        assert_eq!(timestamps("select * from m where city = Rome"), [10, 30]);
        assert_eq!(timestamps("select * from m where city like 'Ro$'"), [10, 30, 40]);
        assert_eq!(timestamps("select * from m where city like R$m$"), [10, 30, 40]);
        assert_eq!(timestamps("select * from m where city like $a"), [40]);
        assert_eq!(timestamps("select * from m where n = 5"), [10, 40]);
        assert_eq!(timestamps("select * from m where n in (5, 6.5)"), [10, 40]);
        assert_eq!(timestamps("select * from m where n is null or kind = x"), [30]);
        assert_eq!(timestamps("select * from m where not n is not null"), [30]);
        assert_eq!(
            timestamps("select * from m where value > 1 and not (city = Paris)"),
            [30]
        );
        assert_eq!(timestamps("select * from m where timestamp >= now - 975ms"), [30, 40]);
        assert_eq!(timestamps("select * from m where city > Q"), [10, 30, 40]);
        // Text never equals a number.
        assert_eq!(timestamps("select * from m where city = 5"), Vec::<i64>::new());
        assert_eq!(timestamps("select * from m where n = '5'"), Vec::<i64>::new());
    }

    #[test]
    fn order_limit_projection() {
        assert_eq!(timestamps("select * from m order by value desc limit 2"), [30, 20]);
        assert_eq!(timestamps("select * from m order by n"), [10, 40, 20, 30]);
        assert_eq!(timestamps("select * from m limit 1"), [10]);
        assert_eq!(
            run("select city from m where kind is not null"),
            [r#"{"timestamp":30,"value":3,"dimensions":{"city":"Rome"},"tags":{}}"#]
        );
        assert_eq!(
            run("select distinct city from m order by city"),
            [
                r#"{"timestamp":20,"value":2.5,"dimensions":{"city":"Paris"},"tags":{}}"#,
                r#"{"timestamp":40,"value":-4,"dimensions":{"city":"Roma"},"tags":{}}"#,
                r#"{"timestamp":10,"value":1,"dimensions":{"city":"Rome"},"tags":{}}"#,
            ]
        );
    }

    #[test]
    fn aggregations() {
        assert_eq!(
            run("select count(*) from m"),
            [r#"{"timestamp":0,"value":4,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select count(*) from m where city = nowhere"),
            [r#"{"timestamp":0,"value":0,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select sum(value) from m"),
            [r#"{"timestamp":0,"value":2.5,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select sum(value) from m where city like Ro$"),
            [r#"{"timestamp":0,"value":0,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select min(value) from m"),
            [r#"{"timestamp":0,"value":-4,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select max(value) from m"),
            [r#"{"timestamp":0,"value":3,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select avg(n) from m"),
            [r#"{"timestamp":0,"value":5.666666666666667,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select first(value) from m"),
            [r#"{"timestamp":0,"value":1,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select last(n) from m"),
            [r#"{"timestamp":0,"value":5.0,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select count(distinct city) from m"),
            [r#"{"timestamp":0,"value":3,"dimensions":{},"tags":{}}"#]
        );
        assert_eq!(
            run("select city, count(*), sum(value) from m group by city order by value desc"),
            [
                r#"{"timestamp":0,"value":2,"dimensions":{},"tags":{"city":"Rome","count(*)":2,"sum(value)":4}}"#,
                r#"{"timestamp":0,"value":1,"dimensions":{},"tags":{"city":"Paris","count(*)":1,"sum(value)":2.5}}"#,
                r#"{"timestamp":0,"value":1,"dimensions":{},"tags":{"city":"Roma","count(*)":1,"sum(value)":-4}}"#,
            ]
        );
        assert_eq!(
            run("select count(*) from m group by interval 20 ms"),
            [
                r#"{"timestamp":0,"value":1,"dimensions":{"lowerBound":0,"upperBound":20},"tags":{}}"#,
                r#"{"timestamp":20,"value":2,"dimensions":{"lowerBound":20,"upperBound":40},"tags":{}}"#,
                r#"{"timestamp":40,"value":1,"dimensions":{"lowerBound":40,"upperBound":60},"tags":{}}"#,
            ]
        );
        assert_eq!(
            run("select max(value) from m group by city order by value limit 1"),
            [r#"{"timestamp":0,"value":-4,"dimensions":{},"tags":{"city":"Roma"}}"#]
        );
    }

    #[test]
    fn checks() {
        let why = |q: &str| check(&parse(q).unwrap()).unwrap_err();
        assert_eq!(why("select * from m group by a"), "group by needs an aggregation");
        assert_eq!(
            why("select distinct * from m"),
            "select distinct needs fields, not * or aggregations"
        );
        assert_eq!(
            why("select b, count(*) from m group by a"),
            "b is neither aggregated nor the group by dimension"
        );
    }
}
