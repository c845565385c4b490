//! The official `anthropic` Python SDK, unmodified, against the gateway and a mock OpenAI
//! upstream: `messages.create`, `messages.stream`, a tool definition and a
//! tool_use / tool_result turn.
//!
//! Needs `python3` with the `anthropic` package (`scripts/python-env.sh` installs it into
//! `.venv`). Outside CI the test is skipped with a note when the package is missing; in CI
//! (`CI` set) it fails.

use crate::common::*;

fn python_with_anthropic() -> Option<String> {
    let candidates = [
        std::env::var("SLMGATE_PYTHON").ok(),
        Some(format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"))),
        Some("python3".to_string()),
    ];
    candidates.into_iter().flatten().find(|py| {
        // Not from the workspace root (and with `-P`): its `anthropic/` crate folder would
        // import as an empty namespace package.
        std::process::Command::new(py)
            .args(["-P", "-c", "import anthropic.types"])
            .current_dir(std::env::temp_dir())
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test]
async fn official_anthropic_sdk_works_unmodified() {
    let Some(py) = python_with_anthropic() else {
        assert!(
            std::env::var("CI").is_err(),
            "python `anthropic` package missing in CI (scripts/python-env.sh installs it)"
        );
        eprintln!(
            "SKIPPED: python3 with the `anthropic` package not found (run scripts/python-env.sh)"
        );
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
        .current_dir(std::env::temp_dir());
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
