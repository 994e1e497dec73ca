//! Secrets kept out of config files: any string value may name `${env:NAME}` (an environment
//! variable) or `${file:PATH}` (a file's contents, relative to the config file, without its
//! trailing newline), whole or inside a longer string (`nats://app:${env:NATS_PASSWORD}@nats`).
//! `$${` stands for a literal `${`. Also knows which values of a config are secrets, so that the
//! log can mask them wherever a library prints them.

use std::path::Path;

/// Why a value could not be filled.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("${{env:{0}}}: no such environment variable")]
    NoVariable(String),
    #[error("${{file:{0}}}: cannot read: {1}")]
    Unreadable(String, String),
    #[error("{0:?}: only ${{env:NAME}} and ${{file:PATH}} are known (write $${{ for a literal ${{)")]
    UnknownKind(String),
    #[error("a ${{ with no closing }}")]
    Unclosed,
}

/// Secrets shorter than this are not masked in logs: masking every `a` would hide everything.
const SHORTEST_MASKED: usize = 4;

/// Option names whose values are secrets (`sasl.password`, `auth_token`, ...).
const SECRET_NAMES: [&str; 4] = ["password", "secret", "token", "credential"];

/// Fills every `${...}` of every string in `table`, in place; the error names the key.
/// `filled` gets each value that came from a variable or a file.
pub fn fill_table(
    table: &mut toml::Table,
    base: &Path,
    key: &str,
    filled: &mut Vec<String>,
) -> Result<(), (String, SecretError)> {
    for (name, value) in table.iter_mut() {
        let key = if key.is_empty() {
            name.clone()
        } else {
            format!("{key}.{name}")
        };
        fill_value(value, base, &key, filled)?;
    }
    Ok(())
}

fn fill_value(
    value: &mut toml::Value,
    base: &Path,
    key: &str,
    filled: &mut Vec<String>,
) -> Result<(), (String, SecretError)> {
    match value {
        toml::Value::String(text) if text.contains("${") => {
            *text = fill(text, base, filled).map_err(|e| (key.to_string(), e))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                fill_value(item, base, &format!("{key}[{i}]"), filled)?;
            }
        }
        toml::Value::Table(table) => fill_table(table, base, key, filled)?,
        _ => {}
    }
    Ok(())
}

/// The secrets a (filled) config holds: the password of every URL (`scheme://user:pass@host`),
/// the values of options named like credentials, and `filled`; each as written and
/// percent-decoded, the shortest left out.
pub fn secrets_of(table: &toml::Table, filled: Vec<String>) -> Vec<String> {
    let mut found = filled;
    collect_table(table, &mut found);
    let mut all: Vec<String> = found
        .iter()
        .flat_map(|s| [s.clone(), super::percent_decode_with(s, false)])
        .filter(|s| s.len() >= SHORTEST_MASKED)
        .collect();
    all.sort();
    all.dedup();
    all
}

fn collect_table(table: &toml::Table, found: &mut Vec<String>) {
    for (name, value) in table {
        let name = name.to_ascii_lowercase();
        collect(value, SECRET_NAMES.iter().any(|s| name.contains(s)), found);
    }
}

fn collect(value: &toml::Value, named_secret: bool, found: &mut Vec<String>) {
    match value {
        toml::Value::String(text) if named_secret => found.push(text.clone()),
        toml::Value::String(text) => found.extend(url_password(text)),
        toml::Value::Array(items) => items.iter().for_each(|item| collect(item, named_secret, found)),
        toml::Value::Table(table) => collect_table(table, found),
        _ => {}
    }
}

/// The password (or the lone user, which is often a token) of a URL's `user:password@`.
fn url_password(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (user_info, _) = authority.rsplit_once('@')?;
    let secret = user_info.split_once(':').map_or(user_info, |(_, password)| password);
    Some(secret.to_string())
}

/// One string with its `${...}` filled; `secrets` gets each value put in.
pub fn fill(text: &str, base: &Path, secrets: &mut Vec<String>) -> Result<String, SecretError> {
    let mut filled = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            filled.push_str(&rest[..start - 1]);
            filled.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        filled.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(SecretError::Unclosed)?;
        let secret = resolve(&after[..end], base)?;
        filled.push_str(&secret);
        secrets.push(secret);
        rest = &after[end + 1..];
    }
    filled.push_str(rest);
    Ok(filled)
}

fn resolve(reference: &str, base: &Path) -> Result<String, SecretError> {
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| SecretError::NoVariable(name.into()));
    }
    if let Some(path) = reference.strip_prefix("file:") {
        let text = std::fs::read_to_string(base.join(path))
            .map_err(|e| SecretError::Unreadable(path.into(), e.to_string()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    Err(SecretError::UnknownKind(reference.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_variables_and_files_inside_longer_strings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
        // SAFETY: this test alone reads or writes this variable.
        unsafe { std::env::set_var("FRAMEGATE_TEST_SECRET_USER", "app") };
        let mut filled = Vec::new();
        let url = "nats://${env:FRAMEGATE_TEST_SECRET_USER}:${file:pass}@host:4222";
        assert_eq!(
            fill(url, dir.path(), &mut filled),
            Ok("nats://app:s3cret@host:4222".into())
        );
        assert_eq!(filled, ["app", "s3cret"]);
        let fill = |text| fill(text, dir.path(), &mut Vec::new());
        assert_eq!(fill("no secrets {meta.tenant}"), Ok("no secrets {meta.tenant}".into()));
        assert_eq!(fill("price: $${env:X} and $5"), Ok("price: ${env:X} and $5".into()));
    }

    #[test]
    fn says_what_is_wrong_without_showing_a_value() {
        let fill = |text| fill(text, Path::new("."), &mut Vec::new());
        assert_eq!(
            fill("${env:FRAMEGATE_TEST_NO_SUCH_VARIABLE}"),
            Err(SecretError::NoVariable("FRAMEGATE_TEST_NO_SUCH_VARIABLE".into()))
        );
        assert!(matches!(fill("${file:no/such/file}"), Err(SecretError::Unreadable(p, _)) if p == "no/such/file"));
        assert_eq!(fill("${vault:x}"), Err(SecretError::UnknownKind("vault:x".into())));
        assert_eq!(fill("x${env:A"), Err(SecretError::Unclosed));
    }

    #[test]
    fn names_the_key_of_a_nested_value() {
        let mut table: toml::Table = toml::from_str("[sinks.a]\nurls = [\"ok\", \"${nope:x}\"]\n").unwrap();
        let (key, _) = fill_table(&mut table, Path::new("."), "", &mut Vec::new()).unwrap_err();
        assert_eq!(key, "sinks.a.urls[1]");
    }

    #[test]
    fn finds_url_passwords_and_options_named_like_credentials() {
        let table: toml::Table = toml::from_str(
            "[sinks.a]\nurl = \"redis://:p%40ssw0rd@h/0\"\n[sinks.b]\nurl = \"nats://t0ken-x@h\"\n\
             [sinks.c]\nbrokers = \"h:9092\"\nproperties = { \"sasl.password\" = \"kafka-pw\" }\n\
             [sinks.d]\nurl = \"ws://h/a@b\"\nshort = \"x://u:ab@h\"\n",
        )
        .unwrap();
        assert_eq!(
            secrets_of(&table, vec!["from-env".into()]),
            ["from-env", "kafka-pw", "p%40ssw0rd", "p@ssw0rd", "t0ken-x"]
        );
    }
}
