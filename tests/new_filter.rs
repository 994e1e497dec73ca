//! `framegate new-filter NAME --lang LANG` writes a project that builds as it is, with the
//! tools scripts/test installs (cargo, clang, Zig from pip, AssemblyScript from npm), into a
//! module the proxy loads and runs: a live message through it answers as the example does.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes project `name` in `lang`, builds it with its build.sh, and checks the module live.
async fn scaffold_builds_and_loads(lang: &str) {
    let name = format!("my-{lang}-filter");
    let dir = tempfile::tempdir().unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["new-filter", &name, "--lang", lang, "--dir"])
        .arg(dir.path()));
    let project = dir.path().join(&name);
    assert!(project.join(format!("{name}.tests/delivered.session.jsonl")).is_file());
    if lang == "as" {
        // The compiler scripts/test installed, in place of `npm install` from the registry.
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-sdk/assemblyscript/node_modules");
        std::os::unix::fs::symlink(sdk, project.join("node_modules")).unwrap();
    }
    run(Command::new(project.join("build.sh")).env("CARGO_TARGET_DIR", project.join("target")));
    let module = std::fs::read(project.join(format!("{name}.wasm"))).unwrap();

    let config = format!(
        "{}\n[sinks.audit]\ntype = \"file\"\npath = \"audit.jsonl\"\n\n\
         [routes.mine]\npath = \"/mine\"\nfilters = [{{ module = \"{name}\" }}]\nemit_sinks = [\"audit\"]\n",
        head("")
    );
    let proxy = Proxy::start(&config, &[], &[(&format!("{name}.wasm"), &module)]);
    let mut ws = proxy.connect("/mine?user=newcomer").await;
    ws.send(Message::text("first filter")).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        Message::text("delivered: [newcomer] first filter"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn rust() {
    scaffold_builds_and_loads("rust").await;
}

#[tokio::test]
async fn c() {
    scaffold_builds_and_loads("c").await;
}

#[tokio::test]
async fn zig() {
    scaffold_builds_and_loads("zig").await;
}

#[tokio::test]
async fn assemblyscript() {
    scaffold_builds_and_loads("as").await;
}
