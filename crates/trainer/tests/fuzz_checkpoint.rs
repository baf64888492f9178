//! Fuzzing the checkpoint reader inside `cargo test`, on a bounded budget:
//! arbitrary bytes, and mutations of valid checkpoints (truncation, flipped
//! bytes, the header's numbers and its length prefix overwritten with edge
//! values, the header's JSON edited: dtypes, shapes, offsets, the model
//! spec). Each input goes down the paths `trainer eval` and `trainer train
//! --resume` take: the bounded file reader, `read_model`, the memory
//! check, `Plan::new`, `load_safetensors`. None may panic; a refused file changes nothing and
//! gets a one-line message naming it.
//!
//! `GAPNET_FUZZ_CASES=N` sets the cases per harness; `PROPTEST_RNG_SEED=S`
//! explores other inputs (the default seed is fixed).

mod common;

use std::cell::RefCell;
use std::sync::OnceLock;

use graph::{footprint_bytes, preset, read_model, Arena, Init, Metadata, Plan, Shape};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

fn budget(default: u32) -> Config {
    common::fuzz::budget(default, 0x0063_6b70_7400)
}

const SOURCE: &str = "fuzzed.safetensors";
const INPUT: Shape = Shape { c: 3, h: 32, w: 32 };

fn plan() -> Plan {
    let mut p = Plan::new(&preset("seed-gap").unwrap(), INPUT, 4).unwrap();
    p.initialize(Init::He, 7);
    p.velocity_mut().iter_mut().enumerate().for_each(|(i, v)| *v = (i % 13) as f32 * 1e-3);
    p
}

/// Valid checkpoints as the trainer writes them: model (params) and state
/// (params and momentum), with the trainer's metadata.
fn valid() -> &'static [Vec<u8>; 2] {
    static FILES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    FILES.get_or_init(|| {
        let p = plan();
        let meta = Metadata::from([
            ("epoch".to_string(), "3".to_string()),
            ("batches_done".to_string(), "2".to_string()),
            ("classes".to_string(), r#"["airplane","ship"]"#.to_string()),
            ("norm_mean".to_string(), "[0.5,0.5,0.5]".to_string()),
            ("norm_std".to_string(), "[0.25,0.25,0.25]".to_string()),
        ]);
        [
            p.to_safetensors(&[Arena::Params], meta.clone()),
            p.to_safetensors(&[Arena::Params, Arena::Velocity], meta),
        ]
    })
}

thread_local! {
    /// The run's plan, built once per test thread (building one per case
    /// would take most of the budget); `exercise` restores it after each use.
    static PLAN: RefCell<Plan> = RefCell::new(plan());
    /// A folder for the file each case is written to.
    static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
}

/// Runs `bytes` through eval's and resume's paths.
fn exercise(bytes: &[u8]) {
    PLAN.with(|p| exercise_with(&mut p.borrow_mut(), bytes));
}

fn exercise_with(p: &mut Plan, bytes: &[u8]) {
    let one_line = |e: &dyn std::fmt::Display| {
        let msg = e.to_string();
        assert!(
            msg.starts_with(SOURCE) && !msg.contains('\n'),
            "not a one-line message naming the file: {msg:?}"
        );
    };
    // The file reader, where eval and resume start: it reads by the
    // framing, so it must return exactly the file, and refuse (in one
    // line) only files that the parser refuses as well.
    let read = DIR.with(|dir| {
        let path = dir.path().join(SOURCE);
        std::fs::write(&path, bytes).unwrap();
        graph::bounded::read_safetensors(&path, SOURCE)
    });
    match &read {
        Ok(back) => assert!(back == bytes, "the reader changed the file"),
        Err(e) => {
            one_line(e);
            assert!(read_model(bytes, SOURCE).is_err(), "the reader refused a readable file: {e}");
        }
    }
    // eval: the model the file describes.
    match read_model(bytes, SOURCE) {
        Ok((spec, input, _)) => {
            // What the trainer's memory check lets through (here with a small limit).
            if spec != *p.spec() && footprint_bytes(&spec, input, 4) < 1 << 30 {
                if let Ok(mut p) = Plan::new(&spec, input, 4) {
                    for arenas in [&[Arena::Params][..], &[Arena::Params, Arena::Velocity][..]] {
                        if let Err(e) = p.load_safetensors(arenas, bytes, SOURCE) {
                            one_line(&e);
                        }
                    }
                }
            }
        }
        Err(e) => one_line(&e),
    }
    // resume (and eval of a file of the run's own model): the run's plan.
    let (params, velocity) = (p.params().to_vec(), p.velocity().to_vec());
    for arenas in [&[Arena::Params, Arena::Velocity][..], &[Arena::Params][..]] {
        match p.load_safetensors(arenas, bytes, SOURCE) {
            Ok(_) => assert!(p.params().iter().chain(p.velocity()).all(|v| v.is_finite())),
            Err(e) => {
                one_line(&e);
                assert!(p.params() == params && p.velocity() == velocity, "a refused file changed the plan");
            }
        }
        p.params_mut().copy_from_slice(&params);
        p.velocity_mut().copy_from_slice(&velocity);
    }
}

