//! Plans a static layer sequence once and runs it with no allocation.
//!
//! ```text
//! ModelSpec (data) --Plan::new--> Plan (shapes checked, arenas allocated)
//! Plan::forward_backward -> Plan::grads -> Plan::sgd_step
//! ```
//!
//! - [`spec`]: layer specs and the presets (`seed-fc`, `seed-gap`, ...).
//! - [`ops`]: every layer's operation, defined once: shapes, parameters,
//!   scratch, forward and backward (where to add a layer).
//! - [`plan`]: shape inference, named parameter tensors, the arenas.
//! - [`exec`]: forward, backward, evaluate, predict over lanes of images,
//!   and the observed step (per-node timings).
//! - [`optim`]: SGD with momentum and weight decay (and the original
//!   engine's clipped dense step).
//! - [`checkpoint`]: parameters and optimizer state as safetensors.
//! - [`bounded`]: reading untrusted files (regular files only, size limits)
//!   and refusing to write over anything but a regular file.
//! - [`brief`]: shortening values and lists so that messages stay one line.
//! - [`inspect`]: read-only health checks (dead ReLUs) and a memory bound.
//! - [`probe`]: looking inside: per-node activations, logit gradients,
//!   class activation maps and plane pruning (allocates; not the hot path).

pub mod bounded;
pub mod brief;
pub mod checkpoint;
pub mod exec;
pub mod inspect;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod probe;
pub mod spec;

pub use checkpoint::{read_model, write_atomic, Arena, CheckpointError, Metadata};
pub use exec::{lane_range, lanes_images, Alone, Event, Meet, Observer, Phase, Reduction};
pub use inspect::footprint_bytes;
pub use kernel::{argmax, isa, ConvPath, Isa, Loss, LossSums};
pub use ops::Op;
pub use optim::{clipped_lr, sgd_update, Sgd};
pub use plan::{Init, Node, Plan, PlanError, Shape, Tensor, LANES, MAX_CHUNK};
pub use probe::{ClassMaps, Head, ProbeError, Trace};
pub use spec::{preset, LayerSpec, ModelSpec, PRESETS};
