//! `slmgate eval`: routing quality on labelled data (per data set, leave one source out)
//! and, with `--hybrid`, end to end with the local model's own answers.

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `slmgate eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled JSONL files (repeat the flag).
    #[arg(long = "data", required_unless_present = "hybrid")]
    pub data: Vec<PathBuf>,
    /// A scorer file or `builtin`; default: the config's `router.complexity.scorer`.
    #[arg(long, conflicts_with = "loso")]
    pub scorer: Option<String>,
    /// Leave one source out: for every source group of the data, train on the others,
    /// score it, and compare with random and length. Exits 1 when a group of at least
    /// --min-rows rows (or a pooled group) does not beat both.
    #[arg(long)]
    pub loso: bool,
    /// Calibration prompts for --loso (default: the built-in everyday set).
    #[arg(long, requires = "loso")]
    pub calibration: Vec<PathBuf>,
    /// Groups with fewer rows are summarised in one line (--loso).
    #[arg(long, default_value_t = 100, requires = "loso")]
    pub min_rows: usize,
    /// Candidate per-prompt signals (JSONL with "id": "<data set>:<id>") to add to the
    /// ranker in --loso, to measure whether they transfer.
    #[arg(long, requires = "loso")]
    pub signals: Option<PathBuf>,
    /// Keys of --signals to use (comma-separated; arrays become several columns).
    #[arg(long, value_delimiter = ',', requires = "signals")]
    pub signal_keys: Vec<String>,
    /// Write the quality-vs-%-strong-calls curves as SVG.
    #[arg(long, conflicts_with = "loso")]
    pub svg: Option<PathBuf>,
    /// Write every prompt's left-out score as JSONL (--loso), for analysis.
    #[arg(long, requires = "loso")]
    pub scores_out: Option<PathBuf>,
    /// End to end: the config's router with its actual local model on this gold-answer
    /// set (and the --data files with their pair scores), against all-remote.
    #[arg(long, conflicts_with_all = ["loso", "scorer", "svg"])]
    pub hybrid: Option<PathBuf>,
    /// Longest local answer in --hybrid (tokens).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// YAML config file; the embedded default config when absent.
    #[arg(long, short, env = "SLMGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs the evaluation and prints its report; exits 1 when `--loso` finds a failing group.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
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
    } = args;
    let Some(cfg) = super::load_config(config.as_deref())? else {
        return Ok(ExitCode::from(1));
    };
    if let Some(gold) = hybrid {
        #[cfg(feature = "local")]
        {
            let rt = super::runtime()?;
            let report = rt.block_on(super::offline::hybrid(&cfg, &gold, &data, max_tokens))?;
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
    let args = super::offline::EvalArgs {
        data,
        scorer,
        loso,
        calibration,
        min_rows,
        signals: signals.map(|p| (p, signal_keys)),
        svg,
        scores_out,
    };
    let (report, ok) = super::offline::eval(&cfg, &args)?;
    println!("{report}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
