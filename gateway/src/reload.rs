//! Hot reload: a new configuration replaces the running one without a restart.
//!
//! Three triggers call [`Reloader::reload`]: a change of the config file (watched with
//! `notify`, debounced), `SIGHUP`, and `POST /admin/reload` (see [`crate::admin`]). A reload
//! reads and fully validates the file, builds a new [`Gateway`] off the async threads
//! (reusing loaded models whose config section is unchanged, see [`crate::build::Carry`]),
//! and only then swaps it in atomically. A config that fails anywhere on the way is rejected:
//! the running one keeps serving, and the error (with line:column) is logged and kept for
//! `GET /admin/status`.
//!
//! - **In-flight requests** hold the snapshot they started with ([`crate::layers::snapshot`])
//!   and finish on it; the old snapshot is freed when its last request ends.
//! - **Budget and rate-limit state** is one shared handle passed from snapshot to snapshot,
//!   so spend and limits survive any number of reloads.
//! - **One reload at a time:** triggers that arrive together run one after the other, each
//!   reading the file anew.
//! - **Startup-only settings:** `listen` and `limits.*` are held by the outer HTTP stack,
//!   built once. A reload that changes them still applies everything else and reports the
//!   difference as `restart_required` (log and status).
//! - **The watcher** watches the file's directory, not the file, so editors that save by
//!   renaming a new file over the old one (and Kubernetes' `..data` symlink swaps) are seen;
//!   it reloads only when the file's bytes changed since the last read. After a change it
//!   waits for the file to be *stable* (two reads [`WATCH_SETTLE`] apart agree, for at
//!   most [`WATCH_SETTLE_MAX`]) and loads exactly the bytes it compared, so a file being
//!   written in several quick steps is applied once, whole. Writing the new file elsewhere
//!   and renaming it over the old one is still the safe way to edit: a writer that pauses
//!   longer than the settle time mid-file is seen half-written.
//! - **Guards against a half-written file:** such a file is often still valid YAML (cut
//!   before `keys:` or `admin:`), and applying it would open the gateway. So a file with no
//!   settings at all is rejected, and so is a reload that would remove *every* client key,
//!   the admin key, or every model the running config has, unless the new file says so:
//!   `auth: none` (no client keys, and no admin key), `admin.loopback_only: true` (no admin
//!   key), `models: []` (no models). A rejected reload changes nothing, as always.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use slmgate_config as cfgs;
use tokio_util::sync::CancellationToken;

use crate::build::{build_gateway_from, Carry};
use crate::layers::snapshot::SharedGateway;
use crate::runtime::{unix_now, Gateway};

/// Quiet time the watcher waits for after a change before reloading (editors write in
/// several steps).
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

/// After a change, the watcher reads the file again this much later and applies it only if
/// both reads agree (see the module docs).
pub const WATCH_SETTLE: Duration = Duration::from_millis(300);

/// The longest the watcher waits for a changing file to settle; a file still changing
/// after that is skipped (its next change wakes the watcher again).
pub const WATCH_SETTLE_MAX: Duration = Duration::from_secs(10);

/// Where the running configuration came from, and so what a reload reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file (`slmgate serve --config`): reloads read it again.
    File(PathBuf),
    /// The embedded default config: reloads re-read it, which picks up model files fetched
    /// since (`enabled: auto` is evaluated again). Nothing to watch.
    EmbeddedDefault,
    /// A config handed over in memory (tests, embedding): there is nothing to reload from.
    #[default]
    Memory,
}

impl ConfigSource {
    /// `file`, `embedded-default` or `memory`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigSource::File(_) => "file",
            ConfigSource::EmbeddedDefault => "embedded-default",
            ConfigSource::Memory => "memory",
        }
    }

    /// The file, for [`ConfigSource::File`].
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The watcher saw the file change.
    File,
    /// `SIGHUP`.
    Sighup,
    /// `POST /admin/reload`.
    Admin,
    /// A direct call of [`Reloader::reload`].
    Api,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::File => "file",
            Trigger::Sighup => "sighup",
            Trigger::Admin => "admin",
            Trigger::Api => "api",
        })
    }
}

