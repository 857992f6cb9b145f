//! The bridge's life: open every route, print `ready`, move messages until asked to stop,
//! print the counters (`stats` lines, then `final`).
//!
//! Each route runs on its own thread with the blocking ("sync") Zenoh API, so a route that
//! waits (for room in a full ring, for a subscriber) never holds up another.
//!
//! **Export** (local channel → Zenoh): one consumer per route, one publisher with blocking
//! congestion control. The route consumes only while a subscriber matches its key, so that
//! with no importer the messages wait in the ring (and the local producers feel the
//! backpressure) instead of being published to nobody. Only other processes' subscribers
//! count, and only they receive: a bridge whose import key matches its own export key does
//! not hear itself. A message this process sent (an import of the same bridge into the
//! channel it exports) is skipped: the first loop filter.
//!
//! **Import** (Zenoh → local channel): one subscriber per route whose callback produces each
//! sample into the ring on Zenoh's receiving thread (no hand-off to another thread, which
//! would cost a wake-up per message). A sample that is not an envelope is counted as
//! `malformed` and dropped; one exported by this host (another bridge process on it, or a
//! cycle of bridges) is counted as `looped` and dropped, the second loop filter; a full ring
//! is waited on for `full_timeout`, then the message is dropped and counted as
//! `dropped_full`. While it waits, Zenoh stops reading the link, and its flow control reaches
//! back to the exporter, whose `put` blocks.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use dmxp::core::layout::message_flags::APPLICATION_MASK;
use dmxp::ErrorKind;
use zenoh::bytes::Encoding;
use zenoh::qos::CongestionControl;
use zenoh::sample::{Locality, Sample};
use zenoh::Wait;

use crate::config::{BridgeConfig, ExportRoute, ImportRoute};
use crate::counters::{add, bump, ExportCounters, ImportCounters, Report, RouteSnapshot};
use crate::envelope::{host_id, Envelope, ENCODING, HEADER_LEN};

/// How long a route's thread waits for one message before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);
/// Errors of one kind a route reports on stderr before it only counts them.
const LOGGED_ERRORS: u64 = 10;

/// Runs the bridge described by `config` until `stop` is set (by a signal handler, say),
/// writing one JSON [`Report`] per line to `out`: `ready` once every route is open, `stats`
/// every [`BridgeConfig::stats_interval`], and `final` after the routes have stopped.
///
/// Fails before `ready` when a route cannot be opened (a missing channel, a bad key, an
/// endpoint Zenoh cannot listen on), and after it when a route's thread fails.
pub fn run(config: &BridgeConfig, stop: &AtomicBool, out: &mut dyn Write) -> Result<()> {
    config.validate()?;
    let host = config.host();
    let (exports, consumers): (Vec<_>, Vec<_>) = config
        .export
        .iter()
        .map(|route| Export::open(route, &host))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let imports = config
        .import
        .iter()
        .map(|route| Import::open(route).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;

    let session = zenoh::open(config.zenoh_config()?)
        .wait()
        .map_err(|e| anyhow!("opening the Zenoh session: {e}"))?;
    let ctx = Arc::new(RouteContext {
        running: AtomicBool::new(true),
        origin_host: host_id(&host),
        full_timeout: config.full_timeout(),
        encoding: Encoding::from(ENCODING),
    });
    let reporter = Reporter {
        host,
        interval: config.stats_interval(),
        exports: &exports,
        imports: &imports,
        session: &session,
        reconnects: Cell::new(0),
    };

    let outcome = std::thread::scope(|scope| -> Result<()> {
        let mut threads = Vec::new();
        for (export, consumer) in exports.iter().zip(consumers) {
            let publisher = session
                .declare_publisher(export.key.clone())
                .encoding(ctx.encoding.clone())
                .congestion_control(CongestionControl::Block)
                .express(config.express.unwrap_or(false))
                .allowed_destination(Locality::Remote)
                .wait()
                .map_err(|e| anyhow!("export to `{}`: {e}", export.key))?;
            let matching = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&matching);
            publisher
                .matching_listener()
                .callback(move |status| flag.store(status.matching(), Ordering::Release))
                .background()
                .wait()
                .map_err(|e| anyhow!("export to `{}`: {e}", export.key))?;
            let ctx = &*ctx;
            threads.push(scope.spawn(move || export.run(&consumer, &publisher, &matching, ctx)));
        }
        let mut subscribers = Vec::new();
        for import in &imports {
            let (route, ctx) = (Arc::clone(import), Arc::clone(&ctx));
            let subscriber = session
                .declare_subscriber(import.key.clone())
                .callback(move |sample| route.deliver(&sample, &ctx))
                .allowed_origin(Locality::Remote)
                .wait()
                .map_err(|e| anyhow!("import from `{}`: {e}", import.key))?;
            subscribers.push(subscriber);
        }
        reporter.print(out, "ready")?;
        let result = reporter.until_stopped(out, stop, &threads);
        ctx.running.store(false, Ordering::Release);
        for subscriber in subscribers {
            if let Err(e) = subscriber.undeclare().wait() {
                eprintln!("dmxp-bridge: closing an import: {e}");
            }
        }
        let mut failure = result.err();
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(anyhow!("a route's thread panicked"))),
            }
        }
        failure.map_or(Ok(()), Err)
    });
    reporter.print(out, "final")?;
    drop(session);
    outcome
}

