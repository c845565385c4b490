//! `slmgate keys hash`: the sha256 of a client key, for `keys[].key_sha256`.

use std::process::ExitCode;

use clap::Subcommand;

/// `slmgate keys …`.
#[derive(Subcommand)]
pub enum Command {
    /// Print the sha256 of a client key, for `keys[].key_sha256` in the config (so the
    /// secret itself never sits in the file). Reads the key from standard input when KEY is
    /// absent (keeps it out of the shell history).
    Hash {
        /// The key; read from standard input when absent.
        key: Option<String>,
    },
}

/// Runs a `keys` command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Hash { key } = command;
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