/// One problem of a rejected config, for the status and the reload answer.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigIssue {
    /// The whole problem as one line: `file:line:column: path: message`.
    pub error: String,
    /// YAML path (`models[0].backend`), when the config parser found the problem.
    pub path: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The problem without its position.
    pub message: String,
}

/// Why a reload was rejected. The running configuration is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or the config is invalid (every problem, with line:column).
    #[error("invalid config:\n{0}")]
    Invalid(cfgs::ConfigErrors),
    /// The config is valid but would remove every client key, the admin key or every model
    /// without saying so (see the module docs): most likely a file caught half-written.
    #[error("config refused:\n{0}")]
    Refused(cfgs::ConfigErrors),
    /// The config is valid but cannot be put into service (e.g. a model file fails to load).
    #[error("config cannot be applied: {0}")]
    Unusable(String),
    /// The gateway was started from a config in memory: there is no file to read.
    #[error("this gateway was started from a config in memory (no --config file): there is nothing to reload")]
    NoSource,
    /// The reload task itself failed (a bug); details are logged.
    #[error("reload failed: {0}")]
    Internal(String),
}

impl ReloadError {
    /// The individual problems, each with its position when known.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ReloadError::Invalid(errs) | ReloadError::Refused(errs) => errs
                .0
                .iter()
                .map(|e| ConfigIssue {
                    error: e.to_string(),
                    path: Some(e.path.clone()),
                    line: e.line,
                    column: e.column,
                    message: e.message.clone(),
                })
                .collect(),
            other => vec![ConfigIssue {
                error: other.to_string(),
                path: None,
                line: None,
                column: None,
                message: other.to_string(),
            }],
        }
    }
}

/// The result of one reload attempt, as shown by `GET /admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// Unix seconds when the attempt finished.
    pub at: u64,
    /// The new config is serving.
    pub ok: bool,
    /// What started it.
    pub trigger: Trigger,
    /// The generation serving afterwards (unchanged when rejected).
    pub generation: u64,
    /// How long loading, validating and building took.
    pub duration_ms: u64,
    /// The rejection, all problems in one text (`None` when it succeeded).
    pub error: Option<String>,
    /// The rejection's problems one by one, with line:column.
    pub errors: Vec<ConfigIssue>,
    /// Settings that changed but only take effect after a restart.
    pub restart_required: Vec<String>,
}

/// Settings the outer HTTP stack took at startup (see the module docs).
#[derive(Debug, Clone)]
struct Boot {
    listen: String,
    limits: cfgs::Limits,
}

