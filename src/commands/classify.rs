//! `slmgate classify` and `slmgate score`: the gateway's router (and, for `classify`, its
//! policy rules) on text, without serving.

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `slmgate classify`.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// The query text.
    pub text: String,
    /// The requested model (a routed alias such as `auto`, or any configured model).
    #[arg(long, short, default_value = "auto")]
    pub model: String,
    /// YAML config file; the embedded default config when absent.
    #[arg(long, short, env = "SLMGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Flags of `slmgate score`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Input JSONL.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output JSONL.
    #[arg(long, short)]
    pub output: PathBuf,
    /// YAML config file; the embedded default config when absent.
    #[arg(long, short, env = "SLMGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Prints what `POST /v1/route` answers for `text`.
pub fn classify(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let ClassifyArgs {
        text,
        model,
        config,
    } = args;
    let Some(cfg) = super::load_config(config.as_deref())? else {
        return Ok(ExitCode::from(1));
    };
    let rt = super::runtime()?;
    let out = rt.block_on(async {
        let gw = slmgate_gateway::build::build_gateway(&cfg)?;
        super::offline::classify(&gw, &model, &text).await
    })?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// Scores a JSONL file of prompts.
pub fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let ScoreArgs {
        input,
        output,
        config,
    } = args;
    let Some(cfg) = super::load_config(config.as_deref())? else {
        return Ok(ExitCode::from(1));
    };
    let rt = super::runtime()?;
    let n = rt.block_on(async {
        let router = super::offline::load_router(&cfg)?;
        super::offline::score_file(&router.router, &input, &output).await
    })?;
    eprintln!("scored {n} prompts into {}", output.display());
    Ok(ExitCode::SUCCESS)
}
