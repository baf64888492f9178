//! A build without the `mpi` feature: no [`World`] can exist, so every
//! [`Team`](super::Team) is a single process. The methods mirror
//! `mpi.rs` so that `team.rs` reads the same in both builds.

use anyhow::{bail, Result};

/// This build cannot join an MPI job.
pub const BUILT: bool = false;

/// Uninhabited: no value of it exists in this build.
pub enum World {}

impl World {
    pub fn init() -> Result<World> {
        bail!("this trainer was built without MPI (cargo build --release -p trainer --features mpi)")
    }
    pub fn rank(&self) -> usize {
        match *self {}
    }
    pub fn size(&self) -> usize {
        match *self {}
    }
    pub fn send_f32(&self, _: usize, _: &[f32]) {
        match *self {}
    }
    pub fn recv_f32(&self, _: usize, _: &mut [f32]) {
        match *self {}
    }
    pub fn send_u64(&self, _: usize, _: &[u64]) {
        match *self {}
    }
    pub fn recv_u64(&self, _: usize, _: &mut [u64]) {
        match *self {}
    }
    pub fn bcast_f32(&self, _: usize, _: &mut [f32]) {
        match *self {}
    }
    pub fn bcast_u64(&self, _: usize, _: &mut [u64]) {
        match *self {}
    }
    pub fn bcast_bytes(&self, _: usize, _: &mut Vec<u8>) {
        match *self {}
    }
    pub fn max_u64(&self, _: u64) -> u64 {
        match *self {}
    }
}
