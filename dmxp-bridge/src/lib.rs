//! A bridge between DMXP shared-memory channels and [Zenoh](https://zenoh.io), for pipelines
//! that span more than one host.
//!
//! One bridge process per host. An **export** route consumes a local channel and publishes
//! each message, wrapped in an [`envelope`], to a Zenoh key expression; an **import** route
//! subscribes to a key expression and produces each envelope's payload into a local channel.
//! Producers and consumers keep their DMXP code on both sides:
//!
//! ```text
//!  host A                                                      host B
//!  producer ─▶ [segment A, ch 1] ─▶ export ══ Zenoh ══▶ import ─▶ [segment B, ch 1] ─▶ consumers
//! ```
//!
//! docs/MULTI_HOST.md states the delivery semantics (ordering per source channel,
//! at-most-once across a bridge restart, bounded waits on a full ring), the loop filter, the
//! configuration file and the counters the bridge prints.
//!
//! - [`envelope`]: the wire format of one message on Zenoh.
//! - [`config`]: routes and the Zenoh session, from a TOML file and flags.
//! - [`counters`]: what each route has done, printed as JSON lines.
//! - [`bridge`]: the routes' threads and the process's life (ready, stats, final).
//! - [`cli`]: the command line, shared by `dmxp-bridge` and `dmxp bridge`.

pub mod bridge;
pub mod cli;
pub mod config;
pub mod counters;
pub mod envelope;
