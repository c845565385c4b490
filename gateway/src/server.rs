//! Binding, serving and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::build::build_gateway;
use crate::layers::snapshot::SharedGateway;
use crate::reload::{log_snapshot, ConfigSource, Reloader};
use crate::stack;

/// A gateway serving on a bound socket.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The live configuration (swapped on reload).
    pub shared: SharedGateway,
    /// Reloads the configuration (also behind `POST /admin/reload`).
    pub reloader: Arc<Reloader>,
    /// The usage writer, when `usage:` is configured (process-wide: survives reloads).
    pub usage: Option<slmgate_usage::UsageWriter>,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Begins a graceful shutdown: stop accepting, finish in-flight requests.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// How a gateway was configured and which reload triggers it arms (see [`crate::reload`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Where the config came from; reloads read it again.
    pub source: ConfigSource,
    /// Reload when the config file changes (only for [`ConfigSource::File`]).
    pub watch: bool,
    /// Reload on `SIGHUP` (unix). Installing the handler is process-wide, so it is opt-in.
    pub sighup: bool,
}

impl StartOptions {
    /// A config read from `path`, watched for changes; no `SIGHUP` handler.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        StartOptions {
            source: ConfigSource::File(path.into()),
            watch: true,
            sighup: false,
        }
    }
}

/// Starts the gateway for `cfg` on `listener` (tests pass a port-0 listener). The config
/// came from memory: `POST /admin/reload` answers 409. See [`start_with`].
pub async fn start_on(
    cfg: &slmgate_config::Config,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    start_with(cfg, listener, StartOptions::default()).await
}

/// Starts the gateway for `cfg`, read from `opts.source`, on `listener`, arming the reload
/// triggers `opts` asks for.
pub async fn start_with(
    cfg: &slmgate_config::Config,
    listener: TcpListener,
    opts: StartOptions,
) -> anyhow::Result<Running> {
    // Loading models blocks; keep it off the async threads as a reload does.
    let owned = cfg.clone();
    let built = tokio::task::spawn_blocking(move || build_gateway(&owned))
        .await
        .context("building the gateway")??;
    let limits = built.limits;
    let shared: SharedGateway = Arc::new(ArcSwap::from_pointee(built));
    let reloader = Arc::new(Reloader::new(shared.clone(), cfg, opts.source.clone()));
    let draining = Arc::new(AtomicBool::new(false));
    // Install the metrics recorder before the first request records anything.
    let _ = crate::metrics::handle();
    // Histogram samples are kept until drained: drain them even when nobody scrapes.
    crate::metrics::spawn_upkeep(std::time::Duration::from_secs(5));
    // One writer per process, made here and not per snapshot, so a reload keeps it.
    let usage = match cfg.usage.as_ref().filter(|u| u.enabled) {
        Some(u) => Some(slmgate_usage::UsageWriter::start(u).await?),
        None => None,
    };
    // Budgets continue from the spend already recorded today and this month, before the
    // first request is admitted. A failing query is logged, not fatal: serving with budgets
    // counted from zero beats not serving.
    if let Some(w) = &usage {
        let ledger = &shared.load().accounting.state.budgets;
        match slmgate_usage::restore_budgets(&w.store, ledger, std::time::SystemTime::now()).await {
            Ok(n) => tracing::info!(accounts = n, "budget spend restored from the usage records"),
            Err(e) => tracing::error!(
                error = %e,
                "cannot read this day's and month's spend from the usage records: budgets start from zero"
            ),
        }
    }
    // Keys created at run time: read once before serving, then every `usage.keys_poll`.
    let keys_poll = cfg.usage.as_ref().map(|u| u.keys_poll);
    if let Some(w) = &usage {
        if let Err(e) = shared.load().runtime_keys.refresh(&w.store).await {
            tracing::error!(error = %e, "cannot read the runtime keys: none is known until the next poll");
        }
    }
    let app = stack::build_with_usage(
        shared.clone(),
        limits,
        draining.clone(),
        reloader.clone(),
        usage.clone(),
    );
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let drain = limits.shutdown_timeout;

    // A watcher that fails to start (e.g. inotify limits) is logged and shown in the
    // status; SIGHUP and POST /admin/reload still work.
    let watcher = if opts.watch {
        match reloader.watch(token.clone()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /admin/reload");
                None
            }
        }
    } else {
        None
    };
    #[cfg(unix)]
    if opts.sighup {
        reloader
            .reload_on_sighup(token.clone())
            .context("installing the SIGHUP handler")?;
    }

    if let (Some(w), Some(every)) = (&usage, keys_poll) {
        crate::keys::spawn_poller(
            shared.load().runtime_keys.clone(),
            w.store.clone(),
            every,
            token.clone(),
        );
    }
    let serve_task = tokio::spawn(crate::connections::serve(
        listener,
        app,
        (&limits).into(),
        token.clone(),
        drain,
        draining,
    ));
    let writer = usage.clone();
    let task = tokio::spawn(async move {
        // The watcher lives as long as the server.
        let _watcher = watcher;
        // Serving returns once every connection and request task has ended (finished, or cut
        // at the drain timeout), so every usage record is queued by then.
        let served = serve_task.await.context("server");
        if let Some(w) = writer {
            w.shutdown().await;
        }
        served
    });
    Ok(Running {
        addr,
        shared,
        reloader,
        usage,
        token,
        task,
    })
}

/// Binds `listen` (or the config's `listen`) and starts serving.
async fn start_bound(
    cfg: &slmgate_config::Config,
    listen: Option<SocketAddr>,
    opts: StartOptions,
) -> anyhow::Result<Running> {
    let addr = match listen {
        Some(a) => a,
        None => cfg
            .listen
            .parse()
            .with_context(|| format!("invalid listen address `{}`", cfg.listen))?,
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    start_with(cfg, listener, opts).await
}

/// The top-level entry point for `slmgate serve`: serves until SIGTERM or Ctrl-C, then
/// drains in-flight requests (bounded by `limits.shutdown_timeout`) and returns. The config
/// read from `source` is reloaded on SIGHUP, on `POST /admin/reload` and, for a file, when
/// the file changes.
pub async fn serve_from(
    cfg: slmgate_config::Config,
    listen: Option<SocketAddr>,
    source: ConfigSource,
) -> anyhow::Result<()> {
    let opts = StartOptions {
        watch: matches!(source, ConfigSource::File(_)),
        source,
        // Always installed by the server binary, so a stray SIGHUP never kills it.
        sighup: true,
    };
    let running = start_bound(&cfg, listen, opts).await?;
    log_snapshot(&running.shared.load());
    tracing::info!(addr = %running.addr, "slmgate listening");
    shutdown_signal().await;
    running.shutdown();
    running.wait().await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