impl Boot {
    fn differences(&self, cfg: &cfgs::Config) -> Vec<String> {
        let mut out = Vec::new();
        let (old, new) = (&self.limits, &cfg.limits);
        if self.listen != cfg.listen {
            out.push(format!(
                "listen: `{}` -> `{}` (still listening on the old address)",
                self.listen, cfg.listen
            ));
        }
        if old.max_body_bytes != new.max_body_bytes {
            out.push(format!(
                "limits.max_body_bytes: {} -> {} (still {})",
                old.max_body_bytes, new.max_body_bytes, old.max_body_bytes
            ));
        }
        for (name, o, n) in [
            ("max_connections", old.max_connections, new.max_connections),
            (
                "http2_max_concurrent_streams",
                old.http2_max_concurrent_streams as usize,
                new.http2_max_concurrent_streams as usize,
            ),
        ] {
            if o != n {
                out.push(format!("limits.{name}: {o} -> {n} (still {o})"));
            }
        }
        if old.max_concurrent_requests != new.max_concurrent_requests {
            out.push(format!(
                "limits.max_concurrent_requests: {} -> {} (still {})",
                old.max_concurrent_requests,
                new.max_concurrent_requests,
                old.max_concurrent_requests
            ));
        }
        for (name, o, n) in [
            ("request_timeout", old.request_timeout, new.request_timeout),
            (
                "shutdown_timeout",
                old.shutdown_timeout,
                new.shutdown_timeout,
            ),
            (
                "header_read_timeout",
                old.header_read_timeout,
                new.header_read_timeout,
            ),
            (
                "body_read_timeout",
                old.body_read_timeout,
                new.body_read_timeout,
            ),
            (
                "http2_keepalive_interval",
                old.http2_keepalive_interval,
                new.http2_keepalive_interval,
            ),
        ] {
            if o != n {
                out.push(format!(
                    "limits.{name}: {} -> {} (still {})",
                    humantime::format_duration(o),
                    humantime::format_duration(n),
                    humantime::format_duration(o)
                ));
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    last: Option<ReloadOutcome>,
    /// sha256 of the file's bytes at the last read, so the watcher ignores writes that
    /// change nothing (and does not retry identical bad contents).
    last_digest: Option<[u8; 32]>,
    succeeded: u64,
    failed: u64,
    watching: Option<Result<PathBuf, String>>,
}

/// A read-only view of the reload state (for `GET /admin/status`).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// Reloads applied since startup (the startup config is generation 0).
    pub generation: u64,
    /// The last attempt, if any.
    pub last_reload: Option<ReloadOutcome>,
    /// Attempts applied.
    pub succeeded: u64,
    /// Attempts rejected.
    pub failed: u64,
    /// The directory the watcher watches, when it runs.
    pub watching: Option<PathBuf>,
    /// Why the watcher is not running, when it failed to start.
    pub watch_error: Option<String>,
}

/// Reloads the configuration on demand and keeps the outcome (see the module docs).
pub struct Reloader {
    source: ConfigSource,
    shared: SharedGateway,
    started: u64,
    boot: Boot,
    /// Held for a whole reload, so two reloads never interleave.
    serial: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader swapping `shared`, which was built from `cfg` read from `source`.
    pub fn new(shared: SharedGateway, cfg: &cfgs::Config, source: ConfigSource) -> Self {
        let last_digest = source
            .path()
            .and_then(|p| std::fs::read(p).ok())
            .map(|bytes| Sha256::digest(&bytes).into());
        Reloader {
            source,
            shared,
            started: unix_now(),
            boot: Boot {
                listen: cfg.listen.clone(),
                limits: cfg.limits,
            },
            serial: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                last_digest,
                ..State::default()
            }),
        }
    }

    /// Where the config comes from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// Unix seconds when the gateway started.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The live configuration this reloader swaps.
    pub fn shared(&self) -> &SharedGateway {
        &self.shared
    }

