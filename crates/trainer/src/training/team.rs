//! Training as one process or as the ranks of an MPI job (`--features
//! mpi`, started by `mpirun`), with the same bits either way.
//!
//! A step's batch is split into the plan's lanes by a rule that depends on
//! the batch size only (`graph::lane_range`); rank `r` of `N` computes the
//! consecutive lanes `lane_range(lanes, N, r)`. One process sums the lanes'
//! gradients strictly left to right, and float addition is not
//! associative, so the ranks do not add partial sums of their own (MPI's
//! `allreduce` promises no order either): they pass one sum along.
//! Rank 0 sums its lanes and sends the sum to rank 1, which adds its lanes
//! onto it and sends it on; the last rank broadcasts the total. Every
//! addition is then the one a single process makes, in its order, and the
//! broadcast only copies. The loss sums and the stop flag travel with the
//! gradients. Per step each rank sends and receives the gradient arena
//! about twice (once along the chain, once in the broadcast), whatever `N`.
//!
//! Evaluation is split by whole batches, each computed as one process
//! computes it; the per-batch sums are exchanged and added in batch order.
//!
//! Rank 0 alone reads and writes the run folder: it resolves the command
//! line, takes the lock, loads or starts the state and shares it; the other
//! ranks print nothing (their stdout and stderr go to /dev/null; a panic
//! still reaches the terminal). Every rank reads the data itself, and their
//! checksums are compared once at the start.

use std::cell::Cell;
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use graph::{lane_range, lanes_images, Loss, LossSums, Meet, Plan, Reduction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::Splits;

#[cfg(feature = "mpi")]
#[path = "team/mpi.rs"]
mod world;
#[cfg(not(feature = "mpi"))]
#[path = "team/alone.rs"]
mod world;

use world::World;

/// Environment variables a launcher sets for each rank, with the job size:
/// Open MPI's, then the PMI ones of MPICH/Hydra, Slurm's srun and PMIx.
const SIZE_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];

/// How long a rank other than 0 waits after an error for rank 0 to end the job.
const LINGER: Duration = Duration::from_secs(10);

/// Ranks that leave a lane to each rank; more would have nothing to do.
pub const MAX_RANKS: usize = graph::LANES;

/// This process's place in the job.
pub struct Team {
    rank: usize,
    ranks: usize,
    world: Option<World>,
    /// Time spent passing sums along and waiting for them, since the last
    /// [`Team::take_comm`].
    comm: Cell<Duration>,
}

/// The job size a launcher announced, if any.
fn launched_size() -> Option<(String, usize)> {
    SIZE_VARS.iter().find_map(|v| {
        let value = std::env::var(v).ok()?;
        Some((format!("{v}={value}"), value.trim().parse().ok()?))
    })
}

impl Team {
    /// One process, no MPI.
    pub fn alone() -> Team {
        Team { rank: 0, ranks: 1, world: None, comm: Cell::new(Duration::ZERO) }
    }

    /// Join the job `mpirun` started, or stay alone when no launcher
    /// started this process (MPI is then never initialised).
    pub fn join() -> Result<Team> {
        let Some((var, size)) = launched_size() else {
            return Ok(Team::alone());
        };
        if !world::BUILT {
            if size > 1 {
                bail!(
                    "{var}: started by an MPI launcher as one of {size} processes, but this trainer was built \
                     without MPI; build it with: cargo build --release -p trainer --features mpi"
                );
            }
            return Ok(Team::alone());
        }
        let world = World::init()?;
        let (rank, ranks) = (world.rank(), world.size());
        if rank > 0 {
            quiet(rank);
        }
        if ranks > MAX_RANKS {
            // Rank 0 says it; see `linger`.
            if rank > 0 {
                linger(true, rank);
            }
            bail!(
                "{ranks} ranks: a step's batch is split into {MAX_RANKS} lanes, one rank needs at least one; \
                 start at most {MAX_RANKS} (docs/scaling.md says how the limit would be lifted)"
            );
        }
        Ok(Team { rank, ranks, world: Some(world), comm: Cell::new(Duration::ZERO) })
    }

    /// Leave the job: MPI is finalised, which every rank does together.
    pub fn finish(self) {}

    pub fn ranks(&self) -> usize {
        self.ranks
    }
    /// Rank 0, which alone prints and touches the run folder.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// For the engine line: `, 2 MPI ranks (lanes 0..4 of 8 here)`.
    pub fn engine_note(&self, plan_lanes: usize) -> String {
        match self.world {
            None => String::new(),
            Some(_) => {
                let mine = lane_range(plan_lanes, self.ranks, self.rank);
                format!(", {} MPI ranks (lanes {mine:?} of {plan_lanes} on rank {})", self.ranks, self.rank)
            }
        }
    }

