//! `slmgate config`: check a file, print the embedded default.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// `slmgate config …`.
#[derive(Subcommand)]
pub enum Command {
    /// Validate a config file; lists every problem and exits 1 if there is any.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default config.
    Default,
}

/// Runs a `config` command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Default => {
            print!("{}", slmgate_config::DEFAULT_CONFIG_YAML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file } => match slmgate_config::load_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::from(1))
            }
        },
    }
}
