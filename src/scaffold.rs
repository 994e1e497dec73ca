//! `framegate new-filter`: writes a filter project in Rust, C, Zig or AssemblyScript that
//! builds as it is (`./build.sh`) into `NAME.wasm`, with replay fixtures in `NAME.tests/` and
//! a README. The project starts as the `stamp` example (guest-sdk/examples/stamp) and carries
//! its own copy of the guest SDK for its language, so it needs nothing of framegate's tree.

use std::path::{Path, PathBuf};

/// The languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Zig,
    #[value(name = "as")]
    AssemblyScript,
}

/// Why no project was written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0:?} is not a module name: use lower-case letters, digits, '-' and '_', starting with a letter")]
    BadName(String),
    #[error("{0} already exists: new-filter writes a new folder only")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The replay fixtures of the example, written for module `stamp`.
const FIXTURES: [(&str, &str); 6] = [
    (
        "delivered.session.jsonl",
        include_str!("../guest-sdk/examples/stamp/stamp.tests/delivered.session.jsonl"),
    ),
    (
        "delivered.effects.jsonl",
        include_str!("../guest-sdk/examples/stamp/stamp.tests/delivered.effects.jsonl"),
    ),
    (
        "failed.session.jsonl",
        include_str!("../guest-sdk/examples/stamp/stamp.tests/failed.session.jsonl"),
    ),
    (
        "failed.effects.jsonl",
        include_str!("../guest-sdk/examples/stamp/stamp.tests/failed.effects.jsonl"),
    ),
    (
        "no-audit-sink.session.jsonl",
        include_str!("../guest-sdk/examples/stamp/stamp.tests/no-audit-sink.session.jsonl"),
    ),
    (
        "no-audit-sink.effects.jsonl",
        include_str!("../guest-sdk/examples/stamp/stamp.tests/no-audit-sink.effects.jsonl"),
    ),
];

/// A file of a project: its path (with `{{name}}`) and contents (with `{{...}}` placeholders).
type Template = (&'static str, &'static str);

const HEADER: &str = include_str!("../guest-sdk/include/framegate.h");

fn templates(lang: Lang) -> Vec<Template> {
    let mut files: Vec<Template> = match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("../guest-sdk/templates/rust/Cargo.toml")),
            ("build.sh", include_str!("../guest-sdk/templates/rust/build.sh")),
            ("{{name}}.rs", include_str!("../guest-sdk/examples/stamp/stamp.rs")),
            ("framegate-guest/Cargo.toml", include_str!("../guest-sdk/Cargo.toml")),
            ("framegate-guest/src/lib.rs", include_str!("../guest-sdk/src/lib.rs")),
            ("framegate-guest/src/conn.rs", include_str!("../guest-sdk/src/conn.rs")),
            (
                "framegate-guest/src/export.rs",
                include_str!("../guest-sdk/src/export.rs"),
            ),
            (
                "framegate-guest/src/message.rs",
                include_str!("../guest-sdk/src/message.rs"),
            ),
            (
                "framegate-guest/src/store.rs",
                include_str!("../guest-sdk/src/store.rs"),
            ),
            ("framegate-guest/src/sys.rs", include_str!("../guest-sdk/src/sys.rs")),
        ],
        Lang::C => vec![
            ("build.sh", include_str!("../guest-sdk/templates/c/build.sh")),
            ("{{name}}.c", include_str!("../guest-sdk/examples/stamp/stamp.c")),
            ("framegate.h", HEADER),
        ],
        Lang::Zig => vec![
            ("build.sh", include_str!("../guest-sdk/templates/zig/build.sh")),
            ("{{name}}.zig", include_str!("../guest-sdk/examples/stamp/stamp.zig")),
            ("framegate.zig", include_str!("../guest-sdk/zig/framegate.zig")),
            ("framegate.h", HEADER),
        ],
        Lang::AssemblyScript => vec![
            ("build.sh", include_str!("../guest-sdk/templates/as/build.sh")),
            ("package.json", include_str!("../guest-sdk/templates/as/package.json")),
            (
                "asconfig.json",
                include_str!("../guest-sdk/assemblyscript/asconfig.json"),
            ),
            ("{{name}}.ts", include_str!("../guest-sdk/examples/stamp/stamp.ts")),
            (
                "framegate.ts",
                include_str!("../guest-sdk/assemblyscript/assembly/index.ts"),
            ),
        ],
    };
    files.push(("README.md", include_str!("../guest-sdk/templates/README.md")));
    files
}

/// What a language's source file is called and how the README names the language.
fn source_and_language(lang: Lang) -> (&'static str, &'static str) {
    match lang {
        Lang::Rust => ("rs", "Rust"),
        Lang::C => ("c", "C"),
        Lang::Zig => ("zig", "Zig"),
        Lang::AssemblyScript => ("ts", "AssemblyScript"),
    }
}

/// Writes project `name` in `lang` into the new folder `dir/name`; returns the folder.
pub fn new_filter(name: &str, lang: Lang, dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let (extension, language) = source_and_language(lang);
    let source = format!("{name}.{extension}");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{language}}", language)
            .replace("{{source}}", &source)
            // The example's own references, made the project's.
            .replace("\"../../assemblyscript/assembly/index\"", "\"./framegate\"")
            .replace("\"filter\":\"stamp\"", &format!("\"filter\":\"{name}\""))
    };
    let mut files: Vec<(String, String)> = templates(lang)
        .into_iter()
        .map(|(path, text)| (fill(path), fill(text)))
        .collect();
    for (file, text) in FIXTURES {
        files.push((format!("{name}.tests/{file}"), fill(text)));
    }
    for (path, text) in files {
        let path = root.join(path);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
            std::fs::write(&path, text)?;
            if path.extension().is_some_and(|e| e == "sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write().map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_has_its_sources_build_script_and_fixtures_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = new_filter("my-filter", Lang::AssemblyScript, dir.path()).unwrap();
        let source = std::fs::read_to_string(root.join("my-filter.ts")).unwrap();
        assert!(source.contains("from \"./framegate\""), "{source}");
        assert!(root.join("framegate.ts").is_file());
        let fixture = std::fs::read_to_string(root.join("my-filter.tests/delivered.effects.jsonl")).unwrap();
        assert!(fixture.contains("\"filter\":\"my-filter\"") && !fixture.contains("\"filter\":\"stamp\""));
        let build = std::fs::read_to_string(root.join("build.sh")).unwrap();
        assert!(build.contains("--outFile my-filter.wasm"), "{build}");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(!readme.contains("{{"), "every placeholder filled: {readme}");
        let rust = new_filter("my-filter", Lang::Rust, &dir.path().join("rust")).unwrap();
        let build = std::fs::read_to_string(rust.join("build.sh")).unwrap();
        assert!(build.contains("release/my_filter.wasm my-filter.wasm"), "{build}");
    }

    #[test]
    fn refuses_a_bad_name_and_an_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "My", "9lives", "a/b", "a.b"] {
            assert!(
                matches!(new_filter(bad, Lang::C, dir.path()), Err(ScaffoldError::BadName(_))),
                "{bad}"
            );
        }
        new_filter("twice", Lang::C, dir.path()).unwrap();
        assert!(matches!(
            new_filter("twice", Lang::C, dir.path()),
            Err(ScaffoldError::Exists(_))
        ));
    }
}
