//! `slmgate usage report`: the `GET /v1/usage` report, read from the usage database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// `slmgate usage …`.
#[derive(Subcommand)]
pub enum Command {
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

/// How the report is printed.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// The `GET /v1/usage` JSON.
    Json,
}

/// Runs a `usage` command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Report {
        db,
        config,
        from,
        to,
        group_by,
        format,
    } = command;
    let url = match db {
        Some(u) => u,
        None => {
            let Some(cfg) = super::load_config(config.as_deref())? else {
                return Ok(ExitCode::from(1));
            };
            match cfg.usage {
                Some(u) => u.database,
                None => {
                    anyhow::bail!("the config has no `usage:` section; pass --db sqlite://<file>")
                }
            }
        }
    };
    use slmgate_usage::report;
    let rt = super::runtime()?;
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
