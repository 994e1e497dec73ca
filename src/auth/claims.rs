//! A verified token's claims: the route's required claims checked against them, and the claims
//! as connection metadata (`claim.NAME`: strings as they are, other values as JSON text).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::{ClaimRule, ClaimValue};

/// The first required claim the token does not satisfy, by name.
pub fn unmet<'a>(rules: &'a BTreeMap<String, ClaimRule>, claims: &Map<String, Value>) -> Option<&'a str> {
    rules
        .iter()
        .find(|(name, rule)| !satisfies(rule, claims.get(name.as_str())))
        .map(|(name, _)| name.as_str())
}

fn satisfies(rule: &ClaimRule, claim: Option<&Value>) -> bool {
    let Some(claim) = claim else { return false };
    match rule {
        ClaimRule::Is(value) => equals(value, claim),
        ClaimRule::OneOf(values) => values.iter().any(|v| equals(v, claim)),
        ClaimRule::Contains { contains } => contains.iter().all(|needed| match claim {
            Value::Array(items) => items.iter().any(|item| item.as_str() == Some(needed)),
            // OAuth's `scope` is one space-separated string.
            Value::String(words) => words.split_whitespace().any(|word| word == needed),
            _ => false,
        }),
    }
}

fn equals(value: &ClaimValue, claim: &Value) -> bool {
    match value {
        ClaimValue::Text(text) => claim.as_str() == Some(text),
        ClaimValue::Integer(n) => claim.as_i64() == Some(*n),
        ClaimValue::Bool(b) => claim.as_bool() == Some(*b),
    }
}

/// Every claim as `claim.NAME`.
pub fn to_meta(claims: &Map<String, Value>) -> Vec<(String, Bytes)> {
    claims
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (format!("claim.{name}"), Bytes::from(text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> BTreeMap<String, ClaimRule> {
        toml::from_str(text).unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_value_one_of_a_list_or_contained() {
        let rules = rules(
            "tenant = \"acme\"\nrole = [\"admin\", \"ops\"]\nscope = { contains = [\"feed:read\", \"feed:write\"] }\n",
        );
        let good = serde_json::json!({"tenant": "acme", "role": "ops", "scope": "feed:write feed:read x"});
        assert_eq!(unmet(&rules, &claims(good)), None);
        let array_scope = serde_json::json!({"tenant": "acme", "role": "admin", "scope": ["feed:read", "feed:write"]});
        assert_eq!(unmet(&rules, &claims(array_scope)), None);
        let wrong_role = serde_json::json!({"tenant": "acme", "role": "guest", "scope": "feed:read feed:write"});
        assert_eq!(unmet(&rules, &claims(wrong_role)), Some("role"));
        let short_scope = serde_json::json!({"tenant": "acme", "role": "ops", "scope": ["feed:read"]});
        assert_eq!(unmet(&rules, &claims(short_scope)), Some("scope"));
        let missing = serde_json::json!({"role": "ops", "scope": "feed:read feed:write"});
        assert_eq!(unmet(&rules, &claims(missing)), Some("tenant"));
        let typed = self::rules("level = 3\nadmin = true\n");
        assert_eq!(
            unmet(&typed, &claims(serde_json::json!({"level": 3, "admin": true}))),
            None
        );
        assert_eq!(
            unmet(&typed, &claims(serde_json::json!({"level": "3", "admin": true}))),
            Some("level")
        );
    }

    #[test]
    fn strings_as_they_are_other_values_as_json() {
        let meta = to_meta(&claims(
            serde_json::json!({"sub": "u1", "exp": 17, "scope": ["a", "b"]}),
        ));
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("claim.sub"), Some(Bytes::from("u1")));
        assert_eq!(get("claim.exp"), Some(Bytes::from("17")));
        assert_eq!(get("claim.scope"), Some(Bytes::from("[\"a\",\"b\"]")));
    }
}
