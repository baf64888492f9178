//! The files of a run folder that more than one module names.

/// The run's resolved settings ([`crate::config::RunConfig`]).
pub const CONFIG: &str = "config.json";
/// Parameters and optimiser state: what `--resume` continues from.
pub const STATE: &str = "state.safetensors";
/// The trained model alone, with what `eval`, `explain` and `predict` need.
pub const MODEL: &str = "model.safetensors";
/// The learning curves.
pub const CURVES: &str = "curves.png";
