//! Where a model alias goes: a [`ModelRoute`] is an alias's ordered [`Target`]s (a backend
//! and the model name sent to it).

use std::sync::Arc;

use crate::upstream::Backend;

/// One place a request for an alias can be sent: a backend and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The model name sent upstream.
    pub model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.backend.name(), self.model)
    }
}

/// A public model alias and the ordered list of targets that may serve it.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    /// The alias clients ask for.
    pub alias: String,
    /// Primary target first, then the fallbacks, in order. Never empty.
    pub targets: Vec<Target>,
}
