//! What is measured: the systems, the scenarios, and what a child process is told and reports.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A way to move messages between a producer and a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// DMXP, one `send` / `receive_into` per message.
    #[serde(rename = "dmxp")]
    DmxpSingle,
    /// DMXP, `send_batch` / `receive_batch_with` of up to [`BATCH`] messages.
    DmxpBatch,
    /// DMXP zero-copy: the producer writes a loaned slot in place, the consumer reads the
    /// message where it lies (`receive_in_place`).
    DmxpLoan,
    /// DMXP, a copying `send` and a zero-copy receive that reads every word of the message
    /// where it lies (`receive_in_place` + `Payload::words`): the in-place read against
    /// [`System::DmxpSingle`]'s copy out by `receive_into`.
    #[serde(rename = "dmxp-inplace")]
    DmxpInPlace,
    /// A Unix domain socket pair of type `SOCK_SEQPACKET` (message boundaries kept).
    Uds,
    /// An anonymous pipe with fixed-size messages.
    Pipe,
    /// crossbeam's `ArrayQueue<[u8; N]>` between threads of one process.
    #[serde(rename = "arrayqueue")]
    ArrayQueue,
    /// Two processes handing a token through one `AtomicU64` in shared memory.
    Floor,
    /// The layout floor: a minimal Vyukov bounded ring in the run's shared memory over slots
    /// of DMXP's size and alignment, with only a sequence, a length and the payload
    /// ([`crate::bare_ring`]).
    BareRing,
    /// iceoryx2, run by an external peer program (`--iceoryx2-peer`); 1->1 throughput and
    /// spin latency only.
    Iceoryx2,
}

/// Messages per batch call for [`System::DmxpBatch`].
pub const BATCH: usize = 16;

impl System {
    /// Every system, in the order runs and tables use.
    pub const ALL: [System; 10] = [
        System::DmxpSingle,
        System::DmxpBatch,
        System::DmxpLoan,
        System::DmxpInPlace,
        System::Uds,
        System::Pipe,
        System::ArrayQueue,
        System::Floor,
        System::BareRing,
        System::Iceoryx2,
    ];

    /// The name used on the command line, in tables and in JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            System::DmxpSingle => "dmxp",
            System::DmxpBatch => "dmxp-batch",
            System::DmxpLoan => "dmxp-loan",
            System::DmxpInPlace => "dmxp-inplace",
            System::Uds => "uds",
            System::Pipe => "pipe",
            System::ArrayQueue => "arrayqueue",
            System::Floor => "floor",
            System::BareRing => "bare-ring",
            System::Iceoryx2 => "iceoryx2",
        }
    }

    /// The system a [`Self::name`] names, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True for the DMXP systems (whose children report futex counts).
    #[must_use]
    pub fn is_dmxp(self) -> bool {
        matches!(
            self,
            System::DmxpSingle | System::DmxpBatch | System::DmxpLoan | System::DmxpInPlace
        )
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of a throughput run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One producer, one consumer, one channel.
    OneToOne,
    /// Two producers and two consumers on one channel.
    TwoToTwo,
    /// Four independent channels, each with one producer and one consumer.
    FourChannels,
}

impl Shape {
    /// Every shape, in the order runs and tables use.
    pub const ALL: [Shape; 3] = [Shape::OneToOne, Shape::TwoToTwo, Shape::FourChannels];

    /// The name in tables (`1->1`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Shape::OneToOne => "1->1",
            Shape::TwoToTwo => "2->2",
            Shape::FourChannels => "4ch x 1->1",
        }
    }

    /// The name on the command line and in JSON.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Shape::OneToOne => "one-to-one",
            Shape::TwoToTwo => "two-to-two",
            Shape::FourChannels => "four-channels",
        }
    }

    /// Channels (queues, pipes, sockets) used.
    #[must_use]
    pub fn channels(self) -> usize {
        match self {
            Shape::FourChannels => 4,
            _ => 1,
        }
    }

    /// Producers (and consumers) per channel.
    #[must_use]
    pub fn per_channel(self) -> usize {
        match self {
            Shape::TwoToTwo => 2,
            _ => 1,
        }
    }

    /// Whether `system` takes part in this shape. The floor is a single token between two
    /// processes, and the iceoryx2 peer has one publisher and one subscriber, so they only
    /// have a 1->1 form; the bare ring runs 1->1 and 2->2.
    #[must_use]
    pub fn supports(self, system: System) -> bool {
        match system {
            System::Floor | System::Iceoryx2 => self == Shape::OneToOne,
            System::BareRing => self != Shape::FourChannels,
            _ => true,
        }
    }
}

/// How a latency run waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Busy-polling (spin, then yield).
    Spin,
    /// Sleeping in the kernel: futex for DMXP and the floor; sockets and pipes always block.
    Blocking,
}

impl Mode {
    /// The name on the command line, in tables and in JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Blocking => "blocking",
        }
    }
}