    /// The current reload state.
    pub fn status(&self) -> ReloadStatus {
        let st = self.lock_state();
        ReloadStatus {
            generation: st.generation,
            last_reload: st.last.clone(),
            succeeded: st.succeeded,
            failed: st.failed,
            watching: st.watching.as_ref().and_then(|w| w.as_ref().ok().cloned()),
            watch_error: st.watching.as_ref().and_then(|w| w.as_ref().err().cloned()),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in one step; a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still good to read.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads, validates and builds the configuration again and swaps it in. On error the
    /// running configuration is untouched; either way the outcome is logged and kept for
    /// [`Reloader::status`].
    pub async fn reload(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        self.reload_with(trigger, None).await
    }

    /// [`Reloader::reload`] from `preread`, the file's bytes as the watcher last read them,
    /// when given (so what is applied is exactly what was seen to be stable).
    async fn reload_with(
        &self,
        trigger: Trigger,
        preread: Option<Vec<u8>>,
    ) -> Result<ReloadOutcome, ReloadError> {
        if self.source == ConfigSource::Memory {
            return Err(ReloadError::NoSource);
        }
        let _serial = self.serial.lock().await;
        let begun = Instant::now();
        let result = self.load_and_build(preread).await;
        let duration_ms = begun.elapsed().as_millis() as u64;
        let mut st = self.lock_state();
        match result {
            Ok((gateway, restart_required)) => {
                self.shared.store(Arc::new(gateway));
                st.generation += 1;
                st.succeeded += 1;
                let outcome = ReloadOutcome {
                    at: unix_now(),
                    ok: true,
                    trigger,
                    generation: st.generation,
                    duration_ms,
                    error: None,
                    errors: Vec::new(),
                    restart_required,
                };
                tracing::info!(
                    generation = st.generation,
                    %trigger,
                    duration_ms,
                    "config reloaded"
                );
                for what in &outcome.restart_required {
                    tracing::warn!(setting = %what, "config change needs a restart to apply");
                }
                log_snapshot(&self.shared.load());
                st.last = Some(outcome.clone());
                Ok(outcome)
            }
            Err(err) => {
                st.failed += 1;
                tracing::error!(
                    %trigger,
                    error = %err,
                    "config reload rejected; the previous configuration keeps serving"
                );
                st.last = Some(ReloadOutcome {
                    at: unix_now(),
                    ok: false,
                    trigger,
                    generation: st.generation,
                    duration_ms,
                    error: Some(err.to_string()),
                    errors: err.issues(),
                    restart_required: Vec::new(),
                });
                Err(err)
            }
        }
    }

    /// Loads and validates the source, then builds the gateway it describes, both on the
    /// blocking pool (file IO; model loading).
    async fn load_and_build(
        &self,
        preread: Option<Vec<u8>>,
    ) -> Result<(Gateway, Vec<String>), ReloadError> {
        let source = self.source.clone();
        let (cfg, digest) = tokio::task::spawn_blocking(move || read_source(&source, preread))
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))?;
        if let Some(d) = digest {
            self.lock_state().last_digest = Some(d);
        }
        let cfg = cfg.map_err(ReloadError::Invalid)?;
        let origin = match &self.source {
            ConfigSource::File(p) => p.display().to_string(),
            _ => "<embedded default>".to_string(),
        };
        refuse_silent_removals(&self.shared.load(), &cfg, &origin).map_err(ReloadError::Refused)?;
        let restart_required = self.boot.differences(&cfg);
        let carry = Carry::from_gateway(&self.shared.load());
        let gateway = tokio::task::spawn_blocking(move || build_gateway_from(&cfg, carry))
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))?
            .map_err(|e| ReloadError::Unusable(format!("{e:#}")))?;
        Ok((gateway, restart_required))
    }

    /// The file's bytes once they are stable (see the module docs), if they differ from the
    /// last read. `None` when unchanged, unreadable (a file being replaced is briefly
    /// missing, and its new version brings another event) or still changing after
    /// [`WATCH_SETTLE_MAX`] (its next change brings another event too).
    async fn settled_change(&self) -> Option<Vec<u8>> {
        let path = self.source.path()?;
        let read = || async {
            tokio::fs::read(path)
                .await
                .map_err(|e| {
                    tracing::debug!(path = %path.display(), error = %e, "config file not readable now");
                })
                .ok()
        };
        let deadline = Instant::now() + WATCH_SETTLE_MAX;
        let mut seen = read().await?;
        loop {
            tokio::time::sleep(WATCH_SETTLE).await;
            let again = read().await?;
            if again == seen {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    path = %path.display(),
                    waited = ?WATCH_SETTLE_MAX,
                    "config file still changing; not reloading yet (write it elsewhere and rename it over the old one)"
                );
                return None;
            }
            seen = again;
        }
        let digest: [u8; 32] = Sha256::digest(&seen).into();
        (self.lock_state().last_digest != Some(digest)).then_some(seen)
    }

    /// Watches the config file (its directory, see the module docs) and reloads on change
    /// until `stop` is cancelled. The returned watcher must be kept alive. Does nothing for
    /// sources other than a file.
    pub fn watch(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> Result<Option<FileWatcher>, notify_debouncer_mini::notify::Error> {
        use notify_debouncer_mini::notify::RecursiveMode;
        let Some(path) = self.source.path() else {
            return Ok(None);
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // One pending wake-up is enough: the reload reads the file as it is by then.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // Only events on the config file itself count: the directory may hold busy files
        // (the SQLite usage database and its WAL next to the config is common), whose
        // writes would otherwise re-read and hash the config several times a second.
        let name = path.file_name().map(std::ffi::OsStr::to_os_string);
        let started = notify_debouncer_mini::new_debouncer(
            WATCH_DEBOUNCE,
            move |res: notify_debouncer_mini::DebounceEventResult| match res {
                Ok(events)
                    if events
                        .iter()
                        .any(|e| name.is_none() || e.path.file_name() == name.as_deref()) =>
                {
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "config watcher error"),
            },
        )
        .and_then(|mut debouncer| {
            debouncer
                .watcher()
                .watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(debouncer)
        });
        let debouncer = match started {
            Ok(d) => d,
            Err(e) => {
                self.lock_state().watching = Some(Err(format!("{}: {e}", dir.display())));
                return Err(e);
            }
        };
        self.lock_state().watching = Some(Ok(dir.clone()));
        tracing::info!(dir = %dir.display(), file = %path.display(), "watching the config file");
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    got = rx.recv() => {
                        if got.is_none() {
                            break;
                        }
                        if let Some(bytes) = me.settled_change().await {
                            // The outcome is logged and kept in the status by `reload`.
                            let _ = me.reload_with(Trigger::File, Some(bytes)).await;
                        }
                    }
                }
            }
        });
        Ok(Some(FileWatcher {
            _debouncer: debouncer,
        }))
    }

    /// Reloads on every `SIGHUP` until `stop` is cancelled. The handler is installed before
    /// this returns, so a `SIGHUP` sent afterwards never takes the default action (exit).
    #[cfg(unix)]
    pub fn reload_on_sighup(self: &Arc<Self>, stop: CancellationToken) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    got = hup.recv() => {
                        if got.is_none() {
                            break;
                        }
                        tracing::info!("SIGHUP: reloading the config");
                        let _ = me.reload(Trigger::Sighup).await;
                    }
                }
            }
        });
        Ok(())
    }
}

