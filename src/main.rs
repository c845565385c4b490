//! `slmgate`: the command line. Each command is one module of `slmgate_cli::commands`; serving is
//! `slmgate-gateway`, the router's offline work is `slmgate-routing-lab`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use slmgate_cli::commands::{classify, config, eval, keys, models, serve, train, usage};

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
    Serve(serve::Args),
    /// Usage records: reports of requests, tokens, cost, savings and local share.
    Usage {
        #[command(subcommand)]
        command: usage::Command,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: config::Command,
    },
    /// Model files.
    Models {
        #[command(subcommand)]
        command: models::Command,
    },
    /// Client keys.
    Keys {
        #[command(subcommand)]
        command: keys::Command,
    },
    /// Print what `POST /v1/route` would answer for a query: the router's decision with
    /// the policy rules applied (the same gateway as `serve`).
    Classify(classify::ClassifyArgs),
    /// Score prompts: reads `{"id","prompt"}` JSONL, writes `{"id","score","target"}` JSONL
    /// (higher score = more need for the large model).
    Score(classify::ScoreArgs),
    /// Train the complexity scorer on labelled JSONL (`{"prompt","label"}`,
    /// `{"prompt","weak","strong"}`, or the `scores` files of ../shared/data) and write it.
    Train(train::Args),
    /// Evaluate routing on labelled JSONL with RouteLLM's metrics (APGR, CPT(50%),
    /// CPT(80%), AUC) against random and prompt-length routing; `--loso` evaluates the
    /// training procedure on every source it did not see.
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(serve::Args {
        config: None,
        listen: None,
    }));
    let run = match command {
        Command::Serve(args) => serve::run(args),
        Command::Usage { command } => usage::run(command),
        Command::Config { command } => config::run(command),
        Command::Models { command } => models::run(command),
        Command::Keys { command } => keys::run(command),
        Command::Classify(args) => classify::classify(args),
        Command::Score(args) => classify::score(args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(args),
    };
    match run {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slmgate: {e:#}");
            ExitCode::from(2)
        }
    }
}