/// What every route's thread shares.
struct RouteContext {
    /// Cleared to stop every route.
    running: AtomicBool,
    /// [`host_id`] of this host.
    origin_host: u64,
    /// How long an import waits for room in a full ring.
    full_timeout: Duration,
    /// [`ENCODING`], made once rather than per sample.
    encoding: Encoding,
}

impl RouteContext {
    fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

/// An export route: what the reporter reads while the route's thread owns its consumer.
struct Export {
    label: String,
    key: String,
    counters: ExportCounters,
}

impl Export {
    fn open(route: &ExportRoute, host: &str) -> Result<(Self, dmxp::Consumer)> {
        let label = route.local.label();
        let consumer = route
            .local
            .builder()?
            .build_consumer()
            .with_context(|| format!("export of {label}"))?;
        let export = Export {
            label,
            key: route.key(host),
            counters: ExportCounters::default(),
        };
        Ok((export, consumer))
    }

    fn run(
        &self,
        consumer: &dmxp::Consumer,
        publisher: &zenoh::pubsub::Publisher<'_>,
        matching: &AtomicBool,
        ctx: &RouteContext,
    ) -> Result<()> {
        let mut stream = ExportStream {
            own_pid: std::process::id(),
            origin_host: ctx.origin_host,
            // A fresh stream per start, so that an importer tells a restarted exporter's
            // sequence from a gap in the old one.
            stream_id: random_u64(),
            next_seq: 0,
            wire: Vec::new(),
            messages: 0,
        };
        while ctx.running() {
            if !matching.load(Ordering::Acquire) {
                std::thread::sleep(POLL / 5);
                continue;
            }
            // What is waiting in the ring goes straight from its slots into one sample; only
            // an empty ring is waited on, with a receive that copies the message out.
            let mut outcome = self.fill(consumer, &mut stream);
            if outcome.is_ok() && stream.messages == 0 {
                outcome = match consumer.receive_timeout(POLL) {
                    Ok(Some(first)) => {
                        stream.append(&first.meta, &first.payload, &self.counters);
                        self.fill(consumer, &mut stream)
                    }
                    Ok(None) => continue,
                    Err(e) => Err(e),
                };
            }
            if let Err(e) = outcome {
                self.report_error(&self.counters.receive_errors, &e);
                if stream.messages == 0 {
                    std::thread::sleep(POLL / 5);
                    continue;
                }
            }
            if stream.messages == 0 {
                continue; // all of them this process's own
            }
            let (messages, bytes) = (stream.messages as u64, stream.payload_bytes() as u64);
            match publisher.put(stream.take()).wait() {
                Ok(()) => {
                    bump(&self.counters.samples);
                    add(&self.counters.published, messages);
                    add(&self.counters.bytes, bytes);
                }
                Err(e) => self.report_error(&self.counters.publish_errors, &e),
            }
        }
        Ok(())
    }

