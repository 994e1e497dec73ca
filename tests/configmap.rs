//! ConfigMap updates without restarts: the config file and the filter folder mounted the way
//! Kubernetes mounts a ConfigMap (files as symlinks through `..data`, itself a symlink to a
//! timestamped folder), then updated the way the kubelet updates one (a new folder, a new
//! `..data` renamed over the old, the old folder removed). The proxy reloads both.

mod common;

use std::path::Path;

use common::*;

/// Writes `files` into a new timestamped folder of the mount and points `..data` at it as the
/// kubelet's AtomicWriter does: symlink `..data_tmp`, rename it over `..data`, link each file
/// name through `..data`, remove the previous folder.
fn configmap_write(mount: &Path, version: &str, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(mount).unwrap();
    let folder = format!("..2026_12_03_06_00_00.{version}");
    std::fs::create_dir(mount.join(&folder)).unwrap();
    for (name, bytes) in files {
        std::fs::write(mount.join(&folder).join(name), bytes).unwrap();
    }
    let previous = std::fs::read_link(mount.join("..data")).ok();
    std::os::unix::fs::symlink(&folder, mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    for (name, _) in files {
        let link = mount.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), link).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(mount.join(previous)).unwrap();
    }
}

fn config(routes: &[&str]) -> Vec<u8> {
    let mut config = format!("{}watch = true\n", head(""));
    for route in routes {
        config += &format!("[routes.{route}]\npath = \"/{route}\"\nfilters = [{{ module = \"echo\" }}]\n");
    }
    config.into_bytes()
}

#[tokio::test]
async fn a_configmap_swap_of_the_config_and_the_filters_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::fs::read(built_filters().join("echo.wasm")).expect("run scripts/build-filters");
    configmap_write(&dir.path().join("conf"), "1", &[("framegate.toml", &config(&["a"]))]);
    configmap_write(&dir.path().join("filters"), "1", &[("echo.wasm", &echo)]);
    let proxy = Proxy::spawn(dir, &["run", "conf/framegate.toml"]);
    assert_eq!(upgrade_status(proxy.ws, "/a").await.0, 101);
    assert_eq!(upgrade_status(proxy.ws, "/b").await.0, 404);

    // The config: a route added.
    configmap_write(
        &proxy.dir.path().join("conf"),
        "2",
        &[("framegate.toml", &config(&["a", "b"]))],
    );
    eventually("the new route", || async {
        upgrade_status(proxy.ws, "/b").await.0 == 101
    })
    .await;

    // The filters: another version of echo (the same module with a custom section).
    let reloads = "framegate_filter_reloads_total{filter=\"echo\"}";
    assert_eq!(proxy.metric(reloads).await, 0.0);
    let mut swapped = echo.clone();
    swapped.extend_from_slice(&[0, 6, 4, b's', b'w', b'a', b'p', b'2']);
    configmap_write(&proxy.filter_dir(), "2", &[("echo.wasm", &swapped)]);
    eventually_within("the new echo version", STARTUP, || async {
        proxy.metric(reloads).await == 1.0
    })
    .await;
    let mut ws = proxy.connect("/a").await;
    send_text(&mut ws, "still echoed").await;
    assert_eq!(next_text(&mut ws).await, "still echoed");
    assert!(!proxy.logs().contains("reload refused"), "{}", proxy.logs());
}
