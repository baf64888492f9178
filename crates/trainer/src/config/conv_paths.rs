//! Which path each convolution of a run takes (im2col + SGEMM, or the
//! direct SIMD kernels): the plan's fixed default per ISA and layer shape,
//! unless `GAPNET_CONV_PATHS` asks for others. A run records its paths in
//! `config.json` (`conv_paths`, beside `isa`), because its bits depend on
//! them: `--resume` and every rank of an MPI job build the plan with the
//! recorded ones.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use graph::{ConvPath, LayerSpec, ModelSpec, Plan};

/// The variable that chooses paths: `im2col` or `direct` for every
/// convolution, or `conv1=im2col,conv3=direct` for some (the others keep
/// their default).
pub const CONV_PATHS_ENV: &str = "GAPNET_CONV_PATHS";

/// A run's paths, by node name (`conv1`), as `config.json` stores them.
pub type Paths = BTreeMap<String, String>;

/// One request of [`CONV_PATHS_ENV`]: a node (`None`: every convolution)
/// and its path.
type Asked = (Option<String>, ConvPath);

/// What [`CONV_PATHS_ENV`] asks for; `None` when the variable is unset or
/// empty.
fn asked() -> Result<Option<Vec<Asked>>> {
    let Some(value) = std::env::var_os(CONV_PATHS_ENV) else { return Ok(None) };
    let value = value.to_string_lossy();
    if value.trim().is_empty() {
        return Ok(None);
    }
    let items = value.split(',').map(str::trim).filter(|i| !i.is_empty());
    let parsed = items.map(|item| {
        let (node, path) = match item.split_once('=') {
            Some((node, path)) => (Some(node.trim().to_string()), path),
            None => (None, item),
        };
        let path = path.parse::<ConvPath>().map_err(|e| anyhow!("{CONV_PATHS_ENV}={value}: {e}"))?;
        Ok((node, path))
    });
    parsed.collect::<Result<Vec<_>>>().map(Some)
}

/// The convolutions' node names of `spec`: `conv1`, `conv2`, ... in layer
/// order (the plan numbers them so).
fn conv_names(spec: &ModelSpec) -> Vec<String> {
    let count = spec.layers.iter().filter(|l| matches!(l, LayerSpec::Conv { .. })).count();
    (1..=count).map(|k| format!("conv{k}")).collect()
}

/// `recorded` with what [`CONV_PATHS_ENV`] asks for put over it; a node
/// name the model lacks is an error naming the variable.
fn with_asked(spec: &ModelSpec, recorded: Option<&Paths>) -> Result<Option<Paths>> {
    let Some(asked) = asked()? else { return Ok(recorded.cloned()) };
    let names = conv_names(spec);
    let mut paths = recorded.cloned().unwrap_or_default();
    for (node, path) in asked {
        match node {
            Some(node) if names.contains(&node) => {
                paths.insert(node, path.name().to_string());
            }
            Some(node) => bail!(
                "{CONV_PATHS_ENV}: {} has no convolution {node} (it has {})",
                spec.name,
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
            None => names.iter().for_each(|n| {
                paths.insert(n.clone(), path.name().to_string());
            }),
        }
    }
    Ok(Some(paths))
}

/// The paths a fresh run asks for (the rest are the plan's defaults; see
/// [`record`]).
pub fn for_new_run(spec: &ModelSpec) -> Result<Option<Paths>> {
    with_asked(spec, None)
}

/// The paths a resumed run continues with: the recorded ones (when it goes
/// on with the kernels it was trained with; another ISA starts from its
/// defaults), with what [`CONV_PATHS_ENV`] asks for over them, saying so
/// when that changes a recorded path.
pub fn for_resume(spec: &ModelSpec, recorded: Option<&Paths>, same_isa: bool) -> Result<Option<Paths>> {
    let kept = recorded.filter(|_| same_isa);
    let paths = with_asked(spec, kept)?;
    if let (Some(before), Some(now)) = (kept, &paths) {
        let changed: Vec<String> = now
            .iter()
            .filter(|(node, path)| before.get(*node).is_some_and(|b| b != *path))
            .map(|(node, path)| format!("{node} {} -> {path}", before[node]))
            .collect();
        if !changed.is_empty() {
            println!(
                "note: {CONV_PATHS_ENV} changes the paths this run was trained with ({}): the run continues, \
                 but not bit for bit as an uninterrupted run would",
                changed.join(", ")
            );
        }
    }
    Ok(paths)
}

/// Put `paths` on `plan`; errors name the node and say why the path cannot
/// run there.
pub fn apply(plan: &mut Plan, paths: Option<&Paths>) -> Result<()> {
    for (node, path) in paths.into_iter().flatten() {
        let parsed = path.parse::<ConvPath>().map_err(|e| anyhow!("conv_paths: {node}: {e}"))?;
        plan.set_conv_path(node, parsed)
            .map_err(|e| anyhow!("{e} ({CONV_PATHS_ENV}, or conv_paths in the run's config.json)"))?;
    }
    Ok(())
}

/// Every convolution's path on `plan`, to record.
pub fn record(plan: &Plan) -> Paths {
    plan.conv_paths().into_iter().map(|(node, path)| (node.to_string(), path.name().to_string())).collect()
}

/// `convolutions: conv1 direct, conv2 direct (GAPNET_CONV_PATHS=... to
/// choose)`, printed below the engine line; `None` without convolutions.
pub fn line(paths: &Paths) -> Option<String> {
    let mut named: Vec<(&String, &String)> = paths.iter().collect();
    // conv2 before conv10
    named.sort_by_key(|(node, _)| (node.len(), node.as_str()));
    let text: Vec<String> = named.iter().map(|(node, path)| format!("{node} {path}")).collect();
    let why = match std::env::var_os(CONV_PATHS_ENV) {
        Some(v) if !v.is_empty() => format!("{CONV_PATHS_ENV}={}", v.to_string_lossy()),
        _ => format!("{CONV_PATHS_ENV}=im2col|direct|conv1=im2col,... to choose"),
    };
    (!text.is_empty()).then(|| format!("convolutions: {} ({why})", text.join(", ")))
}