    /// Claims what is already in the ring, a few slots at a time, into `stream`'s sample
    /// until the sample is large enough or the ring is empty: a backlog of small messages
    /// costs one put per sample, not one per message.
    fn fill(&self, consumer: &dmxp::Consumer, stream: &mut ExportStream) -> dmxp::Result<()> {
        while stream.messages < BATCH_MESSAGES && stream.wire.len() < BATCH_BYTES {
            let claim = CLAIM.min(BATCH_MESSAGES - stream.messages);
            let claimed = consumer.receive_batch_with(claim, |meta, payload| {
                stream.append(meta, payload, &self.counters)
            })?;
            if claimed == 0 {
                break;
            }
        }
        Ok(())
    }

    fn report_error(&self, counter: &std::sync::atomic::AtomicU64, error: &dyn std::fmt::Display) {
        if counter.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
            eprintln!(
                "dmxp-bridge: export of {} to `{}`: {error}",
                self.label, self.key
            );
        }
    }

    fn snapshot(&self) -> RouteSnapshot {
        self.counters.snapshot(&self.label, &self.key)
    }
}

/// Envelopes one sample carries at most.
const BATCH_MESSAGES: usize = 64;
/// A sample takes no further messages once it holds this many bytes.
const BATCH_BYTES: usize = 64 << 10;
/// Slots an export claims from its ring at a time while it fills a sample.
const CLAIM: usize = 8;

/// The sample an export route is filling, and its stream's numbering.
struct ExportStream {
    own_pid: u32,
    origin_host: u64,
    stream_id: u64,
    next_seq: u64,
    /// Envelopes back to back.
    wire: Vec<u8>,
    /// Envelopes in `wire`.
    messages: usize,
}

impl ExportStream {
    /// Appends one message's envelope, unless this process sent it (an import of the same
    /// bridge into the channel it exports: the first loop filter).
    fn append(&mut self, meta: &dmxp::MessageMeta, payload: &[u8], counters: &ExportCounters) {
        if meta.sender_pid == self.own_pid {
            bump(&counters.skipped_own);
            return;
        }
        Envelope {
            sender_runtime: meta.sender_runtime,
            flags: meta.flags & APPLICATION_MASK,
            message_type: meta.message_type,
            source_channel: meta.channel_id,
            message_id: meta.message_id,
            timestamp_ns: meta.timestamp_ns,
            sender_pid: meta.sender_pid,
            origin_host: self.origin_host,
            stream_id: self.stream_id,
            stream_seq: self.next_seq,
            payload,
        }
        .encode_into(&mut self.wire);
        self.next_seq += 1;
        self.messages += 1;
    }

    /// Payload bytes in the sample: every envelope's header has the same length.
    fn payload_bytes(&self) -> usize {
        self.wire.len() - self.messages * HEADER_LEN
    }

    /// The sample's bytes, moved out (Zenoh takes the buffer without a copy).
    fn take(&mut self) -> Vec<u8> {
        self.messages = 0;
        std::mem::take(&mut self.wire)
    }
}

/// An import route, shared by its subscriber's callback and the reporter.
struct Import {
    label: String,
    key: String,
    counters: ImportCounters,
    /// The producer and the next sequence number expected of each export stream. Zenoh
    /// calls one subscriber's callback from one receiving thread per link, so the lock is
    /// uncontended unless two peers publish to the key at once.
    state: Mutex<ImportState>,
}

struct ImportState {
    producer: dmxp::Producer,
    next_seq: HashMap<u64, u64>,
}

impl Import {
    fn open(route: &ImportRoute) -> Result<Self> {
        let label = route.local.label();
        let mut builder = route.local.builder()?;
        if let Some(capacity) = route.capacity {
            builder = builder.with_capacity(capacity);
        }
        if let Some(bytes) = route.max_message_size {
            builder = builder.with_max_message_size(bytes);
        }
        if let Some(bytes) = route.segment_size {
            builder = builder.with_segment_size(bytes);
        }
        if !route.create.unwrap_or(true) {
            // Attach only: a consumer's build fails with NotFound where a producer's creates.
            builder
                .build_consumer()
                .with_context(|| format!("import into {label} (create = false)"))?;
        }
        let producer = builder
            .build_producer()
            .with_context(|| format!("import into {label}"))?;
        Ok(Import {
            label,
            key: route.key.clone(),
            counters: ImportCounters::default(),
            state: Mutex::new(ImportState {
                producer,
                next_seq: HashMap::new(),
            }),
        })
    }

