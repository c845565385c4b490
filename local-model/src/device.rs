//! TODO(issue 3): device
