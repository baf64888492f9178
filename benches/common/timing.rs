//! Self-timed, interleaved measurements for the benches that print tables
//! (`summary`, `kernels`): every job is calibrated to blocks of about
//! `block_secs`, then all blocks run round-robin, one block per job per
//! round, so that the machine's drift hits every job alike.

use std::time::Instant;

/// How long and how often to measure.
pub struct Cfg {
    pub warm_secs: f64,
    pub block_secs: f64,
    pub rounds: usize,
}

/// A measurement: `f(iters)` runs `iters` calls of the measured thing.
pub struct Job<'a> {
    f: Box<dyn FnMut(u64) + 'a>,
    iters: u64,
    /// Seconds per call, one entry per round.
    pub secs: Vec<f64>,
}

impl<'a> Job<'a> {
    pub fn new(f: impl FnMut(u64) + 'a) -> Self {
        Job { f: Box::new(f), iters: 1, secs: Vec::new() }
    }
}

/// Warm up and calibrate every job, then run the rounds.
pub fn run(jobs: &mut [Job], cfg: &Cfg) {
    for job in jobs.iter_mut() {
        let t = Instant::now();
        let mut calls = 0u64;
        while calls < 2 || t.elapsed().as_secs_f64() < cfg.warm_secs {
            (job.f)(1);
            calls += 1;
        }
        let per_call = t.elapsed().as_secs_f64() / calls as f64;
        job.iters = ((cfg.block_secs / per_call).round() as u64).max(1);
    }
    for round in 0..cfg.rounds {
        eprint!("\rround {}/{}", round + 1, cfg.rounds);
        for job in jobs.iter_mut() {
            let t = Instant::now();
            (job.f)(job.iters);
            job.secs.push(t.elapsed().as_secs_f64() / job.iters as f64);
        }
    }
    eprintln!();
}

/// The `q`-quantile of `v` (0 <= q <= 1), interpolating linearly.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = q * (s.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (at - lo as f64)
}

pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// A figure measured once per round: its median and its spread, half the
/// interquartile range relative to the median.
#[derive(Clone, Copy, Debug)]
pub struct Est {
    pub median: f64,
    pub spread: f64,
}

pub fn est(v: &[f64]) -> Est {
    let m = median(v);
    Est { median: m, spread: (quantile(v, 0.75) - quantile(v, 0.25)) / 2.0 / m.abs() }
}
