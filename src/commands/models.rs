//! `slmgate models fetch`: resolve a model reference to a file, downloading when needed.

use std::process::ExitCode;

use clap::Subcommand;

/// `slmgate models …`.
#[derive(Subcommand)]
pub enum Command {
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

/// Runs a `models` command.
#[cfg(feature = "local")]
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    use slmgate_local_model::{embed, hub};
    let Command::Fetch { spec, embedder } = command;
    let path = if embedder {
        hub::resolve_model_dir(&spec, &embed::REQUIRED_FILES)?
    } else {
        hub::resolve_model_file(&spec)?
    };
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs a `models` command.
#[cfg(not(feature = "local"))]
pub fn run(_: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("slmgate was built without the `local` feature")
}
