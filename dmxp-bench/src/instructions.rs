//! Instruction counts beside the throughput rows: the JSON that `scripts/instructions.sh`
//! writes (callgrind over `examples/hotpath.rs`, one thread doing send + receive), read by
//! `dmxp-bench --instructions PATH`.
//!
//! Its shape: `{"tool": "callgrind", "iterations": N, "rows": [{"mode": "facade",
//! "payload": 32, "messages": M, "ir_setup": .., "ir_total": .., "instructions_per_msg": 563.2},
//! ...]}`; only `rows[].mode`, `payload` and `instructions_per_msg` are read here.

use std::path::Path;

use serde::Deserialize;

use crate::child::Res;
use crate::spec::System;

/// One mode at one payload.
#[derive(Clone, Debug, Deserialize)]
pub struct Count {
    /// The hotpath mode (`facade`, `batch`, `loan`, `arrayqueue`, `bare-ring`, ...).
    pub mode: String,
    /// Payload bytes per message.
    pub payload: usize,
    /// Instructions per send + receive of one message (setup subtracted).
    pub instructions_per_msg: f64,
}

#[derive(Deserialize)]
struct File {
    rows: Vec<Count>,
}

/// The counts in the JSON file at `path`.
pub fn load(path: &Path) -> Res<Vec<Count>> {
    let text =
        std::fs::read(path).map_err(|e| format!("--instructions {}: {e}", path.display()))?;
    let file: File = serde_json::from_slice(&text)
        .map_err(|e| format!("--instructions {}: {e}", path.display()))?;
    Ok(file.rows)
}

/// The benchmark system whose hot path a hotpath mode is, if any: `facade` (send +
/// receive_into) is `dmxp`, `batch` is `dmxp-batch`, `loan` is `dmxp-loan`, `inplace` (send +
/// a whole in-place read) is `dmxp-inplace`, `arrayqueue` and `bare-ring` are themselves. The
/// core modes, `facade-waiter` and `loan-copy` have no row of their own.
#[must_use]
pub fn system_of(mode: &str) -> Option<System> {
    match mode {
        "facade" => Some(System::DmxpSingle),
        "batch" => Some(System::DmxpBatch),
        "loan" => Some(System::DmxpLoan),
        "inplace" => Some(System::DmxpInPlace),
        "arrayqueue" => Some(System::ArrayQueue),
        "bare-ring" => Some(System::BareRing),
        _ => None,
    }
}

/// The count for `system` at `payload`, if `counts` has one.
#[must_use]
pub fn lookup(counts: &[Count], system: System, payload: usize) -> Option<f64> {
    counts
        .iter()
        .find(|c| c.payload == payload && system_of(&c.mode) == Some(system))
        .map(|c| c.instructions_per_msg)
}
