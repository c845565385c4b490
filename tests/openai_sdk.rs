//! The official `openai` Python SDK, unmodified, against the gateway and a mock upstream.
//!
//! Needs `python3` with the `openai` package (`scripts/test.sh` installs it). Outside CI the
//! test is skipped with a note when the package is missing; in CI (`CI` set) it fails.

mod common;

use common::*;

fn python_with_openai() -> Option<String> {
    let candidates = [
        std::env::var("SLMGATE_PYTHON").ok(),
        Some(format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"))),
        Some("python3".to_string()),
    ];
    candidates.into_iter().flatten().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test]
async fn official_openai_sdk_works_unmodified() {
    let Some(py) = python_with_openai() else {
        assert!(
            std::env::var("CI").is_err(),
            "python `openai` package missing in CI (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: python3 with the `openai` package not found (run scripts/test.sh)");
        return;
    };
    let mock = Mock::start().await;
    let keys = "keys:\n  - name: sdk\n    key: sk-sdk-test\n";
    let gw = gateway(&one_backend(&mock, "", "", keys)).await;
    let script = format!(
        "{}/tests/python/openai_sdk_check.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let base = format!("http://{}/v1", gw.addr);
    let out = tokio::process::Command::new(&py)
        .args([
            &script,
            &base,
            "sk-sdk-test",
            "remote",
            mock_provider::REPLY,
        ])
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
