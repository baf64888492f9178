//! The few MPI calls a [`Team`](super::Team) makes, through rsmpi (the
//! `mpi` crate) on the system's MPI library. Only the main thread calls
//! MPI (rayon's workers never do), so `Funneled` is all it asks for.

use anyhow::{anyhow, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// This build can join an MPI job.
pub const BUILT: bool = true;

pub struct World {
    comm: SimpleCommunicator,
    /// Finalises MPI when dropped, after everything else.
    _universe: Universe,
}

impl World {
    pub fn init() -> Result<World> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| anyhow!("MPI could not start (MPI_Init_thread failed)"))?;
        Ok(World { comm: universe.world(), _universe: universe })
    }
    pub fn rank(&self) -> usize {
        self.comm.rank() as usize
    }
    pub fn size(&self) -> usize {
        self.comm.size() as usize
    }
    fn at(&self, rank: usize) -> mpi::topology::Process<'_> {
        self.comm.process_at_rank(rank as i32)
    }
    fn send<T: Equivalence>(&self, to: usize, buf: &[T]) {
        self.at(to).send(buf);
    }
    fn recv<T: Equivalence>(&self, from: usize, buf: &mut [T]) {
        self.at(from).receive_into(buf);
    }
    fn bcast<T: Equivalence>(&self, root: usize, buf: &mut [T]) {
        self.at(root).broadcast_into(buf);
    }
    pub fn send_f32(&self, to: usize, buf: &[f32]) {
        self.send(to, buf)
    }
    pub fn recv_f32(&self, from: usize, buf: &mut [f32]) {
        self.recv(from, buf)
    }
    pub fn send_u64(&self, to: usize, buf: &[u64]) {
        self.send(to, buf)
    }
    pub fn recv_u64(&self, from: usize, buf: &mut [u64]) {
        self.recv(from, buf)
    }
    pub fn bcast_f32(&self, root: usize, buf: &mut [f32]) {
        self.bcast(root, buf)
    }
    pub fn bcast_u64(&self, root: usize, buf: &mut [u64]) {
        self.bcast(root, buf)
    }
    /// `root`'s bytes (length first) into every rank's `bytes`.
    pub fn bcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) {
        let mut len = [bytes.len() as u64];
        self.bcast(root, &mut len);
        bytes.resize(len[0] as usize, 0);
        self.bcast(root, &mut bytes[..]);
    }
    /// The largest `v` of all ranks (max is exact: no order to depend on).
    pub fn max_u64(&self, v: u64) -> u64 {
        let mut out = 0u64;
        self.comm.all_reduce_into(&v, &mut out, SystemOperation::max());
        out
    }
}
