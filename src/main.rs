//! `slmgate`: parse flags, load and validate the config, start tracing, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc malloc's arena locks and consolidation were ~13 % of the proxy's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An OpenAI-compatible LLM gateway that answers simple queries locally.
#[derive(Parser)]
#[command(name = "slmgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default when no subcommand is given).
    Serve {
        /// YAML config file; the embedded default config when absent.
        #[arg(long, short, env = "SLMGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's `listen`.
        #[arg(long, short)]
        listen: Option<SocketAddr>,
    },
    /// Usage records: reports of requests, tokens, cost, savings and local share.
    Usage {
        #[command(subcommand)]
        command: UsageCommand,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Client keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print what `POST /v1/route` would answer for a query: the router's decision with
    /// the policy rules applied (the same gateway as `serve`).
    Classify {
        /// The query text.
        text: String,
        /// The requested model (a routed alias such as `auto`, or any configured model).
        #[arg(long, short, default_value = "auto")]
        model: String,
        /// YAML config file; the embedded default config when absent.
        #[arg(long, short, env = "SLMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Score prompts: reads `{"id","prompt"}` JSONL, writes `{"id","score","target"}` JSONL
    /// (higher score = more need for the large model).
    Score {
        /// Input JSONL.
        #[arg(long, short)]
        input: PathBuf,
        /// Output JSONL.
        #[arg(long, short)]
        output: PathBuf,
        /// YAML config file; the embedded default config when absent.
        #[arg(long, short, env = "SLMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Train the complexity scorer on labelled JSONL (`{"prompt","label"}`,
    /// `{"prompt","weak","strong"}`, or the `scores` files of ../shared/data) and write it.
    Train {
        /// Labelled JSONL files (repeat the flag): the ranker learns the order of
        /// difficulty within each source.
        #[arg(long = "data", required = true)]
        data: Vec<PathBuf>,
        /// Labelled everyday prompts the score is calibrated on (repeat the flag); default:
        /// the built-in set.
        #[arg(long)]
        calibration: Vec<PathBuf>,
        /// Where to write the scorer JSON.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Evaluate routing on labelled JSONL with RouteLLM's metrics (APGR, CPT(50%),
    /// CPT(80%), AUC) against random and prompt-length routing; `--loso` evaluates the
    /// training procedure on every source it did not see.
    Eval {
        /// Labelled JSONL files (repeat the flag).
        #[arg(long = "data", required_unless_present = "hybrid")]
        data: Vec<PathBuf>,
        /// A scorer file or `builtin`; default: the config's `router.complexity.scorer`.
        #[arg(long, conflicts_with = "loso")]
        scorer: Option<String>,
        /// Leave one source out: for every source group of the data, train on the others,
        /// score it, and compare with random and length. Exits 1 when a group of at least
        /// --min-rows rows (or a pooled group) does not beat both.
        #[arg(long)]
        loso: bool,
        /// Calibration prompts for --loso (default: the built-in everyday set).
        #[arg(long, requires = "loso")]
        calibration: Vec<PathBuf>,
        /// Groups with fewer rows are summarised in one line (--loso).
        #[arg(long, default_value_t = 100, requires = "loso")]
        min_rows: usize,
        /// Candidate per-prompt signals (JSONL with "id": "<data set>:<id>") to add to the
        /// ranker in --loso, to measure whether they transfer.
        #[arg(long, requires = "loso")]
        signals: Option<PathBuf>,
        /// Keys of --signals to use (comma-separated; arrays become several columns).
        #[arg(long, value_delimiter = ',', requires = "signals")]
        signal_keys: Vec<String>,
        /// Write the quality-vs-%-strong-calls curves as SVG.
        #[arg(long, conflicts_with = "loso")]
        svg: Option<PathBuf>,
        /// Write every prompt's left-out score as JSONL (--loso), for analysis.
        #[arg(long, requires = "loso")]
        scores_out: Option<PathBuf>,
        /// End to end: the config's router with its actual local model on this gold-answer
        /// set (and the --data files with their pair scores), against all-remote.
        #[arg(long, conflicts_with_all = ["loso", "scorer", "svg"])]
        hybrid: Option<PathBuf>,
        /// Longest local answer in --hybrid (tokens).
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// YAML config file; the embedded default config when absent.
        #[arg(long, short, env = "SLMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Print the same report as `GET /v1/usage`, read from the usage database, as a table
    /// or CSV.
    Report {
        /// The usage database URL (`sqlite://file` or `postgres://...`); default: the
        /// config's `usage.database`.
        #[arg(long, env = "SLMGATE_USAGE_DB")]
        db: Option<String>,
        /// YAML config file whose `usage.database` to read; the embedded default when
        /// neither this nor --db is given.
        #[arg(long, short, env = "SLMGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Window start: RFC 3339, a date, Unix seconds, or a duration ago (`24h`, `7d`).
        #[arg(long)]
        from: Option<String>,
        /// Window end (exclusive), same forms; default now.
        #[arg(long)]
        to: Option<String>,
        /// key, team, model, target, backend, category, day, hour or minute.
        #[arg(long)]
        group_by: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print the sha256 of a client key, for `keys[].key_sha256` in the config (so the
    /// secret itself never sits in the file). Reads the key from standard input when KEY is
    /// absent (keeps it out of the shell history).
    Hash {
        /// The key; read from standard input when absent.
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Resolve a model reference to a local file or directory, downloading it from the
    /// Hugging Face Hub when needed (with a progress bar), and print its path.
    ///
    /// SPEC is a local path, `hf:owner/repo/file.gguf[@revision]` (a GGUF), or
    /// `hf:owner/repo[@revision]` with --embedder (config.json, tokenizer.json,
    /// model.safetensors). The default models come from `scripts/fetch-models.sh`.
    Fetch {
        /// The model reference.
        spec: String,
        /// Fetch an embedder directory instead of a single file.
        #[arg(long)]
        embedder: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; lists every problem and exits 1 if there is any.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default config.
    Default,
}

/// The one place the subscriber is composed: the log layer (its own filter, `SLMGATE_LOG`)
/// and, when traces are exported, the OpenTelemetry layer (its own filter: slmgate's spans).
fn init_tracing(telemetry: Option<&slmgate_router::telemetry::Telemetry>) {
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
        .with(telemetry.map(|t| t.layer()))
        .init();
}

/// Loads `path` or the embedded default; prints every error and returns `None` when invalid.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Option<slmgate_config::Config>> {
    let cfg = match path {
        Some(p) => slmgate_config::load_file(p),
        None => slmgate_config::default_config(),
    };
    match cfg {
        Ok(c) => Ok(Some(c)),
        Err(errors) => {
            eprintln!("{errors}");
            Ok(None)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slmgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Serve {
        config: None,
        listen: None,
    });
    match command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", slmgate_config::DEFAULT_CONFIG_YAML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match slmgate_config::load_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::from(1))
            }
        },
        #[cfg(feature = "local")]
        Command::Models {
            command: ModelsCommand::Fetch { spec, embedder },
        } => {
            use slmgate_local_model::{embed, hub};
            let path = if embedder {
                hub::resolve_model_dir(&spec, &embed::REQUIRED_FILES)?
            } else {
                hub::resolve_model_file(&spec)?
            };
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(not(feature = "local"))]
        Command::Models { .. } => {
            anyhow::bail!("slmgate was built without the `local` feature")
        }
        Command::Keys {
            command: KeysCommand::Hash { key },
        } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!key.is_empty(), "the key is empty");
            use sha2::Digest as _;
            println!("{}", hex::encode(sha2::Sha256::digest(key.as_bytes())));
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage {
            command:
                UsageCommand::Report {
                    db,
                    config,
                    from,
                    to,
                    group_by,
                    format,
                },
        } => {
            let url = match db {
                Some(u) => u,
                None => {
                    let Some(cfg) = load_config(config.as_deref())? else {
                        return Ok(ExitCode::from(1));
                    };
                    match cfg.usage {
                        Some(u) => u.database,
                        None => anyhow::bail!(
                            "the config has no `usage:` section; pass --db sqlite://<file>"
                        ),
                    }
                }
            };
            use slmgate_router::usage::report;
            let rt = runtime()?;
            let r = rt.block_on(report::run_cli(
                &url,
                from.as_deref(),
                to.as_deref(),
                group_by.as_deref(),
            ))?;
            match format {
                ReportFormat::Table => print!("{}", report::to_table(&r)),
                ReportFormat::Csv => print!("{}", report::to_csv(&r)),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Classify {
            text,
            model,
            config,
        } => {
            let Some(cfg) = load_config(config.as_deref())? else {
                return Ok(ExitCode::from(1));
            };
            let rt = runtime()?;
            let out = rt.block_on(async {
                let gw = slmgate_router::build::build_gateway(&cfg)?;
                slmgate_router::routing::offline::classify(&gw, &model, &text).await
            })?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Score {
            input,
            output,
            config,
        } => {
            let Some(cfg) = load_config(config.as_deref())? else {
                return Ok(ExitCode::from(1));
            };
            let rt = runtime()?;
            let n = rt.block_on(async {
                let router = slmgate_router::routing::offline::load_router(&cfg)?;
                slmgate_router::routing::offline::score_file(&router, &input, &output).await
            })?;
            eprintln!("scored {n} prompts into {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            data,
            calibration,
            out,
        } => {
            let opts = slmgate_router::routing::train::TrainOptions::default();
            let report = slmgate_router::routing::offline::train(&data, &calibration, &out, &opts)?;
            println!("{report}");
            eprintln!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            data,
            scorer,
            loso,
            calibration,
            min_rows,
            signals,
            signal_keys,
            svg,
            scores_out,
            hybrid,
            max_tokens,
            config,
        } => {
            let Some(cfg) = load_config(config.as_deref())? else {
                return Ok(ExitCode::from(1));
            };
            if let Some(gold) = hybrid {
                #[cfg(feature = "local")]
                {
                    let rt = runtime()?;
                    let report = rt.block_on(slmgate_router::routing::offline::hybrid(
                        &cfg, &gold, &data, max_tokens,
                    ))?;
                    println!("{report}");
                    return Ok(ExitCode::SUCCESS);
                }
                #[cfg(not(feature = "local"))]
                {
                    let _ = (gold, max_tokens);
                    anyhow::bail!("--hybrid needs the `local` feature (the embedded model)");
                }
            }
            if signals.is_some() && signal_keys.is_empty() {
                anyhow::bail!("--signals needs --signal-keys");
            }
            let args = slmgate_router::routing::offline::EvalArgs {
                data,
                scorer,
                loso,
                calibration,
                min_rows,
                signals: signals.map(|p| (p, signal_keys)),
                svg,
                scores_out,
            };
            let (report, ok) = slmgate_router::routing::offline::eval(&cfg, &args)?;
            println!("{report}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Serve { config, listen } => {
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
            let telemetry = slmgate_router::telemetry::init(&cfg.telemetry)?;
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
                None => tracing::info!(
                    "using the embedded default config (`slmgate config default` prints it)"
                ),
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let source = match config {
                Some(p) => slmgate_router::ConfigSource::File(p),
                None => slmgate_router::ConfigSource::EmbeddedDefault,
            };
            let served = rt.block_on(slmgate_router::serve_from(cfg, listen, source));
            // Export the spans of the last requests before exiting.
            if let Some(t) = telemetry {
                t.shutdown();
            }
            served?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
