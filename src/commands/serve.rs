//! `slmgate serve`: load and validate the config, start tracing, serve until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `slmgate serve`.
#[derive(clap::Args)]
pub struct Args {
    /// YAML config file; the embedded default config when absent.
    #[arg(long, short, env = "SLMGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding the config's `listen`.
    #[arg(long, short)]
    pub listen: Option<SocketAddr>,
}

/// Runs the gateway until SIGINT/SIGTERM, then drains.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args { config, listen } = args;
    let cfg = match &config {
        Some(path) => slmgate_config::load_file(path),
        None => slmgate_config::default_config(),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("slmgate: refusing to start with an invalid config");
            return Ok(ExitCode::from(1));
        }
    };
    // Before the subscriber exists: its OpenTelemetry layer needs the exporter.
    let telemetry = slmgate_gateway::telemetry::init(&cfg.telemetry)?;
    init_tracing(telemetry.as_ref());
    if let Some(t) = &telemetry {
        let c = &cfg.telemetry;
        tracing::info!(
            endpoint = t.endpoint(),
            from = c.endpoint_origin,
            sample_ratio = c.sample_ratio,
            "exporting traces over OTLP"
        );
    }
    match &config {
        Some(p) => tracing::info!(config = %p.display(), "config loaded"),
        None => {
            tracing::info!(
                "using the embedded default config (`slmgate config default` prints it)"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let source = match config {
        Some(p) => slmgate_gateway::ConfigSource::File(p),
        None => slmgate_gateway::ConfigSource::EmbeddedDefault,
    };
    let served = rt.block_on(slmgate_gateway::serve_from(cfg, listen, source));
    // Export the spans of the last requests before exiting.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The one place the subscriber is composed: the log layer (its own filter, `SLMGATE_LOG`)
/// and, when traces are exported, the OpenTelemetry layer (its own filter: slmgate's spans).
fn init_tracing(telemetry: Option<&slmgate_gateway::telemetry::Telemetry>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLMGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SLMGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let logs = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(telemetry.map(slmgate_gateway::telemetry::Telemetry::layer))
        .init();
}
