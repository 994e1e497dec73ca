//! The Autobahn|Testsuite cases (run by kosoku, `pip install kosoku`) against `/echo` of the
//! embedded default configuration. Every case but the permessage-deflate ones (12.*, 13.*) must pass.

mod common;

use std::process::Command;

use common::*;

#[test]
fn autobahn_cases_pass_against_the_default_echo_route() {
    let proxy = start_default();
    let reports = proxy.dir.path().join("autobahn");
    let run = Command::new("kosoku")
        .args(["-m", "fuzzingclient", "-x", "12.*", "-x", "13.*", "-o"])
        .arg(&reports)
        .arg(proxy.url("/echo"))
        .output()
        .expect("kosoku is not installed: `pip install kosoku` (scripts/test installs it)");
    let report = String::from_utf8_lossy(&run.stdout);
    let summary: Vec<&str> = report.lines().rev().take(30).collect();
    assert!(
        run.status.success(),
        "Autobahn cases failed:\n{}\n{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains("301"), "expected 301 cases to run:\n{report}");
}
