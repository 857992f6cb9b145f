//! Ctrl-C and SIGTERM end a waiting command cleanly.
//!
//! Killed by the default action while blocked, `dmxp recv --follow` would leave its count in
//! the channel's wait counts and its record in the peer table until some other peer frees
//! them (PROTOCOL.md §11.9, §11.10). With a flag set by the signal instead, the command waits
//! in short slices, sees the flag between them, and returns through the handles' drops.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

/// The longest a waiting command takes to notice an interrupt.
pub const SLICE: Duration = Duration::from_millis(100);

/// Set once SIGINT or SIGTERM arrives.
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Replaces the default action of SIGINT and SIGTERM (terminate) by setting the flag.
    pub fn install() -> Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&flag))
                .with_context(|| format!("handling signal {signal}"))?;
        }
        Ok(Self(flag))
    }

    /// True once a signal asked the command to stop.
    pub fn requested(&self) -> bool {
        self.0.load(Relaxed)
    }
}
