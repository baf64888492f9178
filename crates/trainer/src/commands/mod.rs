//! One module per subcommand, each with its `run`; what the training
//! commands share (the thread pool, the data they load and check, the
//! engine line) is in `setup`.

pub mod compare;
pub mod eval;
pub mod explain;
pub mod export;
pub mod fetch;
pub mod predict;
pub mod prune;
mod setup;
pub mod train;

pub use setup::{engine_line, set_threads};
