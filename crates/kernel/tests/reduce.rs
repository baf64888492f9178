//! `reduce::sum_in_order`: lane-ordered sums, bit for bit, whatever the
//! number of threads.

mod common;

use common::rng;
use kernel::reduce::{add_in_order, sum_in_order};
use rand::Rng;
use rayon::ThreadPoolBuilder;

/// Lanes of values spread over eight decades, so the order of addition
/// changes the rounded result. Each lane is a little longer than `len`.
fn lanes(seed: u64, lanes: usize, len: usize) -> Vec<Vec<f32>> {
    let mut rng = rng(seed);
    (0..lanes)
        .map(|_| {
            (0..len + 7)
                .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-4..4)))
                .collect()
        })
        .collect()
}

/// `lane(0)[i] + lane(1)[i] + ...`, one element at a time.
fn sequential(data: &[Vec<f32>], len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let mut acc = data[0][i];
            for lane in &data[1..] {
                acc += lane[i];
            }
            acc
        })
        .collect()
}

fn run(data: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; len];
    sum_in_order(&mut out, data.len(), |l| data[l].as_slice());
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn sums_in_lane_order_bit_for_bit() {
    for len in [20000, 1, 5, 8191, 8192, 8193, 2 * 8192 + 3] {
        for n_lanes in [1, 3, 8] {
            let data = lanes(len as u64 * 10 + n_lanes as u64, n_lanes, len);
            let got = run(&data, len);
            assert_eq!(bits(&got), bits(&sequential(&data, len)), "len {len}, {n_lanes} lanes");
        }
    }
    // the check is sensitive to order: summing the lanes backwards differs
    let data = lanes(99, 8, 20000);
    let reversed: Vec<Vec<f32>> = data.iter().rev().cloned().collect();
    assert_ne!(bits(&sequential(&data, 20000)), bits(&sequential(&reversed, 20000)));
}

#[test]
fn zero_lanes_write_zeros() {
    let mut out = vec![f32::NAN; 20000];
    let empty: Vec<Vec<f32>> = Vec::new();
    sum_in_order(&mut out, 0, |l| empty[l].as_slice());
    assert!(out.iter().all(|&v| v.to_bits() == 0));
}

#[test]
fn same_bits_in_pools_of_one_and_two_threads() {
    for n_lanes in [1, 3, 8] {
        let len = 20000;
        let data = lanes(7 + n_lanes as u64, n_lanes, len);
        let want = bits(&sequential(&data, len));
        for threads in [1, 2] {
            let pool = ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            let got = pool.install(|| run(&data, len));
            assert_eq!(bits(&got), want, "{threads} threads, {n_lanes} lanes");
        }
        // and from the global pool
        assert_eq!(bits(&run(&data, len)), want, "global pool, {n_lanes} lanes");
    }
}

/// A sum passed along in pieces (lanes `0..a` summed, then `a..b` added,
/// then `b..8`), as the ranks of a job pass it, gives the one-process bits
/// for every split, including pieces with no lanes.
#[test]
fn a_sum_continued_in_pieces_is_the_whole_sum() {
    let len = 20000;
    let data = lanes(42, 8, len);
    let want = bits(&sequential(&data, len));
    for (a, b) in [(1, 8), (4, 4), (2, 5), (3, 6), (8, 8), (1, 1)] {
        let mut out = vec![f32::NAN; len];
        sum_in_order(&mut out, a, |l| data[l].as_slice());
        add_in_order(&mut out, a..b, |l| data[l].as_slice());
        add_in_order(&mut out, b..8, |l| data[l].as_slice());
        assert_eq!(bits(&out), want, "pieces 0..{a}, {a}..{b}, {b}..8");
    }
    // adding a piece twice, or skipping one, changes the result
    let mut out = vec![f32::NAN; len];
    sum_in_order(&mut out, 4, |l| data[l].as_slice());
    add_in_order(&mut out, 5..8, |l| data[l].as_slice());
    assert_ne!(bits(&out), want);
}
