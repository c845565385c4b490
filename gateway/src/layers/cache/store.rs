//! The two stores: exact answers by key, and per-scope lists of (embedding, answer) for the
//! semantic cache. Both are moka caches, bounded in size and by per-entry TTLs (a policy may
//! give an entry its own TTL).
//!
//! A [`CacheState`] is a handle (clones share the stores). A configuration reload keeps the
//! running snapshot's state when the bounds did not change ([`CacheState::carry`]), so
//! cached answers survive reloads like budgets do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;
use slmgate_config::cache::Cache as CacheConfig;

use super::key::Key;

/// Answers kept per semantic scope (one conversation prefix of one tenant and model): a
/// lookup is a linear scan of at most this many vectors.
pub const MAX_PER_SCOPE: usize = 128;

/// One cached answer: a complete `chat.completion` JSON body.
#[derive(Debug)]
pub struct Answer {
    /// The completion, as the client of a JSON request gets it.
    pub json: Bytes,
    /// The backend that produced it (reported in `x-slmgate-backend`).
    pub backend: String,
    /// How long it is kept.
    pub ttl: Duration,
}

struct SemanticEntry {
    vector: Arc<[f32]>,
    answer: Arc<Answer>,
    expires: Instant,
}

/// The entries of one semantic scope, replaced as a whole on every insert (copy on write),
/// so readers never lock.
struct Scope {
    entries: Vec<SemanticEntry>,
}

struct AnswerExpiry;

impl Expiry<Key, Arc<Answer>> for AnswerExpiry {
    fn expire_after_create(&self, _: &Key, v: &Arc<Answer>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _: &Key,
        v: &Arc<Answer>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

struct ScopeExpiry;

impl ScopeExpiry {
    fn until_last(s: &Scope, now: Instant) -> Option<Duration> {
        let last = s.entries.iter().map(|e| e.expires).max()?;
        Some(last.saturating_duration_since(now))
    }
}

impl Expiry<Key, Arc<Scope>> for ScopeExpiry {
    fn expire_after_create(&self, _: &Key, v: &Arc<Scope>, now: Instant) -> Option<Duration> {
        Self::until_last(v, now)
    }
    fn expire_after_update(
        &self,
        _: &Key,
        v: &Arc<Scope>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Self::until_last(v, now)
    }
}

/// The cache stores. Cloning gives another handle to the same stores (one reference count:
/// a moka `Cache` clone bumps several shared counters, twice per request per store).
#[derive(Clone)]
pub struct CacheState(Arc<Stores>);

/// The stores' hasher. Their keys are sha256 digests, so a fast non-cryptographic hash is
/// enough (moka's default, SipHash-1-3, is made for keys an attacker chooses).
type KeyHasher = foldhash::fast::RandomState;

struct Stores {
    exact: Cache<Key, Arc<Answer>, KeyHasher>,
    /// Keys offered to a full exact store once (see [`CacheState::put_exact`]).
    doorkeeper: Doorkeeper,
    semantic: Cache<Key, Arc<Scope>, KeyHasher>,
    max_bytes: u64,
    max_entries: u64,
}

impl std::fmt::Debug for CacheState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheState")
            .field("exact_entries", &self.0.exact.entry_count())
            .field("semantic_scopes", &self.0.semantic.entry_count())
            .finish()
    }
}

impl Default for CacheState {
    fn default() -> Self {
        CacheState::new(&CacheConfig::default())
    }
}

/// Entries the exact store's hash table is sized for up front: `max_bytes` at a guessed
/// 512 bytes per answer, within [1 Ki, 256 Ki]. Without it the table starts small and is
/// rehashed again and again while the cache fills (measured: a lookup's probe was the
/// costliest moka item in profiles of a filling cache); 256 Ki slots are ~2 MB.
fn expected_entries(max_bytes: u64) -> usize {
    usize::try_from(max_bytes / 512)
        .unwrap_or(usize::MAX)
        .clamp(1 << 10, 1 << 18)
}

/// Resident bytes an exact-cache entry costs beyond its answer's body and backend name: the
/// key, the `Answer`, moka's entry, deque and timer nodes and its hash-table slot, allocator
/// rounding. Measured 435–520 bytes for 100 B–4 KB answers (`cargo run --release --example
/// cache_memory`); with 128, the `max_bytes` bound let the cache take ~2.5× as much memory.
const ENTRY_OVERHEAD: usize = 512;

