//! Resident memory per exact-cache entry, for the store's weigher (`ENTRY_OVERHEAD` in
//! `router/src/layers/cache/store.rs`): fills an unbounded store with fresh answers of one
//! size and reports the process's resident growth per entry, minus the answer itself, and
//! the weight the store counts for such an entry.
//!
//! ```text
//! for s in 100 300 1000 4000; do cargo run --release --example cache_memory -- $s; done
//! ```
//!
//! One size per process: a store dropped in the same process leaves its pages to the next.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use slmgate_gateway::layers::cache::store::{weight, Answer, CacheState};

/// Resident bytes of this process (Linux).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let size: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: cache_memory ANSWER_BYTES");
            std::process::exit(2);
        }
    };
    let mut cfg = slmgate_config::cache::Cache::default();
    cfg.exact.enabled = true;
    cfg.exact.max_bytes = 1 << 40;
    let state = CacheState::new(&cfg);
    let body = vec![b'x'; size];
    let entries = 200_000u64;
    let answer = || {
        Arc::new(Answer {
            json: bytes::Bytes::copy_from_slice(&body),
            backend: "mock".into(),
            ttl: Duration::from_secs(3600),
        })
    };
    let counted = weight(&answer());
    let Some(before) = resident() else {
        eprintln!("cannot read /proc/self/statm");
        std::process::exit(1);
    };
    for i in 0..entries {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        let _ = state.get_exact(&key);
        state.put_exact(key, answer());
    }
    let after = resident().unwrap_or(before);
    let per = after.saturating_sub(before) as f64 / entries as f64;
    println!(
        "answers of {size} B: {per:.0} B resident per entry ({:.0} beyond the answer); counted as {counted} B",
        per - size as f64
    );
}
