//! The gapnet program as a library: the `trainer` binary is a thin `main`
//! over it, and the integration tests drive it directly. The program owns
//! I/O, the command line and the training loop; the numerics live in the
//! graph and kernel crates.
//!
//! Modules import downward only: `commands` (one per subcommand) use
//! `training` (the loop, the MPI team, health checks), which uses
//! `run_folder` (files, checkpoints, metrics, curves), which uses `config`
//! (flags, recipes, resolved settings) and `data` (loaders, augmentation,
//! download); `inspect` (heatmaps, CAM grids), `export` (a model as ONNX),
//! `interrupt` (signals), `fsops` (every file write, counted for the
//! crash tests) and `protobuf` (the encoder of ONNX and TensorBoard files)
//! stand alone.

pub mod commands;
pub mod config;
pub mod data;
pub mod export;
pub mod fsops;
pub mod inspect;
pub mod interrupt;
pub mod protobuf;
pub mod run_folder;
pub mod training;
