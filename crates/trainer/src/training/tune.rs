//! `--tune`: every convolution timed on each path this CPU runs, and the
//! fastest kept. A measured choice, so two tuned runs may choose
//! differently (and then their bits differ); the choice is recorded in
//! `config.json` like any path, so `--resume` and every MPI rank use it.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use graph::{ConvPath, Event, Observer, Shape};

use super::build;
use crate::config::conv_paths::{self, Paths, CONV_PATHS_ENV};
use crate::config::RunConfig;

/// Timed steps per path, after one to warm up.
const STEPS: usize = 5;

/// Thread-time per node, summed over lanes, passes and steps.
struct NodeTimes(Vec<AtomicU64>);

impl Observer for NodeTimes {
    fn node(&self, event: Event) {
        if let Some(t) = self.0.get(event.node) {
            t.fetch_add(event.nanos, Ordering::Relaxed);
        }
    }
}

/// The fastest path of each convolution of `config`'s model for `input`
/// images at the run's batch, and one line saying what was measured.
pub fn tune(config: &RunConfig, input: Shape) -> Result<(Paths, String)> {
    if std::env::var_os(CONV_PATHS_ENV).is_some_and(|v| !v.is_empty()) {
        bail!("--tune and {CONV_PATHS_ENV} both choose the convolutions' paths: use one of them");
    }
    let mut plan = build(config, input, config.batch)?;
    plan.initialize(config.init(), config.seed);
    let x: Vec<f32> =
        (0..config.batch * input.len()).map(|i| ((i * 7919) % 251) as f32 / 251.0 - 0.5).collect();
    let labels: Vec<u32> = (0..config.batch).map(|i| (i % plan.classes()) as u32).collect();
    let nodes: Vec<(usize, String)> = plan
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| n.conv_path.is_some())
        .map(|(i, n)| (i, n.name.clone()))
        .collect();
    // Per path, the seconds of each convolution that could take it.
    let mut timed: Vec<(ConvPath, Vec<Option<f64>>)> = Vec::new();
    for path in ConvPath::ALL {
        let ran: Vec<bool> = nodes.iter().map(|(_, name)| plan.set_conv_path(name, path).is_ok()).collect();
        let times = NodeTimes((0..=plan.nodes().len()).map(|_| AtomicU64::new(0)).collect());
        plan.forward_backward(&x, &labels, config.loss(), config.reduction());
        for _ in 0..STEPS {
            plan.forward_backward_observed(&x, &labels, config.loss(), config.reduction(), &times);
        }
        let secs = nodes
            .iter()
            .zip(&ran)
            .map(|((i, _), &ran)| {
                ran.then(|| times.0[*i].load(Ordering::Relaxed) as f64 / 1e9 / STEPS as f64)
            })
            .collect();
        timed.push((path, secs));
    }
    let mut paths = Paths::new();
    let mut said = Vec::new();
    for (k, (_, name)) in nodes.iter().enumerate() {
        let options: Vec<(ConvPath, f64)> = timed.iter().filter_map(|(p, s)| s[k].map(|s| (*p, s))).collect();
        let Some(&(best, _)) = options.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else { continue };
        paths.insert(name.clone(), best.name().to_string());
        let each: Vec<String> =
            options.iter().map(|(p, s)| format!("{} {:.2} ms", p.name(), s * 1e3)).collect();
        said.push(format!("{name} {} ({})", best.name(), each.join(" vs ")));
    }
    conv_paths::apply(&mut plan, Some(&paths))?;
    let line = format!(
        "tuned {} convolutions ({STEPS} steps at batch {} each way, thread-time per step): {}",
        config.spec.name,
        config.batch,
        said.join(", ")
    );
    Ok((paths, line))
}