    /// Checks one sample and produces its payload into the ring (the subscriber's callback).
    fn deliver(&self, sample: &Sample, ctx: &RouteContext) {
        let counters = &self.counters;
        bump(&counters.samples);
        if *sample.encoding() != ctx.encoding {
            self.report_error(
                &counters.malformed,
                &format!("encoding `{}`", sample.encoding()),
            );
            return;
        }
        let bytes = sample.payload().to_bytes();
        // A panic elsewhere cannot leave the state half-updated: it is two plain values.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for envelope in Envelope::decode_all(&bytes) {
            match envelope {
                Ok(envelope) => self.deliver_one(&envelope, &mut state, ctx),
                // The envelopes before it were delivered; nothing after it can be found.
                Err(e) => return self.report_error(&counters.malformed, &e),
            }
        }
    }

    fn deliver_one(&self, envelope: &Envelope<'_>, state: &mut ImportState, ctx: &RouteContext) {
        let counters = &self.counters;
        bump(&counters.received);
        if envelope.origin_host == ctx.origin_host {
            bump(&counters.looped);
            return;
        }
        let expected = state
            .next_seq
            .entry(envelope.stream_id)
            .or_insert(envelope.stream_seq);
        if envelope.stream_seq > *expected {
            add(&counters.gaps, envelope.stream_seq - *expected);
        }
        *expected = envelope.stream_seq.saturating_add(1);
        let sent = state.producer.send_with_timeout(
            envelope.payload,
            envelope.message_type,
            envelope.flags & APPLICATION_MASK,
            ctx.full_timeout,
        );
        match sent {
            Ok(_) => {
                bump(&counters.delivered);
                add(&counters.bytes, envelope.payload.len() as u64);
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {
                self.report_error(&counters.dropped_full, &"the ring stayed full: dropped")
            }
            Err(e) => self.report_error(&counters.rejected, &e),
        }
    }

    fn report_error(&self, counter: &std::sync::atomic::AtomicU64, error: &dyn std::fmt::Display) {
        if counter.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
            eprintln!(
                "dmxp-bridge: import from `{}` into {}: {error}",
                self.key, self.label
            );
        }
    }

    fn snapshot(&self) -> RouteSnapshot {
        self.counters.snapshot(&self.key, &self.label)
    }
}

/// Prints the reports.
struct Reporter<'a> {
    host: String,
    interval: Option<Duration>,
    exports: &'a [Export],
    imports: &'a [Arc<Import>],
    session: &'a zenoh::Session,
    /// Times the peers came back after there were none.
    reconnects: Cell<u64>,
}

impl Reporter<'_> {
    /// Prints `stats` lines until `stop` is set or a route's thread has ended.
    fn until_stopped<T>(
        &self,
        out: &mut dyn Write,
        stop: &AtomicBool,
        threads: &[std::thread::ScopedJoinHandle<'_, T>],
    ) -> Result<()> {
        let (mut seen_any, mut connected) = (false, false);
        let mut last = Instant::now();
        while !stop.load(Ordering::Acquire) && threads.iter().all(|t| !t.is_finished()) {
            std::thread::sleep(POLL);
            let now_connected = self.peer_count() > 0;
            if now_connected && !connected {
                if seen_any {
                    self.reconnects.set(self.reconnects.get() + 1);
                }
                seen_any = true;
            }
            connected = now_connected;
            if self.interval.is_some_and(|every| last.elapsed() >= every) {
                self.print(out, "stats")?;
                last = Instant::now();
            }
        }
        Ok(())
    }

    fn peer_count(&self) -> usize {
        self.session.info().peers_zid().wait().count()
    }

    fn print(&self, out: &mut dyn Write, event: &'static str) -> Result<()> {
        let routes = self
            .exports
            .iter()
            .map(Export::snapshot)
            .chain(self.imports.iter().map(|import| import.snapshot()))
            .collect();
        let report = Report {
            event,
            host: self.host.clone(),
            peers: self.peer_count(),
            reconnects: self.reconnects.get(),
            routes,
        };
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        out.flush()?;
        Ok(())
    }
}

/// 64 bits that differ between two starts of a bridge (no cryptographic claim).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(dmxp::monotonic_ns());
    hasher.write_u32(std::process::id());
    hasher.finish()
}
