//! A hostile peer: for 10 s a scribbler writes random bytes into a live shm segment (header,
//! channel entries, cursors, slot sequences, metas, payloads, and anywhere) while Rust and C
//! producers and consumers keep using several channels and re-attaching.
//!
//! Typed errors are expected and only counted (corrupt fields, lost messages, busy, ...).
//! The test fails on what must never happen: a signal (SIGSEGV, SIGBUS, abort), a Rust panic,
//! an ASan/UBSan report from the C client, or a process that does not exit within the hang
//! guard after the scribbler stops. The scribbler writes with `pwrite` on the shm object,
//! always inside the segment, and never resizes it.
//!
//! The C client (dmxp/tests/c/scribble_client.c) is built with gcc and ASan/UBSan; without
//! gcc or the sanitizer runtimes that part is skipped with a loud note. Seed: set
//! `DMXP_SCRIBBLE_SEED` to replay a run's choice of writes (the timing differs anyway).
#![cfg(feature = "shm")]

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{child_env, unique_path, ShmName};
use dmxp::core::layout::{channel_entry_offset, HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp::{ChannelBuilder, ErrorKind};

const SCRIBBLE_FOR: Duration = Duration::from_secs(10);
/// Every process must have exited this long after the scribbler stopped.
const HANG_GUARD: Duration = Duration::from_secs(10);
/// Children must say "ready" within this long of being started.
const START_GUARD: Duration = Duration::from_secs(20);
const CHANNELS: u32 = 4;
const CAPACITY: u64 = 16;
const SEGMENT_SIZE: usize = 1 << 20;
/// Blocking calls in the children wait at most this long, so they notice the stop file soon.
const SHORT: Duration = Duration::from_millis(20);

const ENV_SEGMENT: &str = "DMXP_T_SCRIBBLE_SEGMENT";
const ENV_CHANNEL: &str = "DMXP_T_SCRIBBLE_CHANNEL";
const ENV_STOP: &str = "DMXP_T_SCRIBBLE_STOP";

// ---------------------------------------------------------------- children (Rust)

fn builder(segment: &str, channel: u32) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(segment)
        .with_segment_size(SEGMENT_SIZE)
        .with_channel_id(channel)
        .with_capacity(CAPACITY)
        .with_timeout(Duration::from_millis(200))
}

/// The kind of an error, coarse enough to aggregate.
fn kind_name(kind: ErrorKind) -> String {
    match kind {
        ErrorKind::Corrupt { field, .. } => format!("Corrupt({field})"),
        ErrorKind::Lost { .. } => "Lost".into(),
        ErrorKind::TooLarge { .. } => "TooLarge".into(),
        ErrorKind::BufferTooSmall { .. } => "BufferTooSmall".into(),
        ErrorKind::Truncated { .. } => "Truncated".into(),
        ErrorKind::Abandoned { .. } => "Abandoned".into(),
        ErrorKind::Io(io) => format!("Io({io:?})"),
        // Just the variant's name: a RESULT line is split at whitespace, and a variant's
        // fields (`Revoked { message_id: 7 }`) would split it.
        other => {
            let debug = format!("{other:?}");
            let name = debug.split([' ', '{', '(']).next().unwrap_or_default();
            name.to_owned()
        }
    }
}

/// What a child saw: successful operations and errors by kind.
struct Tally {
    role: &'static str,
    channel: u32,
    ops: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new(role: &'static str, channel: u32) -> Self {
        Self {
            role,
            channel,
            ops: 0,
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, error: &dmxp::Error) {
        *self.errors.entry(kind_name(error.kind())).or_default() += 1;
    }

    fn print(&self) {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        println!(
            "RESULT rust-{} ch={} ops={} ok={} errors={}",
            self.role,
            self.channel,
            self.ops,
            self.ok,
            errors.join(",")
        );
    }
}

/// The environment of a child role, or `None` when run as a plain test (then it does nothing).
fn child_setup() -> Option<(String, u32, PathBuf)> {
    let segment = child_env(ENV_SEGMENT)?;
    let channel = common::env(ENV_CHANNEL);
    let stop = PathBuf::from(common::env::<String>(ENV_STOP));
    Some((segment, channel, stop))
}

/// Checks the stop file now and then; also stops after two minutes if the parent vanished.
struct StopCheck {
    path: PathBuf,
    started: Instant,
    last: Instant,
}

impl StopCheck {
    fn new(path: PathBuf) -> Self {
        let now = Instant::now();
        Self {
            path,
            started: now,
            last: now,
        }
    }

