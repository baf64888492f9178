//! Root package of the workspace: it only hosts the criterion benches in
//! `benches/`. The engine lives in `crates/kernel`, `crates/graph` and
//! `crates/trainer`.
