//! A fixed amount of hot-path work in one thread, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/hotpath MODE ITERATIONS [PAYLOAD]`
//! (`scripts/instructions.sh` runs every mode at 32, 256 and 960 B). PAYLOAD is the bytes per
//! message (8..=960, default 32). MODE is:
//!
//! * `core`: the ring over ordinary memory, `try_send` + `try_recv`;
//! * `core-reg`: the same with peer records registered, so every claim writes intents;
//! * `facade`: `Producer::send` + `Consumer::receive_into` on a shm segment;
//! * `facade-waiter`: the same while a waiter is counted in the channel's
//!   `not_empty_waiters` (a registration held open through the core, as a blocked receiver's
//!   is), so every send bumps the wait word and calls `futex_wake`;
//! * `batch`: `send_batch` + `receive_batch_with` of 16 (16 messages per iteration);
//! * `loan`: `loan` + `write_at` + `commit`, `receive_in_place` reading the first word;
//! * `loan-copy`: `loan` + `write_at` + `commit`, then `receive_into` (to compare the send
//!   side alone with `facade`'s `send`);
//! * `facade-nostamp`: `facade` with a producer built `with_timestamps(false)` (no clock read);
//! * `inplace`: `send`, then `receive_in_place` reading the whole payload in place through
//!   `Payload::words` (to compare with `facade`'s copy out by `receive_into`);
//! * `inplace-word`: the same through `Payload::word(i)`, one checked index per word;
//! * `arrayqueue`: crossbeam's `ArrayQueue<[u8; PAYLOAD]>` push + pop (32, 256 or 960 B);
//! * `bare-ring`: the benchmark's bare ring (`dmxp_bench::bare_ring`, the layout floor) over
//!   ordinary memory, `try_send` + `try_recv`.
//!
//! Divide the instruction count by the messages (minus a run with 0 iterations for the setup)
//! to get instructions per message. Two lines go to stderr: the time per iteration (outside
//! valgrind: native) and a machine-readable `hotpath: mode=.. payload=.. iterations=..
//! messages=..` line that the script reads.