/// Keeps the config watcher running; dropping it stops the watching.
pub struct FileWatcher {
    _debouncer: notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileWatcher")
    }
}

/// Reads and validates `source` (a file's bytes are `preread` when given); also returns the
/// digest of the bytes read from a file.
fn read_source(
    source: &ConfigSource,
    preread: Option<Vec<u8>>,
) -> (Result<cfgs::Config, cfgs::ConfigErrors>, Option<[u8; 32]>) {
    match source {
        ConfigSource::File(path) => {
            let origin = path.display().to_string();
            match preread.map_or_else(|| std::fs::read(path), Ok) {
                Ok(bytes) => {
                    let digest = Sha256::digest(&bytes).into();
                    let cfg = match String::from_utf8(bytes) {
                        Ok(src) => cfgs::load_file_text(&src, &origin),
                        Err(_) => Err(whole_file_error(&origin, "the file is not UTF-8 text")),
                    };
                    (cfg, Some(digest))
                }
                Err(e) => (
                    Err(whole_file_error(
                        &origin,
                        &format!("cannot read the config file: {e}"),
                    )),
                    None,
                ),
            }
        }
        ConfigSource::EmbeddedDefault => (cfgs::default_config(), None),
        ConfigSource::Memory => (
            Err(whole_file_error("<memory>", "no config file to read")),
            None,
        ),
    }
}

