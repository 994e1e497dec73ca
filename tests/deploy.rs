//! The deployment files agree with framegate: the Kubernetes ConfigMap's config passes
//! `framegate check` with the bundled filters, and the Deployment gives a pod longer to stop
//! than that config's drain can take, so a rolling update never kills a pod mid-drain.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn manifest(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn k8s_config() -> String {
    manifest("configmap.yaml")["data"]["framegate.toml"]
        .as_str()
        .expect("the ConfigMap holds framegate.toml")
        .to_string()
}

#[test]
fn the_configmap_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = k8s_config().replace(
        "dir = \"/etc/framegate/filters\"",
        &format!("dir = {:?}", built_filters().display().to_string()),
    );
    std::fs::write(dir.path().join("framegate.toml"), config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["check", "framegate.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_pods_grace_period_covers_the_drain() {
    let config: toml::Table = toml::from_str(&k8s_config()).unwrap();
    let server = config["server"].as_table().unwrap();
    let ms = |key: &str| server.get(key).map_or(0, |v| v.as_integer().unwrap());
    // The phases (docs/configuration.md), the grace twice (connections, then sinks), and up to
    // 2 s for the clients' close handshakes.
    let drain_ms =
        ms("drain_delay_ms") + ms("drain_period_ms") + ms("close_spread_ms") + 2 * ms("shutdown_grace_ms") + 2_000;
    let grace_s = manifest("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        ms("drain_delay_ms") > 0,
        "a pod must stay reachable while the Service forgets it"
    );
    assert!(
        drain_ms < grace_s * 1_000,
        "terminationGracePeriodSeconds {grace_s} s does not cover a drain of {drain_ms} ms"
    );
}