/// The JSON header and the data of a safetensors file, if it has that shape.
fn split(bytes: &[u8]) -> Option<(Value, &[u8])> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    Some((header, &bytes[8 + n..]))
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn edge_number() -> impl Strategy<Value = i128> {
    prop_oneof![
        prop::sample::select(vec![
            0i128,
            1,
            2,
            3,
            -1,
            7,
            20,
            31,
            32,
            33,
            64,
            1 << 16,
            (1 << 31) - 1,
            1 << 32,
            1 << 40,
            i64::MAX as i128,
            u64::MAX as i128,
            u64::MAX as i128 + 1,
        ]),
        -1000i128..100_000,
    ]
}

/// One edit of a checkpoint.
#[derive(Clone, Debug)]
enum Edit {
    Truncate(u64),
    Flip(u64, u8),
    Insert(u64, Vec<u8>),
    /// Replace the `k`-th run of ASCII digits (anywhere in the file; the
    /// header holds most of them) with an edge number.
    Digits(u64, i128),
    /// Overwrite the 8-byte header length.
    Prefix(u64),
    /// Set a number inside the header's JSON, picked by a path of choices.
    Json(Vec<u64>, i128),
    /// Set a number of the model spec in the header: a field of a layer.
    Spec(u64, u64, i128),
    /// Set one of the input shape's numbers.
    Input(u64, i128),
    /// Set a tensor's dtype.
    Dtype(u64, &'static str),
    /// Remove a tensor from the header (or rename it).
    Drop(u64, bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<u64>().prop_map(Edit::Truncate),
        (any::<u64>(), 1u8..).prop_map(|(a, m)| Edit::Flip(a, m)),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<u64>(), edge_number()).prop_map(|(k, v)| Edit::Digits(k, v)),
        prop_oneof![Just(0u64), Just(1), Just(7), Just(u64::MAX), Just(1 << 40), any::<u64>()]
            .prop_map(Edit::Prefix),
        (prop::collection::vec(any::<u64>(), 1..5), edge_number()).prop_map(|(p, v)| Edit::Json(p, v)),
        (
            any::<u64>(),
            prop::sample::select(vec!["F16", "BF16", "F64", "I32", "U8", "BOOL", "F8_E4M3", "??"])
        )
            .prop_map(|(t, d)| Edit::Dtype(t, d)),
        (any::<u64>(), any::<bool>()).prop_map(|(t, r)| Edit::Drop(t, r)),
        (any::<u64>(), any::<u64>(), edge_number()).prop_map(|(l, f, v)| Edit::Spec(l, f, v)),
        (any::<u64>(), edge_number()).prop_map(|(k, v)| Edit::Input(k, v)),
    ]
}

/// `a` as a position in `0..len` (0 for an empty range).
fn pos(a: u64, len: usize) -> usize {
    ((len as u128 * a as u128) >> 64) as usize
}

/// The numbers in a JSON value, by a path of choices; also inside the
/// string-encoded JSON of our metadata (the model spec lives there).
fn set_number(v: &mut Value, path: &[u64], n: i128) {
    let number = || {
        i64::try_from(n)
            .map(Value::from)
            .or_else(|_| u64::try_from(n).map(Value::from))
            .unwrap_or_else(|_| Value::from(n as f64))
    };
    match v {
        Value::Number(_) => *v = number(),
        Value::Array(items) if !items.is_empty() => {
            let i = pos(path.first().copied().unwrap_or(0), items.len());
            set_number(&mut items[i], path.get(1..).unwrap_or(&[]), n);
        }
        Value::Object(map) if !map.is_empty() => {
            let i = pos(path.first().copied().unwrap_or(0), map.len());
            let key = map.keys().nth(i).unwrap().clone();
            set_number(map.get_mut(&key).unwrap(), path.get(1..).unwrap_or(&[]), n);
        }
        Value::String(s) => {
            if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                set_number(&mut inner, path, n);
                *s = inner.to_string();
            }
        }
        _ => {}
    }
}

