//! The official `openai` Python SDK, unmodified, against the gateway and a mock upstream.
//!
//! Needs `python3` with the `openai` package (`scripts/python-env.sh` installs it; run with
//! `-P` from `/`, so the workspace's `openai/` crate folder cannot shadow it). Outside CI the
//! test is skipped with a note when the package is missing; in CI (`CI` set) it fails.

use crate::common::*;

async fn run_check(py: &str, base: &str, model: &str, expected: Option<&str>, embed: Option<&str>) {
    let script = format!(
        "{}/tests/python/openai_sdk_check.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = tokio::process::Command::new(py);
    cmd.args(["-P", &script, base, "sk-sdk-test", model])
        .current_dir("/");
    if let Some(e) = expected {
        cmd.arg(e);
    }
    if let Some(m) = embed {
        cmd.env("EMBED_MODEL", m);
    }
    let out = cmd.output().await.expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed for {model}:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

#[tokio::test]
async fn official_openai_sdk_works_unmodified() {
    let Some(py) = python_or_skip("openai.types") else {
        return;
    };
    let mock = Mock::start().await;
    let keys = "keys:\n  - name: sdk\n    key: sk-sdk-test\n";
    let gw = gateway(&one_backend(&mock, "", "", keys)).await;
    let base = format!("http://{}/v1", gw.addr);
    run_check(&py, &base, "remote", Some(mock_provider::REPLY), None).await;
}

/// `model: local` (a tiny generated GGUF) and `/v1/embeddings` (a tiny generated BERT)
/// through the SDK.
#[cfg(feature = "local")]
#[tokio::test]
async fn official_openai_sdk_with_the_local_model_and_embeddings() {
    let Some(py) = python_or_skip("openai.types") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let gguf = slmgate_local_model::fixtures::write_tiny_model(tmp.path(), "llama", 7);
    let bert = tmp.path().join("tiny-bert");
    slmgate_local_model::embed_fixtures::write_tiny_bert(&bert);
    let mock = Mock::start().await;
    let extra_backend = format!(
        "  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n",
        gguf.display()
    );
    let extra = format!(
        "embedder:\n  enabled: true\n  model: {}\n  name: minilm\nkeys:\n  - name: sdk\n    key: sk-sdk-test\n",
        bert.display()
    );
    let gw = gateway(&one_backend(
        &mock,
        &extra_backend,
        "  - name: local\n    backend: slm\n",
        &extra,
    ))
    .await;
    let base = format!("http://{}/v1", gw.addr);
    run_check(&py, &base, "local", None, Some("minilm")).await;
}
