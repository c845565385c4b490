//! The `slmgate` binary's subcommands.

use std::process::Command;

fn slmgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slmgate"))
}

#[test]
fn config_default_prints_a_valid_config() {
    let out = slmgate().args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("name: remote"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.yaml");
    std::fs::write(&path, &text).unwrap();
    let out = slmgate()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:8080\nbackends:\n  - name: a\n    kind: openai\n    base_url: http://x/v1\n    timout: 3s\nmodels:\n  - name: m\n    backend: b\n",
    )
    .unwrap();
    let out = slmgate()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains(
            "bad.yaml:6:5: backends[0].timout: unknown key `timout`, did you mean `timeout`?"
        ),
        "{err}"
    );
    assert!(
        lines[1].contains("bad.yaml:9:5: models[0].backend: unknown backend `b`"),
        "{err}"
    );
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "listen: nowhere\n").unwrap();
    let out = slmgate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.yaml:1:1: listen:"), "{err}");
}

#[test]
fn keys_hash_matches_what_the_gateway_accepts() {
    // sha256("test")
    let expected = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let out = slmgate().args(["keys", "hash", "test"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), expected);
    let mut child = slmgate()
        .args(["keys", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), expected);
}
