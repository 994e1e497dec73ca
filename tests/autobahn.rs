//! The Autobahn|Testsuite cases (run by kosoku, `pip install kosoku`) against `/echo` of the
//! embedded default configuration, and against a pass-through route (frames relayed in place) in
//! front of a tokio-tungstenite echo server. Every case but the permessage-deflate ones (12.*,
//! 13.*) must pass.

mod common;

use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Runs every case against `url`; fails with kosoku's summary unless all pass.
fn run_cases(url: &str, reports: &std::path::Path) {
    let run = Command::new("kosoku")
        .args(["-m", "fuzzingclient", "-x", "12.*", "-x", "13.*", "-o"])
        .arg(reports)
        .arg(url)
        .output()
        .expect("kosoku is not installed: `pip install kosoku` (scripts/test installs it)");
    let report = String::from_utf8_lossy(&run.stdout);
    let summary: Vec<&str> = report.lines().rev().take(30).collect();
    assert!(
        run.status.success(),
        "Autobahn cases failed against {url}:\n{}\n{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains("301"), "expected 301 cases to run:\n{report}");
}

#[test]
fn autobahn_cases_pass_against_the_default_echo_route() {
    let proxy = start_default();
    run_cases(&proxy.url("/echo"), &proxy.dir.path().join("autobahn"));
}

#[test]
fn autobahn_cases_pass_through_the_frame_relay() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let upstream = listener.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(read) = ws.next().await {
                    let message = match read {
                        Ok(message) => message,
                        Err(error) => {
                            // A broken message is answered with the close code it calls for.
                            let code = match error {
                                Error::Utf8(_) => 1007,
                                Error::Capacity(_) => 1009,
                                _ => 1002,
                            };
                            let frame = CloseFrame {
                                code: code.into(),
                                reason: "".into(),
                            };
                            let _ = ws.close(Some(frame)).await;
                            return;
                        }
                    };
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = format!(
        "{}\n[sinks.echo]\ntype = \"ws\"\nurl = \"ws://{upstream}/\"\n\
         [routes.pass]\npath = \"/pass\"\nsinks = [\"echo\"]\nmax_message_size = 16777216\n",
        head("")
    );
    let proxy = Proxy::start(&config, &[], &[]);
    run_cases(&proxy.url("/pass"), &proxy.dir.path().join("autobahn"));
}
