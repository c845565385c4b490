//! The official `anthropic` Python SDK, unmodified, against the gateway and a mock OpenAI
//! upstream: `messages.create`, `messages.stream`, a tool definition and a
//! tool_use / tool_result turn.
//!
//! Needs `python3` with the `anthropic` package (`scripts/python-env.sh` installs it into
//! `.venv`). Outside CI the test is skipped with a note when the package is missing; in CI
//! (`CI` set) it fails.

use crate::common::*;

#[tokio::test]
async fn official_anthropic_sdk_works_unmodified() {
    let Some(py) = python_or_skip("anthropic.types") else {
        return;
    };
    let mock = Mock::start().await;
    let keys = "keys:\n  - name: sdk\n    key: sk-sdk-test\n";
    let models = "  - name: tools\n    backend: up\n    model: tools\n";
    let gw = gateway(&one_backend(&mock, "", models, keys)).await;
    let script = format!(
        "{}/tests/python/anthropic_sdk_check.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let base = format!("http://{}", gw.addr);
    let mut cmd = tokio::process::Command::new(&py);
    cmd.args(["-P", &script, &base, "sk-sdk-test", "remote", "tools"])
        .arg(mock_provider::REPLY)
        .current_dir("/");
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("the SDK check finishes in time")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
