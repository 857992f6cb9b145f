//! A fixed amount of hot-path work in one thread, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/hotpath <what> <iterations>`.
//! `what` is `core` (the ring over ordinary memory), `core-reg` (the same with peer records
//! registered, so every claim writes intents), `facade` (Producer::send +
//! Consumer::receive_into on a shm segment), `facade-waiter` (the same while a waiter is
//! counted in the channel's `not_empty_waiters`: a registration held open through the core, as
//! a blocked receiver's is, so every send bumps the wait word and calls `futex_wake`), `batch`
//! (send_batch + receive_batch_with of 16), or `loan` (loan + commit, receive_in_place). Divide
//! the instruction count by the iterations (minus a run with 0 iterations for the setup) to
//! get instructions per message. The time per iteration (outside valgrind: native) goes to
//! stderr.

use dmxp::ChannelBuilder;
use dmxp_nostd::layout::{HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{AlignedBlock, PeerRole, Region, Segment, SendMeta};
use std::hint::black_box;
use std::time::Instant;
use zerocopy::IntoBytes;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "core".into());
    let iterations: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let payload = [0x5Au8; 32];
    let mut buf = [0u8; MSG_INLINE];
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
                channel.try_send(black_box(&payload), &meta).unwrap();
                black_box(channel.try_recv(&mut buf).unwrap());
            }
        }
        other => {
            let name = format!("/dmxp-hotpath-{}", std::process::id());
            let builder = ChannelBuilder::new()
                .with_segment_name(&name)
                .with_segment_size(4 << 20);
            let producer = builder.build_producer().unwrap();
            let consumer = builder.build_consumer().unwrap();
            let batch = [payload; 16];
            // `facade-waiter`: a waiter counted in `not_empty_waiters` for the whole loop (a
            // registration through the core over the same segment, never asleep and never
            // receiving), so that every send takes the wake path: it bumps `not_empty_seq` and
            // calls `futex_wake`, which finds nobody asleep on the word.
            let allocator = builder.attach_allocator().unwrap();
            let segment = Segment::attach(allocator.memory().region()).unwrap();
            let channel = segment.open_channel(0).unwrap();
            let _waiter = (other == "facade-waiter").then(|| channel.register_for_message());
            assert_eq!(producer.waiters().0, u32::from(other == "facade-waiter"));
            let mut n = 0;
            for _ in 0..iterations {
                match other {
                    "facade" | "facade-waiter" => {
                        producer.send(black_box(&payload)).unwrap();
                        n += consumer.receive_into(&mut buf).unwrap().map_or(0, |r| r.1);
                    }
                    "batch" => {
                        producer.send_batch(black_box(&batch)).unwrap();
                        n += consumer
                            .receive_batch_with(16, |_, p| {
                                black_box(p);
                            })
                            .unwrap();
                    }
                    "loan" => {
                        let mut loan = producer.loan().unwrap();
                        // 32 bytes always fit; the check is not what is measured.
                        let _ = loan.write_at(0, black_box(&payload));
                        loan.commit(payload.len()).unwrap();
                        let message = consumer.receive_in_place().unwrap().unwrap();
                        n += black_box(message.payload().word(0)).map_or(0, |_| 1);
                    }
                    _ => panic!("unknown mode {other}"),
                }
            }
            black_box(n);
            let _ = dmxp::unlink_segment(&name);
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{what}: {iterations} iterations in {elapsed:?} ({:.1} ns each, setup included), \
         {} futex_wake calls",
        elapsed.as_secs_f64() * 1e9 / iterations.max(1) as f64,
        dmxp::futex_wake_calls()
    );
}