    fn stop(&mut self) -> bool {
        if self.last.elapsed() < Duration::from_millis(10) {
            return false;
        }
        self.last = Instant::now();
        self.path.exists() || self.started.elapsed() > Duration::from_secs(120)
    }
}

/// Errors after which the handle is dropped and the channel opened again.
fn routine(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Full | ErrorKind::Timeout)
}

#[test]
#[ignore = "child process helper"]
fn child_scribble_producer() {
    let Some((segment, channel, stop)) = child_setup() else {
        return;
    };
    let mut tally = Tally::new("producer", channel);
    let mut stop = StopCheck::new(stop);
    let mut producer = None;
    let mut announced = false;
    let payload = [b'r'; MSG_INLINE];
    let mut i = 0u64;
    while !stop.stop() {
        i += 1;
        if producer.is_none() {
            match builder(&segment, channel).build_producer() {
                Ok(p) => producer = Some(p),
                Err(e) => {
                    tally.error(&e);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            if !announced {
                println!("ready");
                announced = true;
            }
            continue;
        }
        let p = producer.as_ref().unwrap();
        let len = (i * 37 % (MSG_INLINE as u64 + 1)) as usize;
        tally.ops += 1;
        let result = match i % 4 {
            0 => p.send(&payload[..len]).map(|_| 1),
            1 => p.send_timeout(&payload[..len], SHORT).map(|_| 1),
            2 => p.send_batch(&[&payload[..len], &payload[..1], &payload[..MSG_INLINE]]),
            _ => p.loan().and_then(|mut loan| {
                // `len` is at most MSG_INLINE, so the write always fits.
                assert!(loan.write_at(0, &payload[..len]));
                loan.commit(len).map(|_| 1)
            }),
        };
        let reopen = match result {
            Ok(n) => {
                tally.ok += n as u64;
                false
            }
            Err(e) => {
                tally.error(&e);
                !routine(e.kind())
            }
        };
        // Re-open after anything unusual, and now and then anyway, so that attach and
        // validation also run against the scribbled segment.
        if reopen || i.is_multiple_of(512) {
            producer = None;
        }
    }
    tally.print();
}

#[test]
#[ignore = "child process helper"]
fn child_scribble_consumer() {
    let Some((segment, channel, stop)) = child_setup() else {
        return;
    };
    let mut tally = Tally::new("consumer", channel);
    let mut stop = StopCheck::new(stop);
    let mut consumer = None;
    let mut announced = false;
    let mut buf = [0u8; MSG_INLINE];
    let mut i = 0u64;
    let mut corrupt_seen = 0;
    while !stop.stop() {
        i += 1;
        if consumer.is_none() {
            match builder(&segment, channel).build_consumer() {
                Ok(c) => consumer = Some(c),
                Err(e) => {
                    tally.error(&e);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            if !announced {
                println!("ready");
                announced = true;
            }
            continue;
        }
        let c: &dmxp::Consumer = consumer.as_ref().unwrap();
        tally.ops += 1;
        let result = match i % 5 {
            0 => c.receive().map(|m| m.is_some() as u64),
            1 => c.receive_timeout(SHORT).map(|m| m.is_some() as u64),
            2 => c
                .receive_batch_with(8, |_, payload| assert!(payload.len() <= MSG_INLINE))
                .map(|n| n as u64),
            3 => c.receive_into(&mut buf).map(|m| m.is_some() as u64),
            _ => c.receive_in_place().map(|m| {
                m.map(|m| {
                    assert!(m.payload().len() <= MSG_INLINE);
                    1
                })
                .unwrap_or(0)
            }),
        };
        let reopen = match result {
            Ok(n) => {
                tally.ok += n;
                false
            }
            Err(e) => {
                tally.error(&e);
                !routine(e.kind())
            }
        };
        let stats = c.stats();
        let dropped = stats.corrupt + stats.lost + stats.dropped_in_batch;
        if dropped > corrupt_seen {
            *tally.errors.entry("Dropped(stats)".into()).or_default() += dropped - corrupt_seen;
            corrupt_seen = dropped;
        }
        if reopen || i.is_multiple_of(512) {
            consumer = None;
            corrupt_seen = 0;
        }
    }
    tally.print();
}

// ---------------------------------------------------------------- the scribbler

/// xorshift64*: small, seedable, good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Where a channel's slots were when the scribbling began.
#[derive(Clone, Copy)]
struct Band {
    channel: u32,
    offset: u64,
    capacity: u64,
}

/// Header fields (offset, width).
const HEADER_FIELDS: &[(u64, usize)] = &[
    (0, 8),  // magic
    (8, 4),  // version
    (12, 4), // max_channels
    (16, 4), // channel_count
    (20, 4), // reserved
    (24, 8), // segment_size
    (32, 8), // band_cursor
    (40, 4), // creator_pid
    (44, 4), // header_flags
];
/// Channel entry fields other than the cursors (offset in the entry, width).
const ENTRY_FIELDS: &[(u64, usize)] = &[
    (0, 4),  // channel_id
    (4, 4),  // flags
    (8, 8),  // capacity
    (16, 8), // band_offset
    (24, 4), // state
    (28, 4), // creator_pid
    (32, 4), // not_empty_seq
    (36, 4), // not_empty_waiters
    (40, 4), // not_full_seq
    (44, 4), // not_full_waiters
];
/// tail and head.
const CURSORS: &[(u64, usize)] = &[(128, 8), (256, 8)];
/// Meta fields in a slot (offset in the slot, width); payload_len twice (weighted).
const META_FIELDS: &[(u64, usize)] = &[
    (8, 8),  // message_id
    (16, 8), // timestamp_ns
    (24, 4), // channel_id
    (28, 4), // message_type
    (32, 4), // sender_pid
    (36, 2), // sender_runtime
    (38, 2), // flags
    (40, 4), // payload_len
    (40, 4), // payload_len
    (44, 4), // reserved
];

struct Scribbler {
    file: File,
    len: u64,
    bands: Vec<Band>,
    rng: Rng,
    writes: u64,
    by_target: BTreeMap<&'static str, u64>,
    /// Header and channel table as they were before the first write, for the restores.
    pristine: Vec<u8>,
    restores: u64,
}

impl Scribbler {
    fn read_u64(&self, offset: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.file.read_exact_at(&mut bytes, offset).unwrap();
        u64::from_le_bytes(bytes)
    }

    /// A value for a field of `width` bytes now holding `current`: mostly ones that look
    /// plausible or sit on a boundary, which reach deeper into the code than pure noise.
    fn value(&mut self, current: u64) -> u64 {
        let delta = 1 + self.rng.below(2 * CAPACITY);
        match self.rng.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << self.rng.below(64),
            3 => current.wrapping_add(delta),
            4 => current.wrapping_sub(delta),
            5 => self.rng.below(4),
            6 => MSG_INLINE as u64 + self.rng.below(3),
            7 => current ^ (1 << self.rng.below(64)),
            _ => self.rng.next(),
        }
    }

    fn write_field(&mut self, target: &'static str, offset: u64, width: usize) {
        if offset + width as u64 > self.len {
            return; // stay inside the segment
        }
        let current = self.read_u64(offset.min(self.len - 8));
        let value = self.value(current).to_le_bytes();
        // Now and then only one byte of the field (a torn write).
        let (offset, bytes) = if width > 1 && self.rng.chance(10) {
            let k = self.rng.below(width as u64) as usize;
            (offset + k as u64, &value[k..k + 1])
        } else {
            (offset, &value[..width])
        };
        self.file.write_all_at(bytes, offset).unwrap();
        self.writes += 1;
        *self.by_target.entry(target).or_default() += 1;
    }

    fn write_bytes(&mut self, target: &'static str, offset: u64, max: u64) {
        let n = 1 + self.rng.below(max);
        if offset + n > self.len {
            return;
        }
        let bytes: Vec<u8> = (0..n).map(|_| self.rng.next() as u8).collect();
        self.file.write_all_at(&bytes, offset).unwrap();
        self.writes += 1;
        *self.by_target.entry(target).or_default() += 1;
    }

    /// A slot of a channel: where the band was, or where the entry says it is now if that is
    /// inside the segment.
    fn slot(&mut self) -> u64 {
        let band = self.bands[self.rng.below(self.bands.len() as u64) as usize];
        let (mut offset, mut capacity) = (band.offset, band.capacity);
        if self.rng.chance(30) {
            let entry = channel_entry_offset(band.channel as usize) as u64;
            let live_capacity = self.read_u64(entry + 8);
            let live_offset = self.read_u64(entry + 16);
            if (2..=1 << 12).contains(&live_capacity)
                && live_capacity.is_power_of_two()
                && live_offset.is_multiple_of(64)
                && live_offset
                    .checked_add(live_capacity * SLOT_SIZE as u64)
                    .is_some_and(|end| end <= self.len)
            {
                (offset, capacity) = (live_offset, live_capacity);
            }
        }
        offset + self.rng.below(capacity) * SLOT_SIZE as u64
    }

    fn one_write(&mut self) {
        let roll = self.rng.below(100);
        let entry_of = |rng: &mut Rng| {
            // Mostly the channels in use, sometimes their neighbours (to be created later).
            channel_entry_offset(rng.below(u64::from(CHANNELS) + 2) as usize) as u64
        };
        match roll {
            0..=7 => {
                let (off, w) = HEADER_FIELDS[self.rng.below(HEADER_FIELDS.len() as u64) as usize];
                self.write_field("header", off, w);
            }
            8..=9 => {
                let off = 48 + self.rng.below(80);
                self.write_bytes("header extension", off, 8);
            }
            10..=24 => {
                let entry = entry_of(&mut self.rng);
                let (off, w) = ENTRY_FIELDS[self.rng.below(ENTRY_FIELDS.len() as u64) as usize];
                self.write_field("entry", entry + off, w);
            }
            25..=39 => {
                let entry = entry_of(&mut self.rng);
                let (off, w) = CURSORS[self.rng.below(2) as usize];
                self.write_field("cursor", entry + off, w);
            }
            40..=59 => {
                let slot = self.slot();
                self.write_field("sequence", slot, 8);
            }
            60..=79 => {
                let slot = self.slot();
                let (off, w) = META_FIELDS[self.rng.below(META_FIELDS.len() as u64) as usize];
                self.write_field("meta", slot + off, w);
            }
            80..=89 => {
                let slot = self.slot();
                let off = 64 + self.rng.below(MSG_INLINE as u64);
                self.write_bytes("payload", slot + off, 64);
            }
            _ => {
                let off = self.rng.below(self.len);
                self.write_bytes("anywhere", off, 16);
            }
        }
    }

    /// Puts the header's first 128 bytes (fields and extensions) and the used entries' first
    /// 128 bytes (everything but the cursors) back as they were, so that re-attaching works
    /// again and the ring code meets bad sequences and cursors behind a valid entry, not only
    /// refusals at attach.
    fn restore(&mut self) {
        const FIELDS: usize = 128;
        self.file.write_all_at(&self.pristine[..FIELDS], 0).unwrap();
        for channel in 0..CHANNELS as usize {
            let entry = channel_entry_offset(channel);
            self.file
                .write_all_at(&self.pristine[entry..entry + FIELDS], entry as u64)
                .unwrap();
        }
        self.restores += 1;
    }

    fn run(&mut self, duration: Duration) {
        let started = Instant::now();
        let mut last_restore = started;
        while started.elapsed() < duration {
            for _ in 0..1 + self.rng.below(8) {
                self.one_write();
            }
            if last_restore.elapsed() > Duration::from_millis(50) {
                if self.rng.chance(75) {
                    self.restore();
                }
                last_restore = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(self.rng.below(1500)));
        }
    }
}

// ---------------------------------------------------------------- the test

struct Proc {
    label: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// Kills (SIGKILL) and reaps every child still running when dropped, so a failing test
/// leaves nothing behind.
struct Procs(Vec<Proc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Builds the C client with ASan and UBSan, or says loudly why not.
fn build_c_client(dir: &Path) -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = manifest.join("tests/c/scribble_client.c");
    let exe = dir.join("scribble_client");
    let result = Command::new(std::env::var("CC").unwrap_or_else(|_| "gcc".into()))
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-g",
            "-O1",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-pthread",
        ])
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output();
    match result {
        Ok(output) if output.status.success() => Some(exe),
        Ok(output) => {
            eprintln!(
                "!!! C CLIENT NOT BUILT (gcc with ASan/UBSan failed): the scribbler runs against \
                 the Rust clients only\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("!!! C CLIENT NOT BUILT (no C compiler: {e}): Rust clients only");
            None
        }
    }
}

#[test]
fn scribbler_cannot_crash_or_hang_producers_and_consumers() {
    let name = ShmName::new("scribble");
    let dir = unique_path("scribble");
    std::fs::create_dir(&dir).unwrap();
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _dir_guard = RemoveDir(dir.clone());
    let stop = dir.join("stop");

    // The segment and the channels exist before anyone scribbles.
    let mut bands = Vec::new();
    for channel in 0..CHANNELS {
        let producer = builder(&name.0, channel).build_producer().unwrap();
        let info = producer.info();
        assert_eq!(info.capacity, CAPACITY);
        bands.push(Band {
            channel,
            offset: info.band_offset,
            capacity: info.capacity,
        });
    }

    let c_client = build_c_client(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut procs = Procs(Vec::new());
    let mut spawn = |label: String, mut command: Command| {
        let out = dir.join(format!("{label}.out"));
        let err = dir.join(format!("{label}.err"));
        command
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .env(ENV_SEGMENT, &name.0)
            .env(ENV_STOP, &stop)
            // Sanitizer reports: exit codes the test recognises, and reports on stderr.
            .env(
                "ASAN_OPTIONS",
                "exitcode=86:abort_on_error=0:detect_leaks=0",
            )
            .env("UBSAN_OPTIONS", "exitcode=87:print_stacktrace=1");
        let child = command.spawn().expect("spawn");
        procs.0.push(Proc {
            label,
            child,
            out,
            err,
        });
    };
    for channel in 0..CHANNELS {
        for role in ["producer", "consumer"] {
            let mut command = Command::new(&exe);
            command
                .args([
                    &format!("child_scribble_{role}"),
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                    "-q",
                ])
                .env(ENV_CHANNEL, channel.to_string());
            spawn(format!("rust-{role}-{channel}"), command);
        }
    }
    if let Some(c_client) = &c_client {
        // C clients share channels 0 and 1 with the Rust ones.
        for channel in 0..2u32 {
            for (role, flag) in [("producer", "p"), ("consumer", "c")] {
                let mut command = Command::new(c_client);
                command.args([flag, &name.0, &channel.to_string(), stop.to_str().unwrap()]);
                spawn(format!("c-{role}-{channel}"), command);
            }
        }
    }

    // Wait until every child has attached (or tried to) before scribbling.
    let deadline = Instant::now() + START_GUARD;
    for p in &mut procs.0 {
        while !read(&p.out).lines().any(|l| l.trim() == "ready") {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!(
                    "{} exited before it was ready: {status}\n{}{}",
                    p.label,
                    read(&p.out),
                    read(&p.err)
                );
            }
            assert!(Instant::now() < deadline, "{} never became ready", p.label);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let seed = std::env::var("DMXP_SCRIBBLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 | 1
        });
    eprintln!(
        "scribbler: seed {seed}, {} processes ({} C), {SCRIBBLE_FOR:?} of writes",
        procs.0.len(),
        if c_client.is_some() { 4 } else { 0 }
    );
    let shm = Path::new("/dev/shm").join(name.0.trim_start_matches('/'));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&shm)
        .unwrap();
    let len = file.metadata().unwrap().len();
    assert_eq!(len, SEGMENT_SIZE as u64);
    let mut pristine = vec![0u8; HEADER_SIZE];
    file.read_exact_at(&mut pristine, 0).unwrap();
    let mut scribbler = Scribbler {
        file,
        len,
        bands,
        rng: Rng(seed),
        writes: 0,
        by_target: BTreeMap::new(),
        pristine,
        restores: 0,
    };
    scribbler.run(SCRIBBLE_FOR);
    File::create(&stop).unwrap();
    let stopped = Instant::now();
    assert_eq!(
        std::fs::metadata(&shm).unwrap().len(),
        SEGMENT_SIZE as u64,
        "the scribbler never resizes"
    );

    // Every process must exit by itself, soon.
    let mut failures = Vec::new();
    let mut statuses = Vec::new();
    for p in &mut procs.0 {
        let status = loop {
            match p.child.try_wait().unwrap() {
                Some(status) => break Some(status),
                None if stopped.elapsed() > HANG_GUARD => break None,
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        statuses.push(status);
    }
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ops, mut ok) = (0u64, 0u64);
    for (p, status) in procs.0.iter().zip(&statuses) {
        let out = read(&p.out);
        let err = read(&p.err);
        let problem = match status {
            None => Some(format!(
                "HUNG: still running {HANG_GUARD:?} after the scribbler stopped"
            )),
            Some(s) if s.signal().is_some() => Some(format!("killed by signal {s}")),
            Some(s) if !s.success() => Some(format!("exited with {s}")),
            Some(_) if err.contains("panicked") => Some("panicked".into()),
            Some(_) if err.contains("Sanitizer") || err.contains("runtime error:") => {
                Some("sanitizer report".into())
            }
            Some(_) if !out.contains("RESULT ") => Some("no RESULT line".into()),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{}: {problem}\n--- stdout:\n{out}--- stderr:\n{err}",
                p.label
            ));
            continue;
        }
        for line in out.lines().filter(|l| l.starts_with("RESULT ")) {
            eprintln!("  {line}");
            for field in line.split_whitespace() {
                if let Some(n) = field.strip_prefix("ops=") {
                    ops += n.parse::<u64>().unwrap();
                } else if let Some(n) = field.strip_prefix("ok=") {
                    ok += n.parse::<u64>().unwrap();
                } else if let Some(list) = field.strip_prefix("errors=") {
                    for item in list.split(',').filter(|s| !s.is_empty()) {
                        let (kind, n) = item
                            .rsplit_once(':')
                            .and_then(|(k, n)| Some((k, n.parse::<u64>().ok()?)))
                            .unwrap_or_else(|| panic!("{}: bad RESULT line {line}", p.label));
                        *totals.entry(kind.to_owned()).or_default() += n;
                    }
                }
            }
        }
    }
    eprintln!(
        "scribbler: {} writes ({}), {} restores of header and entries",
        scribbler.writes,
        scribbler
            .by_target
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        scribbler.restores
    );
    eprintln!(
        "clients: {ops} operations, {ok} messages sent or received; errors seen: {}",
        totals
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} of {} processes failed (seed {seed}):\n{}",
        failures.len(),
        procs.0.len(),
        failures.join("\n")
    );
    assert!(scribbler.writes > 1000, "the scribbler barely wrote");
    assert!(ok > 0, "nothing was sent or received at all");
}