/// A Bloom filter of the keys offered to a full exact store, cleared once it has taken a
/// set number of keys (so it forgets old ones and its false-positive rate stays ~5 %):
/// 2^20 bits (128 KiB), two bits per key.
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    added: AtomicU64,
}

impl Doorkeeper {
    const BITS: usize = 1 << 20;
    /// Keys taken before the filter is cleared: an eighth of its bits (~23 % of them set).
    const RESET_AFTER: u64 = (Self::BITS / 8) as u64;

    /// Marks `key`; whether it was marked already (maybe falsely, ~5 %).
    fn seen_before(&self, key: &Key) -> bool {
        // The key is a sha256 digest: its bytes are already uniformly spread.
        let at = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&key[i..i + 4]);
            u32::from_le_bytes(w) as usize % Self::BITS
        };
        let mut seen = true;
        for bit in [at(0), at(4)] {
            let mask = 1u64 << (bit % 64);
            let word = &self.bits[bit / 64];
            // A relaxed load first: a key seen before costs no write.
            if word.load(Ordering::Relaxed) & mask == 0 {
                seen &= word.fetch_or(mask, Ordering::Relaxed) & mask != 0;
            }
        }
        if !seen && self.added.fetch_add(1, Ordering::Relaxed) + 1 >= Self::RESET_AFTER {
            self.added.store(0, Ordering::Relaxed);
            for w in &self.bits {
                w.store(0, Ordering::Relaxed);
            }
        }
        seen
    }
}