/// Refuses a config that would silently drop every client key, the admin key or every model
/// of the running one (see the module docs): one error per removal, naming the explicit
/// setting that allows it.
fn refuse_silent_removals(
    running: &Gateway,
    cfg: &cfgs::Config,
    origin: &str,
) -> Result<(), cfgs::ConfigErrors> {
    let open_on_purpose = cfg.auth == Some(cfgs::AuthMode::None);
    let mut errors = Vec::new();
    let mut refuse = |path: &str, message: String| {
        errors.push(cfgs::ConfigError {
            origin: origin.to_string(),
            line: None,
            column: None,
            path: path.to_string(),
            message,
        });
    };
    if !running.keys.is_open() && cfg.keys.is_empty() && !open_on_purpose {
        refuse(
            "keys",
            "the running config requires client keys and this one lists none (a file caught \
             half-written?); to serve without client keys on purpose, say `auth: none`"
                .into(),
        );
    }
    if running.admin.sha256.is_some()
        && !cfg.admin.has_key()
        && !cfg.admin.loopback_only
        && !open_on_purpose
    {
        refuse(
            "admin.key",
            "the running config has an admin key and this one has none (a file caught \
             half-written, or an unset variable?); to drop it on purpose, say \
             `admin: { loopback_only: true }` (or `auth: none`)"
                .into(),
        );
    }
    let running_models = running.model_order.len() + running.unavailable.len();
    if running_models > 0 && cfg.models.is_empty() && !cfg.models_declared {
        refuse(
            "models",
            format!(
                "the running config has {running_models} model(s) and this one lists none (a \
                 file caught half-written?); to remove them all on purpose, say `models: []`"
            ),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(cfgs::ConfigErrors(errors))
    }
}

fn whole_file_error(origin: &str, message: &str) -> cfgs::ConfigErrors {
    cfgs::ConfigErrors(vec![cfgs::ConfigError {
        origin: origin.to_string(),
        line: None,
        column: None,
        path: "<root>".into(),
        message: message.to_string(),
    }])
}

/// Logs which models a snapshot serves and why the others are unavailable.
pub fn log_snapshot(gw: &Gateway) {
    for alias in &gw.model_order {
        if let Some(route) = gw.models.get(alias) {
            let chain: Vec<&str> = route.targets.iter().map(|t| t.backend.name()).collect();
            tracing::info!(model = %alias, backends = ?chain, "model available");
        }
    }
    let mut off: Vec<_> = gw.unavailable.iter().collect();
    off.sort();
    for (alias, why) in off {
        tracing::warn!(model = %alias, reason = %why, "model unavailable");
    }
    if let Some(e) = &gw.embedder {
        tracing::info!(model = %e.name, "embeddings available at /v1/embeddings");
    }
    if gw.models.is_empty() {
        tracing::warn!(
            "no model can be served: every request will get 404 (see the reasons above)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> cfgs::Config {
        cfgs::load_str_with_env(yaml, "t.yaml", &|_| None).expect("valid")
    }

    #[test]
    fn startup_only_settings_are_reported() {
        let boot = cfg("listen: 127.0.0.1:1\n");
        let b = Boot {
            listen: boot.listen.clone(),
            limits: boot.limits,
        };
        assert!(b.differences(&boot).is_empty());
        let changed =
            cfg("listen: 127.0.0.1:2\nlimits:\n  max_body_bytes: 10\n  request_timeout: 5s\n");
        let diffs = b.differences(&changed);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(diffs[0].starts_with("listen:"), "{diffs:?}");
        assert!(
            diffs[1].starts_with("limits.max_body_bytes: 4194304 -> 10"),
            "{diffs:?}"
        );
        assert!(
            diffs[2].starts_with("limits.request_timeout: 10m -> 5s"),
            "{diffs:?}"
        );
    }

    #[test]
    fn invalid_configs_keep_their_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "models:\n  - name: x\n    backend: nope\n").expect("write");
        let (res, digest) = read_source(&ConfigSource::File(path.clone()), None);
        assert!(digest.is_some());
        let err = ReloadError::Invalid(res.expect_err("invalid"));
        let issues = err.issues();
        assert_eq!(issues[0].line, Some(3), "{issues:?}");
        assert_eq!(issues[0].path.as_deref(), Some("models[0].backend"));
        assert!(issues[0]
            .error
            .starts_with(&format!("{}:3:", path.display())));

        let (res, digest) = read_source(&ConfigSource::File(dir.path().join("missing.yaml")), None);
        assert!(digest.is_none());
        let msg = res.expect_err("missing").to_string();
        assert!(msg.contains("cannot read the config file"), "{msg}");
    }
}