/// Which latency runs exist: (system, mode).
#[must_use]
pub fn latency_systems() -> Vec<(System, Mode)> {
    vec![
        (System::DmxpSingle, Mode::Spin),
        (System::DmxpLoan, Mode::Spin),
        (System::ArrayQueue, Mode::Spin),
        (System::Floor, Mode::Spin),
        (System::BareRing, Mode::Spin),
        (System::Iceoryx2, Mode::Spin),
        (System::DmxpSingle, Mode::Blocking),
        (System::Uds, Mode::Blocking),
        (System::Pipe, Mode::Blocking),
        (System::Floor, Mode::Blocking),
    ]
}

/// A child process's part in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sends messages (for a duration, or a fixed count) on its channel.
    Producer,
    /// Receives from its channel until every producer of its group is done and the group's
    /// consumers together received all they sent.
    Consumer,
    /// Sends, waits for the echo, times the round trip.
    Ping,
    /// Echoes.
    Pong,
    /// Runs a whole scenario in threads of this one process (ArrayQueue).
    InProcess,
    /// Copies a buffer of `payload` bytes into another, over and over, on one core: the
    /// memcpy bandwidth the large-message benchmark compares against (its `system` is unused).
    Memcpy,
}

/// Everything a child needs, passed as one JSON argument.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildSpec {
    /// What this child does.
    pub role: Role,
    /// What it moves messages with.
    pub system: System,
    /// Throughput runs: the shape. Latency runs: `None`.
    pub shape: Option<Shape>,
    /// Latency runs: the mode.
    pub mode: Option<Mode>,
    /// Payload bytes per message.
    pub payload: usize,
    /// POSIX shm name of the run's segment (channels and the control block).
    pub segment: String,
    /// Channel (and control group) of this child; latency runs use `channel` and `channel + 1`.
    pub channel: u32,
    /// Index among the consumers of its channel (for the shared counters).
    pub index: usize,
    /// Producers per channel.
    pub producers: usize,
    /// Slots per ring (elements per `ArrayQueue`).
    pub capacity: u64,
    /// Messages per producer, or `None` to run until the control block says stop.
    pub messages: Option<u64>,
    /// CPU to pin to (threads of an in-process run: producers on `cpu`, consumers on `cpu2`).
    pub cpu: Option<usize>,
    /// In-process runs: the CPU of the consumer threads.
    pub cpu2: Option<usize>,
    /// Where to write the [`ChildResult`] as JSON.
    pub out: PathBuf,
    /// The large-message benchmark (`dmxp-bench large`): DMXP channels made for runs, Unix
    /// *stream* sockets with a length prefix, and every message carrying check words.
    #[serde(default)]
    pub large: bool,
    /// The async-wait benchmark (`dmxp-bench async`): the ping or pong runs on a
    /// current-thread tokio runtime (DMXP `receive_async` / `send_async`, or a
    /// `tokio::net::UnixStream`).
    #[serde(default)]
    pub tokio: bool,
}

/// Latency percentiles of one run, one-way (round trip / 2), in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// The median, in ns.
    pub p50: f64,
    /// The 99th percentile, in ns.
    pub p99: f64,
    /// The 99.9th percentile, in ns.
    pub p999: f64,
    /// Round trips sampled (after the warm-up).
    pub samples: u64,
}

/// What a child reports back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChildResult {
    /// Messages this child sent (producers) or received (consumers), or round trips (ping).
    pub messages: u64,
    /// CLOCK_MONOTONIC at the start and end of its measured work.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC at the end of its measured work.
    pub end_ns: u64,
    /// DMXP futex wake calls this process made during the run.
    pub futex_wake: u64,
    /// DMXP futex wait calls this process made during the run.
    pub futex_wait: u64,
    /// Ping: one-way latency percentiles.
    pub latency: Option<Percentiles>,
    /// Successful send calls (producers) or receive calls that got at least one message
    /// (consumers): with `messages`, how well batches fill.
    #[serde(default)]
    pub calls: u64,
    /// Large-message and bare-ring runs: the wrapping sum of the sequence numbers of the
    /// messages sent or received, which the parent compares (every message delivered exactly
    /// once).
    #[serde(default)]
    pub checksum: u64,
    /// Async runs: futex waits this process submitted to its `io_uring` during the run.
    #[serde(default)]
    pub io_uring_waits: u64,
    /// Async runs: those of them that a wake (not a timeout or a cancel) completed.
    #[serde(default)]
    pub io_uring_wakeups: u64,
}

/// Argument that marks a re-executed child process.
pub const CHILD_ARG: &str = "__dmxp_bench_child";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_has_one_name_on_the_command_line_and_in_json() {
        for system in System::ALL {
            assert_eq!(
                serde_json::to_value(system).unwrap(),
                system.name(),
                "{system:?}"
            );
            assert_eq!(System::from_name(system.name()), Some(system));
        }
    }
}