use crossbeam_queue::ArrayQueue;
use dmxp::ChannelBuilder;
use dmxp_bench::bare_ring::BareRing;
use dmxp_nostd::layout::{HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{AlignedBlock, PeerRole, Region, Segment, SendMeta};
use std::hint::black_box;
use std::time::Instant;
use zerocopy::IntoBytes;

/// Messages per `batch` iteration.
const BATCH: usize = 16;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "core".into());
    let iterations: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    assert!(
        (8..=MSG_INLINE).contains(&size),
        "payload {size} is outside 8..=960"
    );
    let payload = vec![0x5Au8; size];
    let mut buf = [0u8; MSG_INLINE];
    let mut per_iteration = 1;
    let started = Instant::now();
    match what.as_str() {
        "core" | "core-reg" => {
            // Room for the ring and the peer table (16 KiB).
            let mut blocks =
                vec![
                    AlignedBlock::ZERO;
                    AlignedBlock::count_for(HEADER_SIZE + 1024 * SLOT_SIZE + (64 << 10))
                ];
            let segment = Segment::format(Region::new(blocks.as_mut_bytes()).unwrap(), 1).unwrap();
            let mut channel = segment.create_channel(0, 1024, 1).unwrap();
            let pid = std::process::id();
            let mut slots = Vec::new();
            if what == "core-reg" {
                for role in [PeerRole::Producer, PeerRole::Consumer] {
                    slots.push(segment.register(0, role, pid, 0, 1).unwrap());
                }
                for slot in &slots {
                    channel = channel.with_peer(slot);
                }
                assert!(channel.is_registered(PeerRole::Producer));
                assert!(channel.is_registered(PeerRole::Consumer));
            }
            let meta = SendMeta::default();
            for _ in 0..iterations {
                channel.try_send(black_box(&payload[..]), &meta).unwrap();
                black_box(channel.try_recv(&mut buf).unwrap());
            }
        }
        "bare-ring" => {
            let mut blocks =
                vec![AlignedBlock::ZERO; AlignedBlock::count_for(BareRing::bytes(1024))];
            let region = Region::new(blocks.as_mut_bytes()).unwrap();
            let ring = BareRing::view(region, 0, 1024).unwrap();
            ring.init();
            let mut n = 0;
            for _ in 0..iterations {
                assert!(ring.try_send(black_box(&payload[..])));
                n += ring.try_recv(black_box(&mut buf[..])).unwrap();
            }
            black_box(n);
        }
        "arrayqueue" => match size {
            32 => array_queue::<32>(iterations),
            256 => array_queue::<256>(iterations),
            960 => array_queue::<960>(iterations),
            other => panic!("arrayqueue runs at 32, 256 or 960 B, not {other}"),
        },
        other => {
            let name = format!("/dmxp-hotpath-{}", std::process::id());
            let builder = ChannelBuilder::new()
                .with_segment_name(&name)
                .with_segment_size(4 << 20);
            let producer = builder.build_producer().unwrap();
            let consumer = builder.build_consumer().unwrap();
            let batch = vec![payload.clone(); BATCH];
            // `facade-waiter`: a waiter counted in `not_empty_waiters` for the whole loop (a
            // registration through the core over the same segment, never asleep and never
            // receiving), so that every send takes the wake path: it bumps `not_empty_seq` and
            // calls `futex_wake`, which finds nobody asleep on the word.
            let allocator = builder.attach_allocator().unwrap();
            let segment = Segment::attach(allocator.memory().region()).unwrap();
            let channel = segment.open_channel(0).unwrap();
            let _waiter = (other == "facade-waiter").then(|| channel.register_for_message());
            assert_eq!(producer.waiters().0, u32::from(other == "facade-waiter"));
            if other == "batch" {
                per_iteration = BATCH as u64;
            }
            let unstamped = builder
                .clone()
                .with_timestamps(false)
                .build_producer()
                .unwrap();
            // Each mode is its own loop: a mode match inside the loop would count a string
            // comparison per message.
            let n = match other {
                "facade" | "facade-waiter" => repeat(iterations, || {
                    producer.send(black_box(&payload[..])).unwrap();
                    consumer.receive_into(&mut buf).unwrap().map_or(0, |r| r.1)
                }),
                "facade-nostamp" => repeat(iterations, || {
                    unstamped.send(black_box(&payload[..])).unwrap();
                    consumer.receive_into(&mut buf).unwrap().map_or(0, |r| r.1)
                }),
                "batch" => repeat(iterations, || {
                    producer.send_batch(black_box(&batch[..])).unwrap();
                    consumer
                        .receive_batch_with(BATCH, |_, p| {
                            black_box(p);
                        })
                        .unwrap()
                }),
                "loan" => repeat(iterations, || {
                    let mut loan = producer.loan().unwrap();
                    // The payload always fits; the check is not what is measured.
                    let _ = loan.write_at(0, black_box(&payload[..]));
                    loan.commit(payload.len()).unwrap();
                    let message = consumer.receive_in_place().unwrap().unwrap();
                    black_box(message.payload().word(0)).map_or(0, |_| 1)
                }),
                "loan-copy" => repeat(iterations, || {
                    let mut loan = producer.loan().unwrap();
                    let _ = loan.write_at(0, black_box(&payload[..]));
                    loan.commit(payload.len()).unwrap();
                    consumer.receive_into(&mut buf).unwrap().map_or(0, |r| r.1)
                }),
                "inplace" => repeat(iterations, || {
                    producer.send(black_box(&payload[..])).unwrap();
                    let message = consumer.receive_in_place().unwrap().unwrap();
                    let sum = message.payload().words().fold(0, |sum, word| sum ^ word);
                    black_box(sum) as usize & 1
                }),
                "inplace-word" => repeat(iterations, || {
                    producer.send(black_box(&payload[..])).unwrap();
                    let message = consumer.receive_in_place().unwrap().unwrap();
                    let words = message.payload();
                    let mut sum = 0u64;
                    for index in 0..words.len().div_ceil(8) {
                        sum ^= words.word(index).unwrap_or(0);
                    }
                    black_box(sum) as usize & 1
                }),
                _ => panic!("unknown mode {other}"),
            };
            black_box(n);
            let _ = dmxp::unlink_segment(&name);
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{what}: {iterations} iterations of {size} B in {elapsed:?} ({:.1} ns each, setup \
         included), {} futex_wake calls",
        elapsed.as_secs_f64() * 1e9 / iterations.max(1) as f64,
        dmxp::futex_wake_calls()
    );
    eprintln!(
        "hotpath: mode={what} payload={size} iterations={iterations} messages={}",
        iterations * per_iteration
    );
}

/// Runs `step` `iterations` times; the sum of what it returns.
#[inline(always)]
fn repeat(iterations: u64, mut step: impl FnMut() -> usize) -> usize {
    let mut n = 0;
    for _ in 0..iterations {
        n += step();
    }
    n
}

/// `iterations` of push + pop of one `[u8; N]` on a queue of 1024 in this one thread.
fn array_queue<const N: usize>(iterations: u64) {
    let queue: ArrayQueue<[u8; N]> = ArrayQueue::new(1024);
    let mut sink = 0u8;
    for _ in 0..iterations {
        queue.push(black_box([0x5Au8; N])).unwrap();
        sink ^= queue.pop().unwrap()[0];
    }
    black_box(sink);
}