impl Default for Doorkeeper {
    fn default() -> Self {
        Doorkeeper {
            bits: (0..Self::BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            added: AtomicU64::new(0),
        }
    }
}

/// Bytes an answer is counted for: the body plus bookkeeping ([`ENTRY_OVERHEAD`]), so
/// `max_bytes` bounds the memory the store holds.
pub fn weight(a: &Answer) -> u32 {
    weight_of(a.json.len(), a.backend.len())
}

/// [`weight`] of an answer with a `json_len`-byte body from a backend named in
/// `backend_len` bytes, before it is built.
pub fn weight_of(json_len: usize, backend_len: usize) -> u32 {
    u32::try_from(json_len + backend_len + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

impl CacheState {
    /// Empty stores bounded by `cfg` (`exact.max_bytes`, `semantic.max_entries`).
    pub fn new(cfg: &CacheConfig) -> Self {
        let max_bytes = cfg.exact.max_bytes;
        let max_entries = cfg.semantic.max_entries;
        CacheState(Arc::new(Stores {
            exact: Cache::builder()
                .max_capacity(max_bytes)
                // Sized up front only when the configuration turns the exact cache on (a
                // policy's `cache: true` alone grows it as it goes).
                .initial_capacity(if cfg.exact.enabled {
                    expected_entries(max_bytes)
                } else {
                    0
                })
                .weigher(|_, a: &Arc<Answer>| weight(a))
                .expire_after(AnswerExpiry)
                .build_with_hasher(KeyHasher::default()),
            doorkeeper: Doorkeeper::default(),
            semantic: Cache::builder()
                .max_capacity(max_entries)
                .weigher(|_, s: &Arc<Scope>| u32::try_from(s.entries.len()).unwrap_or(u32::MAX))
                .expire_after(ScopeExpiry)
                .build_with_hasher(KeyHasher::default()),
            max_bytes,
            max_entries,
        }))
    }

    /// The state a new configuration should use: `previous` (with its entries) when its
    /// bounds are the ones `cfg` asks for, else fresh stores (moka caches cannot be resized).
    pub fn carry(previous: Option<&CacheState>, cfg: &CacheConfig) -> Self {
        match previous {
            Some(p)
                if p.0.max_bytes == cfg.exact.max_bytes
                    && p.0.max_entries == cfg.semantic.max_entries =>
            {
                p.clone()
            }
            Some(_) => {
                tracing::info!("cache bounds changed: starting with an empty response cache");
                CacheState::new(cfg)
            }
            None => CacheState::new(cfg),
        }
    }

    /// The exact answer for `key`, if cached and fresh.
    pub fn get_exact(&self, key: &Key) -> Option<Arc<Answer>> {
        self.0.exact.get(key)
    }

    /// Caches an exact answer. While the store is full, an answer is only offered to it the
    /// second time its key comes within the doorkeeper's memory: moka's TinyLFU admission
    /// turns away a key first seen against a full store anyway (its frequency is not above
    /// the victim's), after the insert has paid for an entry, a hash-table insert and removal
    /// and the maintenance (in the load bench, where every prompt is new, moka's share of the
    /// gateway's CPU fell from ~5.5 % to ~0.7 % once the store was full; throughput moved
    /// within the noise). This is the doorkeeper of the TinyLFU paper (Einziger et al.,
    /// 2017) in front of moka's own frequency sketch: a key asked for again is offered to
    /// moka as before.
    pub fn put_exact(&self, key: Key, answer: Arc<Answer>) {
        let w = weight(&answer);
        self.put_exact_with(key, w, || answer);
    }

    /// [`put_exact`](Self::put_exact) for an answer of `weight` (see [`weight_of`]) that
    /// `make` builds only when the store takes it: an answer the doorkeeper turns away costs
    /// no copy.
    pub fn put_exact_with(&self, key: Key, weight: u32, make: impl FnOnce() -> Arc<Answer>) {
        let s = &self.0;
        let full = s.exact.weighted_size() + u64::from(weight) > s.max_bytes;
        if full && !s.doorkeeper.seen_before(&key) {
            return;
        }
        s.exact.insert(key, make());
    }

    /// The answer in `scope` whose vector is most similar to `v`, if that similarity is at
    /// least `threshold`, with the similarity.
    pub fn get_semantic(
        &self,
        scope: &Key,
        v: &[f32],
        threshold: f32,
    ) -> Option<(Arc<Answer>, f32)> {
        let s = self.0.semantic.get(scope)?;
        let now = Instant::now();
        s.entries
            .iter()
            .filter(|e| e.expires > now)
            .map(|e| (e, cosine(&e.vector, v)))
            .filter(|(_, sim)| *sim >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, sim)| (e.answer.clone(), sim))
    }

    /// Adds an answer to `scope` (dropping expired entries, and the oldest past
    /// [`MAX_PER_SCOPE`]). Two concurrent inserts into one scope may keep only one: a cache
    /// may forget.
    pub fn put_semantic(&self, scope: Key, vector: Arc<[f32]>, answer: Arc<Answer>) {
        let now = Instant::now();
        let mut entries: Vec<SemanticEntry> = match self.0.semantic.get(&scope) {
            Some(s) => s
                .entries
                .iter()
                .filter(|e| e.expires > now)
                .map(|e| SemanticEntry {
                    vector: e.vector.clone(),
                    answer: e.answer.clone(),
                    expires: e.expires,
                })
                .collect(),
            None => Vec::new(),
        };
        let expires = now + answer.ttl;
        entries.push(SemanticEntry {
            vector,
            answer,
            expires,
        });
        if entries.len() > MAX_PER_SCOPE {
            let extra = entries.len() - MAX_PER_SCOPE;
            entries.drain(..extra);
        }
        self.0.semantic.insert(scope, Arc::new(Scope { entries }));
    }

    /// Exact answers cached (approximate: moka counts lazily).
    pub fn exact_entries(&self) -> u64 {
        self.0.exact.entry_count()
    }
}

/// Cosine similarity; 0 for vectors of different length or zero norm.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sized_from_max_bytes_within_bounds() {
        assert_eq!(expected_entries(64 << 20), 131_072);
        assert_eq!(expected_entries(1000), 1 << 10, "at least 1 Ki");
        assert_eq!(expected_entries(1 << 40), 1 << 18, "at most 256 Ki");
    }

    #[test]
    fn the_doorkeeper_lets_a_key_through_the_second_time_and_forgets() {
        use sha2::Digest as _;
        let d = Doorkeeper::default();
        let key = |n: u64| {
            let k: Key = sha2::Sha256::digest(n.to_le_bytes()).into();
            k
        };
        assert!(!d.seen_before(&key(1)));
        assert!(d.seen_before(&key(1)));
        assert!(!d.seen_before(&key(2)));
        // False positives stay rare while the filter fills towards its reset.
        let false_positives = (10..10_010).filter(|&n| d.seen_before(&key(n))).count();
        assert!(false_positives < 100, "{false_positives} of 10000");
        // After RESET_AFTER new keys it starts over: key 1 is new again.
        for n in 100_000..100_000 + Doorkeeper::RESET_AFTER {
            d.seen_before(&key(n));
        }
        assert!(!d.seen_before(&key(1)));
    }