    /// Rank 0's `value` on every rank. Rank 0 passes `Some` (its result,
    /// which may be an error), the others `None`. An error on rank 0 is
    /// returned by every rank (rank 0's with its context), so all stop.
    pub fn share<T: Serialize + DeserializeOwned>(&self, value: Option<Result<T>>) -> Result<T> {
        let Some(world) = &self.world else {
            return value.expect("rank 0 passes its value");
        };
        #[derive(Serialize, Deserialize)]
        enum Shared<T> {
            Ok(T),
            Err(String),
        }
        let (mut bytes, kept) = match value {
            Some(Ok(v)) => (serde_json::to_vec(&Shared::Ok(v))?, None),
            Some(Err(e)) => (serde_json::to_vec(&Shared::<T>::Err(format!("{e:#}")))?, Some(e)),
            None => (Vec::new(), None),
        };
        world.bcast_bytes(0, &mut bytes);
        if let Some(e) = kept {
            return Err(e);
        }
        match serde_json::from_slice::<Shared<T>>(&bytes)? {
            Shared::Ok(v) => Ok(v),
            Shared::Err(e) => Err(anyhow!("rank 0: {e}")),
        }
    }

    /// Every rank's data, checked to be the same: each rank loads it, and
    /// a rank that could not, or whose images or labels differ from rank
    /// 0's, ends the job with a message naming the rank and the files.
    pub fn check_data(&self, local: Result<Splits>) -> Result<Splits> {
        let Some(world) = &self.world else {
            return local;
        };
        #[derive(Serialize, Deserialize)]
        struct Record {
            error: Option<String>,
            train: String,
            test: String,
        }
        let mine = match &local {
            Ok(s) => Record { error: None, train: s.train.checksum(), test: s.test.checksum() },
            Err(e) => Record { error: Some(format!("{e:#}")), train: String::new(), test: String::new() },
        };
        let mut records = Vec::with_capacity(self.ranks);
        for r in 0..self.ranks {
            let mut bytes = if r == self.rank { serde_json::to_vec(&mine)? } else { Vec::new() };
            world.bcast_bytes(r, &mut bytes);
            records.push(serde_json::from_slice::<Record>(&bytes)?);
        }
        if let Some((r, e)) = records.iter().enumerate().find_map(|(r, c)| Some((r, c.error.as_ref()?))) {
            bail!("rank {r}: {e}");
        }
        let splits = local?;
        for (r, c) in records.iter().enumerate().skip(1) {
            for (split, have, want) in
                [("train", &c.train, &records[0].train), ("test", &c.test, &records[0].test)]
            {
                if have != want {
                    bail!(
                        "rank {r}: its {split} data ({}) differs from rank 0's (MD5 {have} against {want}): every \
                         rank must read the same files (a shared file system, or identical copies at the same path)",
                        splits.files(split == "train")
                    );
                }
            }
        }
        Ok(splits)
    }

    /// The state every rank starts from: rank 0's progress (`Some`: rank 0
    /// has initialised the plan or read the checkpoint into it, or failed
    /// to), then its parameters and momentum.
    pub fn share_state<P: Serialize + DeserializeOwned>(
        &self,
        plan: &mut Plan,
        at: Option<Result<P>>,
    ) -> Result<P> {
        let at = self.share(at)?;
        if let Some(world) = &self.world {
            world.bcast_f32(0, plan.params_mut());
            world.bcast_f32(0, plan.velocity_mut());
            world.bcast_f32(0, plan.running_mut());
            let tracked = plan.batches_tracked();
            let mut steps: Vec<u64> = tracked.iter().map(|&(_, t)| t as u64).collect();
            world.bcast_u64(0, &mut steps);
            for ((node, _), t) in tracked.into_iter().zip(steps) {
                plan.set_batches_tracked(&node, t as i64).map_err(|e| anyhow!(e))?;
            }
        }
        Ok(at)
    }

    /// The images of a batch of `n` this rank computes (and so prepares).
    pub fn images(&self, plan: &Plan, n: usize) -> Range<usize> {
        lanes_images(n, plan.lane_count(), self.lanes(plan))
    }

    fn lanes(&self, plan: &Plan) -> Range<usize> {
        lane_range(plan.lane_count(), self.ranks, self.rank)
    }

    /// One training step over the batch `x`, `labels` (only this rank's
    /// [`Team::images`] are read): the summed gradients in `plan.grads()`
    /// and the loss sums, the same bits on every rank and as one process
    /// computes them. Also returns whether any rank asked to stop (`stop`
    /// is this rank's wish), so all stop after the same step.
    pub fn step(
        &self,
        plan: &mut Plan,
        x: &[f32],
        labels: &[u32],
        loss: Loss,
        reduction: Reduction,
        stop: bool,
    ) -> (LossSums, bool) {
        let Some(world) = &self.world else {
            return (plan.forward_backward(x, labels, loss, reduction), stop);
        };
        let meet = Chain { world, rank: self.rank, ranks: self.ranks, comm: &self.comm };
        let ran = plan.forward_backward_lanes(x, labels, loss, reduction, self.lanes(plan), &meet);
        let t = Instant::now();
        let (rank, last) = (self.rank, self.ranks - 1);
        let mut sums = LossSums::default();
        let mut tail = [0u64; TAIL];
        if rank > 0 {
            world.recv_f32(rank - 1, plan.grads_mut());
            world.recv_u64(rank - 1, &mut tail);
            sums = unpack(&tail);
        }
        plan.add_lanes(ran, rank > 0, &mut sums);
        pack(&sums, tail[TAIL - 1] | u64::from(stop), &mut tail);
        if rank < last {
            world.send_f32(rank + 1, plan.grads());
            world.send_u64(rank + 1, &tail);
        }
        world.bcast_f32(last, plan.grads_mut());
        world.bcast_u64(last, &mut tail);
        self.comm.set(self.comm.get() + t.elapsed());
        (unpack(&tail), tail[TAIL - 1] != 0)
    }

