//! Every layer of `seed-fc` and `seed-gap`, forward and backward
//! separately, at batch 1, 64 and 256, run the way the engine runs it: the
//! batch split into lanes run by rayon, each lane walking its images in
//! chunks through single-threaded kernels with its own scratch (see
//! `common::Replica`, checked bit-identical against `Plan::forward_backward`
//! before anything is timed). So the per-layer times add up to about the
//! step time (the rest is the gradient reduction, the SGD update and one
//! rayon fork/join per layer instead of one per step).
//!
//! Groups are `layer/<stage>/<forward|backward>`, one benchmark per batch
//! size, throughput in images (criterion prints images/s as elem/s):
//! - `conv1`..`conv3`, `relu1`..`relu3`, `pool1`, `pool2`: the trunk, the
//!   same nodes in both presets (checked), measured once;
//! - `fc_head`: seed-fc's FC 1280->120, ReLU, FC 120->84, ReLU, FC 84->2;
//! - `gap_head`: seed-gap's global average pool and FC 20->2;
//! - `softmax_ce`: softmax and cross-entropy over the 2 logits.
//!
//! `cargo bench --bench layers -- conv2` runs a subset;
//! `-- --warm-up-time 0.1 --measurement-time 0.2` makes a quick pass.

mod common;

use std::time::Duration;

use common::{stages, Setup, PRESETS};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BATCHES: [usize; 3] = [1, 64, 256];

fn layers(c: &mut Criterion) {
    // setups[preset][batch]
    let mut setups: Vec<Vec<Setup>> =
        PRESETS.iter().map(|name| BATCHES.iter().map(|&n| Setup::new(name, n)).collect()).collect();
    let trunk_len = common::head_start(setups[0][0].plan.nodes());
    for s in &setups[1..] {
        let (a, b) = (&setups[0][0].plan.nodes()[..trunk_len], &s[0].plan.nodes()[..trunk_len]);
        assert!(
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.op == b.op),
            "the presets' trunks differ; bench them separately"
        );
    }
    for (p, row) in setups.iter_mut().enumerate() {
        for stage in stages(row[0].plan.nodes()) {
            // The trunk is measured once (on the first preset).
            let trunk = stage.nodes.end <= trunk_len && !stage.loss;
            if (trunk || stage.loss) && p > 0 {
                continue;
            }
            for backward in [false, true] {
                let dir = if backward { "backward" } else { "forward" };
                let mut group = c.benchmark_group(format!("layer/{}/{dir}", stage.name));
                for (b, &n) in BATCHES.iter().enumerate() {
                    let Setup { replica, x, labels, .. } = &mut row[b];
                    group.throughput(Throughput::Elements(n as u64));
                    group.bench_function(BenchmarkId::from_parameter(n), |bench| {
                        if backward {
                            bench.iter(|| replica.stage_backward(&stage, x, labels))
                        } else {
                            bench.iter(|| replica.stage_forward(&stage, x, labels))
                        }
                    });
                }
                group.finish();
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(20);
    targets = layers
}
criterion_main!(benches);