    #[test]
    fn a_full_exact_store_takes_a_new_key_only_when_it_comes_again() {
        let hour = Duration::from_secs(3600);
        let mut cfg = CacheConfig::default();
        // Room for four entries of this size.
        let size = weight(&answer("a", hour)) as u64;
        cfg.exact.max_bytes = 4 * size;
        let s = CacheState::new(&cfg);
        for i in 0..4u8 {
            s.put_exact([i; 32], answer("a", hour));
        }
        s.0.exact.run_pending_tasks();
        assert_eq!(s.0.exact.entry_count(), 4);
        // Full: a first-seen key is not even offered to moka, nor its answer built.
        let w = weight(&answer("b", hour));
        s.put_exact_with([8; 32], w, || {
            panic!("built an answer the store turns away")
        });
        s.put_exact([9; 32], answer("b", hour));
        s.0.exact.run_pending_tasks();
        assert!(s.get_exact(&[8; 32]).is_none());
        assert!(s.get_exact(&[9; 32]).is_none());
        assert_eq!(s.0.exact.entry_count(), 4);
        // The second time it is offered; asked for often enough, TinyLFU admits it.
        for _ in 0..8 {
            let _ = s.get_exact(&[9; 32]);
            s.put_exact([9; 32], answer("b", hour));
            s.0.exact.run_pending_tasks();
        }
        assert_eq!(
            s.get_exact(&[9; 32]).map(|a| a.json.clone()),
            Some(Bytes::from("b"))
        );
        assert!(s.0.exact.entry_count() <= 4);
    }

    fn answer(text: &str, ttl: Duration) -> Arc<Answer> {
        Arc::new(Answer {
            json: Bytes::from(text.to_string()),
            backend: "up".into(),
            ttl,
        })
    }

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn semantic_lookup_takes_the_best_match_above_the_threshold_in_its_scope() {
        let s = CacheState::default();
        let hour = Duration::from_secs(3600);
        s.put_semantic([1; 32], Arc::from(vec![1.0, 0.0, 0.0]), answer("x", hour));
        s.put_semantic([1; 32], Arc::from(vec![0.8, 0.6, 0.0]), answer("y", hour));
        let (a, sim) = s.get_semantic(&[1; 32], &[0.7, 0.7, 0.0], 0.9).unwrap();
        assert_eq!(a.json, "y");
        assert!(sim > 0.98);
        let (a, _) = s.get_semantic(&[1; 32], &[1.0, 0.05, 0.0], 0.9).unwrap();
        assert_eq!(a.json, "x");
        assert!(s.get_semantic(&[1; 32], &[0.0, 0.0, 1.0], 0.5).is_none());
        // Another scope never sees them.
        assert!(s.get_semantic(&[2; 32], &[1.0, 0.0, 0.0], 0.1).is_none());
    }

    #[test]
    fn scopes_are_bounded_and_expired_entries_are_not_served() {
        let s = CacheState::default();
        let hour = Duration::from_secs(3600);
        for i in 0..(MAX_PER_SCOPE + 10) {
            let mut v = vec![0.0f32; MAX_PER_SCOPE + 10];
            v[i] = 1.0;
            s.put_semantic([3; 32], Arc::from(v), answer(&i.to_string(), hour));
        }
        let scope = s.0.semantic.get(&[3; 32]).unwrap();
        assert_eq!(scope.entries.len(), MAX_PER_SCOPE);
        let mut first = vec![0.0f32; MAX_PER_SCOPE + 10];
        first[0] = 1.0;
        assert!(
            s.get_semantic(&[3; 32], &first, 0.9).is_none(),
            "oldest dropped"
        );

        s.put_semantic(
            [4; 32],
            Arc::from(vec![1.0]),
            answer("old", Duration::from_millis(1)),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get_semantic(&[4; 32], &[1.0], 0.5).is_none());
    }

    #[test]
    fn exact_entries_expire_by_their_own_ttl_and_state_carries_over() {
        let s = CacheState::default();
        s.put_exact([5; 32], answer("a", Duration::from_millis(1)));
        s.put_exact([6; 32], answer("b", Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get_exact(&[5; 32]).is_none());
        assert_eq!(s.get_exact(&[6; 32]).unwrap().json, "b");

        let same = CacheState::carry(Some(&s), &CacheConfig::default());
        assert_eq!(same.get_exact(&[6; 32]).unwrap().json, "b");
        let mut smaller = CacheConfig::default();
        smaller.exact.max_bytes = 1000;
        let fresh = CacheState::carry(Some(&s), &smaller);
        assert!(fresh.get_exact(&[6; 32]).is_none());
    }
}
