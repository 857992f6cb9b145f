//! The atomics the core uses: `core`'s normally, loom's when the crate is model-checked
//! (`RUSTFLAGS="--cfg loom"`).

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::hint::spin_loop;
#[cfg(loom)]
pub use loom::hint::spin_loop;