/// A `Spec` or `Input` edit of our metadata (a JSON object in a string,
/// whose `spec` and `input` entries are JSON in strings again).
fn edit_metadata(header: &mut Value, e: &Edit) {
    let Some(Value::String(meta)) = header.get_mut("__metadata__").and_then(|m| m.get_mut("gapnet")) else {
        return;
    };
    let Ok(mut inner) = serde_json::from_str::<Value>(meta) else { return };
    let (key, path) = match e {
        Edit::Spec(layer, field, n) => ("spec", (vec![*layer, *field], *n)),
        Edit::Input(k, n) => ("input", (vec![*k], *n)),
        _ => return,
    };
    let Some(Value::String(text)) = inner.get_mut(key) else { return };
    let Ok(mut value) = serde_json::from_str::<Value>(text) else { return };
    let target = if key == "spec" { value.get_mut("layers") } else { Some(&mut value) };
    if let Some(target) = target {
        set_number(target, &path.0, path.1);
    }
    *text = value.to_string();
    *meta = inner.to_string();
}

fn tensor_names(header: &Value) -> Vec<String> {
    header
        .as_object()
        .map(|m| m.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default()
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let len = bytes.len();
    match e {
        Edit::Truncate(a) => bytes.truncate(pos(*a, len)),
        Edit::Flip(a, m) if len > 0 => bytes[pos(*a, len)] ^= m,
        Edit::Insert(a, b) => {
            let at = pos(*a, len + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Edit::Digits(k, n) => {
            let runs: Vec<(usize, usize)> = {
                let mut runs = Vec::new();
                let mut i = 0;
                while i < len {
                    if bytes[i].is_ascii_digit() {
                        let start = i;
                        while i < len && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                        runs.push((start, i));
                    } else {
                        i += 1;
                    }
                }
                runs
            };
            if !runs.is_empty() {
                let (a, b) = runs[pos(*k, runs.len())];
                bytes.splice(a..b, n.to_string().into_bytes());
            }
        }
        Edit::Prefix(v) if len >= 8 => bytes[..8].copy_from_slice(&v.to_le_bytes()),
        Edit::Json(..) | Edit::Dtype(..) | Edit::Drop(..) | Edit::Spec(..) | Edit::Input(..) => {
            let Some((mut header, data)) = split(bytes) else { return };
            let names = tensor_names(&header);
            match e {
                Edit::Json(path, n) => set_number(&mut header, path, *n),
                Edit::Spec(..) | Edit::Input(..) => edit_metadata(&mut header, e),
                Edit::Dtype(t, d) if !names.is_empty() => {
                    header[&names[pos(*t, names.len())]]["dtype"] = Value::from(*d);
                }
                Edit::Drop(t, rename) if !names.is_empty() => {
                    let name = &names[pos(*t, names.len())];
                    let tensor = header.as_object_mut().unwrap().remove(name).unwrap();
                    if *rename {
                        header[format!("{name}.x")] = tensor;
                    }
                }
                _ => {}
            }
            *bytes = join(&header, data);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(budget(3000))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_plausible_header_length(n in 0u64..200, rest in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend(rest);
        exercise(&bytes);
    }

    #[test]
    fn mutated_checkpoints(which in 0usize..2, edits in prop::collection::vec(edit(), 1..4)) {
        let mut bytes = valid()[which].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        exercise(&bytes);
    }
}

#[test]
fn the_edits_reach_every_check() {
    // The valid files load; each kind of edit provokes its own refusal.
    exercise(&valid()[0]);
    exercise(&valid()[1]);
    let state = &valid()[1];
    let refusal = |e: Edit| {
        let mut bytes = state.clone();
        apply(&mut bytes, &e);
        let mut p = plan();
        p.load_safetensors(&[Arena::Params, Arena::Velocity], &bytes, SOURCE).unwrap_err().to_string()
    };
    assert!(refusal(Edit::Truncate(u64::MAX / 2)).contains("not a readable safetensors file"));
    assert!(refusal(Edit::Prefix(u64::MAX)).contains("not a readable safetensors file"));
    assert!(refusal(Edit::Dtype(0, "I32")).contains("is I32, expected F32"));
    assert!(refusal(Edit::Drop(0, true)).contains("is missing"));
    // The file ends with the last velocity value: give it an all-ones exponent.
    let n = state.len();
    let mut bytes = state.clone();
    for e in [Edit::Flip(u64::MAX, bytes[n - 1] ^ 0x7f), Edit::Flip(u64::MAX - (u64::MAX / n as u64), 0x80)] {
        apply(&mut bytes, &e);
    }
    let e =
        plan().load_safetensors(&[Arena::Params, Arena::Velocity], &bytes, SOURCE).unwrap_err().to_string();
    assert!(e.contains("tensor velocity.") && e.contains(" holds "), "{e}");
}
