//! `--expect`: compares a replay's effects with expected ones, effect by effect, and says where
//! the first difference is: the session line and its event, the effect, the field.

use serde_json::Value;

use super::Replayed;

/// A field to leave out of the comparison: `PATH` in every effect (`text`, `headers.x-id`), or
/// `KIND.PATH` in effects of one kind only (`emit.key`).
#[derive(Debug, Clone)]
pub struct Mask(Vec<String>);

impl Mask {
    pub fn parse(text: &str) -> Mask {
        Mask(text.split('.').map(str::to_string).collect())
    }

    /// The path this mask removes from `effect`, if it applies to it.
    fn path_in<'a>(&'a self, effect: &Value) -> &'a [String] {
        let kind = effect.get("effect").and_then(Value::as_str);
        match self.0.split_first() {
            Some((first, rest)) if !rest.is_empty() && Some(first.as_str()) == kind => rest,
            _ => &self.0,
        }
    }

    fn apply(&self, effect: &mut Value) {
        let path = self.path_in(effect).to_vec();
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut target = effect;
        for step in parents {
            match target.get_mut(step) {
                Some(next) => target = next,
                None => return,
            }
        }
        if let Some(object) = target.as_object_mut() {
            object.remove(last);
        }
    }
}

/// The first difference between `expected` and `actual` (any value matches an expected `"*"`):
/// the dotted path of the field, empty when the whole values differ.
fn first_difference(expected: &Value, actual: &Value) -> Option<String> {
    if expected == "*" || expected == actual {
        return None;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut names: Vec<&String> = e.keys().chain(a.keys()).collect();
            names.sort();
            names.dedup();
            names.into_iter().find_map(|name| {
                let (e, a) = (e.get(name).unwrap_or(&Value::Null), a.get(name).unwrap_or(&Value::Null));
                first_difference(e, a).map(|rest| join(name, &rest))
            })
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (e, a))| first_difference(e, a).map(|rest| join(&i.to_string(), &rest))),
        _ => Some(String::new()),
    }
}

fn join(head: &str, rest: &str) -> String {
    if rest.is_empty() {
        head.to_string()
    } else {
        format!("{head}.{rest}")
    }
}

fn lookup<'a>(value: &'a Value, path: &str) -> &'a Value {
    (path.split('.').filter(|s| !s.is_empty())).fold(value, |v, step| {
        v.get(step)
            .or_else(|| step.parse::<usize>().ok().and_then(|i| v.get(i)))
            .unwrap_or(&Value::Null)
    })
}

/// Compares; `Err` is a readable account of the first difference.
pub fn compare(replayed: &Replayed, expected: &[Value], masks: &[Mask]) -> Result<(), String> {
    let masked = |effect: &Value| {
        let mut effect = effect.clone();
        for mask in masks {
            mask.apply(&mut effect);
        }
        effect
    };
    let actual = &replayed.effects;
    let describe = |effect: &Value, index: usize| {
        let line = effect.get("line").and_then(Value::as_u64).unwrap_or(0);
        let event = replayed.events.get(&(line as usize)).map_or("?", String::as_str);
        let kind = effect.get("effect").and_then(Value::as_str).unwrap_or("?");
        format!("line {line} ({event}), effect {} ({kind})", index + 1)
    };
    for index in 0..actual.len().max(expected.len()) {
        match (expected.get(index), actual.get(index)) {
            (Some(e), Some(a)) => {
                let (e, a) = (masked(e), masked(a));
                if let Some(path) = first_difference(&e, &a) {
                    let field = if path.is_empty() {
                        "the effect".to_string()
                    } else {
                        format!("field `{path}`")
                    };
                    return Err(format!(
                        "{}: {field}: expected {}, got {}\n  expected: {e}\n  got:      {a}",
                        describe(&a, index),
                        lookup(&e, &path),
                        lookup(&a, &path)
                    ));
                }
            }
            (Some(e), None) => {
                return Err(format!(
                    "{}: expected, but the replay ended after {} effects\n  expected: {e}",
                    describe(e, index),
                    actual.len()
                ));
            }
            (None, Some(a)) => {
                return Err(format!(
                    "{}: not expected (the expected effects end after {})\n  got:      {a}",
                    describe(a, index),
                    expected.len()
                ));
            }
            (None, None) => unreachable!("index below the longer length"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn replayed(effects: Vec<Value>) -> Replayed {
        Replayed {
            effects,
            events: [(2, "message".to_string())].into(),
        }
    }

    #[test]
    fn names_the_line_event_effect_and_field() {
        let got = replayed(vec![json!({"line": 2, "effect": "emit", "key": "8", "text": "x"})]);
        let expected = [json!({"line": 2, "effect": "emit", "key": "7", "text": "x"})];
        let error = compare(&got, &expected, &[]).unwrap_err();
        assert!(
            error.starts_with(r#"line 2 (message), effect 1 (emit): field `key`: expected "7", got "8""#),
            "{error}"
        );
    }

    #[test]
    fn wildcards_and_masks_hide_what_varies() {
        let got = replayed(vec![
            json!({"line": 2, "effect": "emit", "key": "8", "headers": {"id": "a1"}}),
        ]);
        let wildcard = [json!({"line": 2, "effect": "emit", "key": "*", "headers": {"id": "*"}})];
        assert_eq!(compare(&got, &wildcard, &[]), Ok(()));
        let exact = [json!({"line": 2, "effect": "emit", "key": "7", "headers": {"id": "b2"}})];
        let masks = [Mask::parse("emit.key"), Mask::parse("headers.id")];
        assert_eq!(compare(&got, &exact, &masks), Ok(()));
        // A kind-qualified mask leaves other kinds alone.
        let send = replayed(vec![json!({"line": 2, "effect": "send", "key": "8"})]);
        let expected = [json!({"line": 2, "effect": "send", "key": "7"})];
        assert!(compare(&send, &expected, &[Mask::parse("emit.key")]).is_err());
    }

    #[test]
    fn missing_and_extra_effects_are_named() {
        let got = replayed(vec![json!({"line": 2, "effect": "drop"})]);
        let more = [
            json!({"line": 2, "effect": "drop"}),
            json!({"line": 2, "effect": "send"}),
        ];
        let error = compare(&got, &more, &[]).unwrap_err();
        assert!(
            error.starts_with("line 2 (message), effect 2 (send): expected, but the replay ended"),
            "{error}"
        );
        let error = compare(&got, &[], &[]).unwrap_err();
        assert!(
            error.starts_with("line 2 (message), effect 1 (drop): not expected"),
            "{error}"
        );
    }
}
