//! Training: the epoch loop ([`trainer`]), evaluation ([`evaluate`]), the
//! ranks of an MPI job that share each step ([`team`]), and the checks that
//! stop or warn about a run that is not learning ([`health`]).

pub mod evaluate;
pub mod health;
pub mod team;
mod trainer;
pub mod tune;

pub use trainer::{build, epoch_line, prepare_data, run, Outcome};
