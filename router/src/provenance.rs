//! Where a trained scorer came from: the data files it was trained on and how they were
//! read. Saved inside every scorer file ([`crate::scorer::TrainingInfo`]), so the runtime
//! can report a scorer's provenance without the training code (`slmgate-routing-lab`).

use std::fmt;

/// What to do with rows whose 0–1 scores are not 0 or 1 (continuous metrics such as METEOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContinuousRows {
    /// Keep them, with their scores as qualities.
    #[default]
    Keep,
    /// Leave them out.
    Drop,
}

/// How to read labelled files.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// Models whose scores make the weak quality in `{"scores": {...}}` rows (averaged over
    /// those present); empty = the known default pair of the file's layout.
    pub weak_models: Vec<String>,
    /// Models whose scores make the strong quality (averaged); empty = the default pair.
    pub strong_models: Vec<String>,
    /// Rows with continuous 0–1 scores: keep or drop.
    pub continuous: ContinuousRows,
    /// Keep benchmark instruction templates in prompts (RouterArena wraps every question in
    /// one); by default they are stripped to the question, as a user would send it.
    #[serde(default)]
    pub keep_templates: bool,
}

/// What loading one file found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileSummary {
    /// The file as given.
    pub path: String,
    /// Its data-set name (file stem).
    pub dataset: String,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
    /// Examples loaded.
    pub rows: usize,
    /// Rows skipped (a model's score missing, or continuous rows dropped).
    pub skipped: usize,
    /// How the qualities were read: `"label"`, `"0-1"` or `"1-10"`.
    pub scale: String,
    /// The weak and strong models picked from `scores`, if the file has that layout.
    pub pair: Option<(String, String)>,
}

impl fmt::Display for FileSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} rows ({} skipped), scale {}",
            self.path, self.rows, self.skipped, self.scale
        )?;
        if let Some((w, s)) = &self.pair {
            write!(f, ", weak {w}, strong {s}")?;
        }
        Ok(())
    }
}
