//! `slmgate train`: trains the complexity scorer (`slmgate-routing-lab`) and writes it.

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `slmgate train`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled JSONL files (repeat the flag): the ranker learns the order of
    /// difficulty within each source.
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// Labelled everyday prompts the score is calibrated on (repeat the flag); default:
    /// the built-in set.
    #[arg(long)]
    pub calibration: Vec<PathBuf>,
    /// Where to write the scorer JSON.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Trains and writes the scorer; prints the training report.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Args {
        data,
        calibration,
        out,
    } = args;
    let opts = slmgate_routing_lab::train::TrainOptions::default();
    let report = super::offline::train(data, calibration, out, &opts)?;
    println!("{report}");
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}
