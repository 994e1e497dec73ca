//! A module's replay fixtures (`NAME.tests/CASE.session.jsonl` + `CASE.effects.jsonl` beside
//! `NAME.wasm`) and the gate that replays them before a new version is swapped in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{Subject, expect, json_lines, replay};
use crate::filter::SwapGate;

const SESSION_SUFFIX: &str = ".session.jsonl";
const EFFECTS_SUFFIX: &str = ".effects.jsonl";

/// The session files of a fixtures folder, sorted; none when there is no folder.
pub fn sessions(folder: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", folder.display())),
    };
    let mut sessions: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(SESSION_SUFFIX))
        .collect();
    sessions.sort();
    Ok(sessions)
}

/// The expected-effects file of a session file.
pub fn effects_of(session: &Path) -> PathBuf {
    let name = session.to_string_lossy();
    PathBuf::from(format!(
        "{}{EFFECTS_SUFFIX}",
        name.strip_suffix(SESSION_SUFFIX).unwrap_or(&name)
    ))
}

/// Expected effects read from a JSON-lines file.
pub fn read_effects(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let lines = json_lines(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(lines.into_iter().map(|(_, line)| Value::Object(line)).collect())
}

/// Replays one fixture against `subject`; `Err` names what differs.
pub fn check_one(subject: &Subject, session: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(session).map_err(|e| format!("cannot read: {e}"))?;
    let expected = read_effects(&effects_of(session))?;
    let replayed = replay(subject, &text).map_err(|e| e.to_string())?;
    expect::compare(&replayed, &expected, &[])
}

/// Replays every fixture of module `name` in `dir`; `Err` names the first that fails and how.
/// Returns how many passed.
pub fn check_module(dir: &Path, name: &str) -> Result<usize, String> {
    let folder = dir.join(format!("{name}.tests"));
    let sessions = sessions(&folder)?;
    let subject = Subject::Module {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    };
    for session in &sessions {
        if let Err(difference) = check_one(&subject, session) {
            let fixture = session.strip_prefix(dir).unwrap_or(session).display().to_string();
            return Err(format!("replay fixture {fixture} failed: {difference}"));
        }
    }
    Ok(sessions.len())
}

/// The gate the proxy sets on its filter host: a new version passes its module's fixtures.
pub fn swap_gate(dir: PathBuf) -> SwapGate {
    Arc::new(move |name: &str| {
        let passed = check_module(&dir, name)?;
        if passed > 0 {
            tracing::info!(
                module = name,
                fixtures = passed,
                "new version passed its replay fixtures"
            );
        }
        Ok(())
    })
}
