//! A training step allocates nothing once the plan is built.
//!
//! One exception, measured rather than hidden: matrixmultiply 0.3 mallocs
//! its packing buffer inside every `sgemm` call (`make_packing_buffer` in
//! its gemm.rs, aligned to the SIMD width: 32 or 64 bytes) and frees it
//! before returning; it offers no way to pass a buffer in. The allocator
//! below counts those apart, by their alignment (nothing in the engine or
//! in rayon asks for 32-byte alignment), proves they are all freed again,
//! and requires every other allocation count to be zero. Where the SIMD
//! kernels run every layer (AVX-512, or AVX2 on layers of up to 64 planes:
//! they call no SGEMM), it requires zero allocations of any kind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::SeqCst};

use graph::{preset, ConvPath, Isa, Loss, Plan, Reduction, Sgd, Shape};

struct Counting;

static OTHER: AtomicUsize = AtomicUsize::new(0);
static SGEMM_PACKING: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(layout: Layout) {
    if layout.align() >= 32 {
        SGEMM_PACKING.fetch_add(1, SeqCst);
    } else {
        OTHER.fetch_add(1, SeqCst);
    }
    LIVE_BYTES.fetch_add(layout.size() as isize, SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(Layout::from_size_align_unchecked(new_size, layout.align()));
        LIVE_BYTES.fetch_sub(layout.size() as isize, SeqCst);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, SeqCst);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn batch(n: usize) -> (Vec<f32>, Vec<u32>) {
    let x = (0..n * 3 * 32 * 32).map(|i| (i * 7919 % 1000) as f32 / 1000.0).collect();
    let y = (0..n).map(|i| (i % 2) as u32).collect();
    (x, y)
}

/// One test (not several) so no other test thread allocates meanwhile.
#[test]
fn training_and_inference_allocate_nothing_after_warm_up() {
    let isas = Isa::tested();
    eprintln!("no_alloc: ISAs {isas:?}");
    // deep-gap (batch norm: the lanes meet) on smaller images, to keep it quick.
    let models = [("seed-fc", 32), ("seed-gap", 32), ("deep-gap", 16)];
    let cases: Vec<_> = models.into_iter().flat_map(|m| isas.iter().map(move |&i| (m, i))).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        for ((name, side), isa) in cases {
            let input = Shape::new(3, side, side);
            let mut plan = Plan::for_isa(&preset(name).unwrap(), input, 200, isa).unwrap();
            let (x, y) = batch(200);
            let mut logits = vec![0.0f32; 200 * plan.classes()];
            let sgd = Sgd { lr: 0.01, momentum: 0.9, weight_decay: 5e-4, clip_dense: false };
            let run = |plan: &mut Plan, logits: &mut [f32]| {
                for n in [200, 64, 7] {
                    let (x, y) = (&x[..n * input.len()], &y[..n]);
                    plan.train_step(x, y, Loss::CrossEntropy, Reduction::Mean, &sgd);
                    plan.train_step(x, y, Loss::SquaredError, Reduction::Sum, &Sgd::plain(0.01));
                    plan.train_step(x, y, Loss::SeedSquaredError, Reduction::Sum, &Sgd::seed(0.01));
                    plan.evaluate(x, y, Loss::CrossEntropy);
                    plan.predict(x, &mut logits[..n * 2]);
                }
            };
            run(&mut plan, &mut logits); // warm-up: thread-locals, lazy statics
            let (other, packing, live) = (OTHER.load(SeqCst), SGEMM_PACKING.load(SeqCst), LIVE_BYTES.load(SeqCst));
            run(&mut plan, &mut logits);
            let other = OTHER.load(SeqCst) - other;
            let packing = SGEMM_PACKING.load(SeqCst) - packing;
            let leaked = LIVE_BYTES.load(SeqCst) - live;
            println!("{name} {isa}: {other} allocations, {packing} sgemm packing buffers (all freed: {leaked} bytes live)");
            assert_eq!(other, 0, "{name} {isa}: the hot path allocated {other} times");
            assert_eq!(leaked, 0, "{name} {isa}: {leaked} bytes still allocated after the steps");
            let simd_only =
                plan.isa() != Isa::Portable && plan.conv_paths().iter().all(|(_, p)| *p == ConvPath::Direct);
            if simd_only {
                // the SIMD kernels replace every SGEMM
                assert_eq!(packing, 0, "{name}: an SGEMM ran although the {} kernels run every layer", plan.isa());
            } else {
                assert!(packing > 0, "{name} {isa}: the im2col path ran no SGEMM");
            }
        }
    });
}
