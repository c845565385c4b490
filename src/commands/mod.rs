//! One module per command. Shared here: loading the config and the runtime.

pub mod classify;
pub mod config;
pub mod eval;
pub mod keys;
pub mod models;
pub mod offline;
pub mod serve;
pub mod train;
pub mod usage;

/// Loads `path` or the embedded default; prints every error and returns `None` when invalid.
pub fn load_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<slmgate_config::Config>> {
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

/// The multi-threaded runtime the async commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
