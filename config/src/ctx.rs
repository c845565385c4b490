//! Where validation errors are collected: each with its line and column, found from the
//! path of the value it is about. Every section's checks write into one [`Ctx`].

use crate::positions::{render, Positions, Seg};
use crate::ConfigError;

/// Collects errors with positions.
pub(crate) struct Ctx<'a> {
    pub origin: &'a str,
    pub positions: Positions,
    pub errors: Vec<ConfigError>,
    /// For each list section, the document index of each item that parsed (items that
    /// failed are dropped, so positions must be mapped back).
    pub indices: std::collections::HashMap<&'static str, Vec<usize>>,
}

impl Ctx<'_> {
    pub fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        let (line, column) = match self.positions.find(path) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        self.errors.push(ConfigError {
            origin: self.origin.to_string(),
            line,
            column,
            path: render(path),
            message: message.into(),
        });
    }
}

pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(crate) fn join(base: &[Seg], rest: impl IntoIterator<Item = Seg>) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.extend(rest);
    p
}
