//! Settings: the command line's flags ([`flags`]), the recipes' defaults
//! ([`recipe`]) and the resolved settings of a run ([`RunConfig`], saved as
//! its `config.json`), with each convolution's recorded path
//! ([`conv_paths`]).

pub mod conv_paths;
pub mod flags;
pub mod recipe;
mod run;

pub use recipe::{Normalize, Recipe, Schedule};
pub use run::{
    check_lr, check_saved, configure, resolve_model, resume_isa, schedule_note, short, validate, RunConfig,
};