    /// Whether `flag` is true on any rank.
    pub fn any(&self, flag: bool) -> bool {
        match &self.world {
            None => flag,
            Some(world) => world.max_u64(u64::from(flag)) != 0,
        }
    }

    /// The batches of an evaluation of `batches` batches this rank computes.
    pub fn batches(&self, batches: usize) -> Range<usize> {
        lane_range(batches, self.ranks, self.rank)
    }

    /// Every rank's entries of `per_batch` (its [`Team::batches`]) on every rank.
    pub fn gather_batches(&self, per_batch: &mut [LossSums]) {
        let Some(world) = &self.world else {
            return;
        };
        let mut packed = vec![0u64; per_batch.len() * TAIL];
        for (s, p) in per_batch.iter().zip(packed.chunks_mut(TAIL)) {
            pack(s, 0, p);
        }
        for r in 0..self.ranks {
            let b = lane_range(per_batch.len(), self.ranks, r);
            world.bcast_u64(r, &mut packed[b.start * TAIL..b.end * TAIL]);
        }
        for (s, p) in per_batch.iter_mut().zip(packed.chunks(TAIL)) {
            *s = unpack(p);
        }
    }

    /// On an error, before exiting: a rank other than 0 waits (at most
    /// [`LINGER`]) for the launcher to end the job on rank 0's exit, so that
    /// rank 0's message, which names the rank at fault, is printed first;
    /// rank 0 gives the launcher a moment to forward what it printed.
    pub fn linger(&self) {
        linger(self.world.is_some(), self.rank);
    }

    /// Time spent in [`Team::step`]'s exchange (and waiting in it) since the last call.
    pub fn take_comm(&self) -> Duration {
        self.comm.replace(Duration::ZERO)
    }
}

/// The ranks meeting at a batch norm: the sum passed along the ranks in
/// rank order, then broadcast by the last, as the gradients are.
struct Chain<'a> {
    world: &'a World,
    rank: usize,
    ranks: usize,
    comm: &'a Cell<Duration>,
}

impl Meet for Chain<'_> {
    fn before(&self, sums: &mut [f64]) -> bool {
        if self.rank == 0 {
            return false;
        }
        let t = Instant::now();
        self.world.recv_u64(self.rank - 1, bytemuck::cast_slice_mut(sums));
        self.comm.set(self.comm.get() + t.elapsed());
        true
    }
    fn after(&self, sums: &mut [f64]) {
        let t = Instant::now();
        let last = self.ranks - 1;
        if self.rank < last {
            self.world.send_u64(self.rank + 1, bytemuck::cast_slice(sums));
        }
        self.world.bcast_u64(last, bytemuck::cast_slice_mut(sums));
        self.comm.set(self.comm.get() + t.elapsed());
    }
}

/// [`Team::linger`] for an error before the team was formed: rank 0's
/// part (the others have waited already).
pub fn linger_alone() {
    linger(launched_size().is_some(), 0);
}

fn linger(in_job: bool, rank: usize) {
    if in_job {
        std::thread::sleep(if rank == 0 { Duration::from_millis(200) } else { LINGER });
    }
}

/// The loss sums and a flag, as the words that travel with the gradients.
const TAIL: usize = 5;

fn pack(s: &LossSums, flag: u64, out: &mut [u64]) {
    out.copy_from_slice(&[
        s.loss.to_bits(),
        s.cross_entropy.to_bits(),
        s.seed_error.to_bits(),
        s.correct as u64,
        flag,
    ]);
}

fn unpack(t: &[u64]) -> LossSums {
    LossSums {
        loss: f64::from_bits(t[0]),
        cross_entropy: f64::from_bits(t[1]),
        seed_error: f64::from_bits(t[2]),
        correct: t[3] as usize,
    }
}

/// A rank other than 0 prints nothing: its stdout and stderr go to
/// /dev/null. Panics still reach the terminal, through a copy of stderr.
fn quiet(rank: usize) {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::fd::{FromRawFd, IntoRawFd};
        let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
            return;
        };
        let null = null.into_raw_fd();
        // SAFETY: plain descriptor calls on descriptors this process owns.
        let saved = unsafe {
            let saved = libc::dup(2);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
            saved
        };
        if saved >= 0 {
            std::panic::set_hook(Box::new(move |info| {
                // SAFETY: `saved` stays open for the life of the process.
                let mut err = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(saved) });
                let _ = writeln!(err, "rank {rank}: {info}");
            }));
        }
    }
}
