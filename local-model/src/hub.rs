//! TODO(issue 3): hub
