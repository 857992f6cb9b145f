//! Micro-benchmarks of the core ring in one process (no OS, no second core): the cost of the
//! operations themselves, over a segment in ordinary memory.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dmxp_nostd::layout::{HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
use zerocopy::IntoBytes;

const CAPACITY: u64 = 1024;

fn memory() -> Vec<AlignedBlock> {
    vec![AlignedBlock::ZERO; AlignedBlock::count_for(HEADER_SIZE + CAPACITY as usize * SLOT_SIZE)]
}

fn send_recv(c: &mut Criterion) {
    let mut blocks = memory();
    let segment = Segment::format(Region::new(blocks.as_mut_bytes()).unwrap(), 1).unwrap();
    let channel = segment.create_channel(0, CAPACITY, 1).unwrap();
    let meta = SendMeta::default();
    let mut buf = [0u8; MSG_INLINE];
    let mut group = c.benchmark_group("try_send+try_recv");
    for size in [32usize, 256, 960] {
        let payload = vec![0x5Au8; size];
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            b.iter(|| {
                channel.try_send(black_box(payload), &meta).unwrap();
                let got = channel.try_recv(&mut buf).unwrap();
                black_box(got.len)
            })
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let mut blocks = memory();
    let segment = Segment::format(Region::new(blocks.as_mut_bytes()).unwrap(), 1).unwrap();
    let channel = segment.create_channel(0, CAPACITY, 1).unwrap();
    let meta = SendMeta::default();
    let payloads = vec![[0x5Au8; 32]; 16];
    let mut group = c.benchmark_group("batch of 16");
    group.throughput(Throughput::Elements(16));
    group.bench_function("try_send_batch+try_recv_batch 32 B", |b| {
        b.iter(|| {
            assert_eq!(
                channel.try_send_batch(black_box(&payloads), &meta).unwrap(),
                16
            );
            let mut sum = 0usize;
            let got = channel
                .try_recv_batch(16, |_, payload| sum += payload.len())
                .unwrap();
            black_box((got.delivered, sum))
        })
    });
    group.finish();
}

fn zero_copy(c: &mut Criterion) {
    let mut blocks = memory();
    let segment = Segment::format(Region::new(blocks.as_mut_bytes()).unwrap(), 1).unwrap();
    let channel = segment.create_channel(0, CAPACITY, 1).unwrap();
    let meta = SendMeta::default();
    let payload = [0x5Au8; 32];
    let mut group = c.benchmark_group("zero-copy");
    group.throughput(Throughput::Elements(1));
    group.bench_function("loan write 32 B + commit, recv_in_place read word", |b| {
        b.iter(|| {
            let mut loan = channel.try_loan().unwrap();
            // 32 bytes always fit; the check is not what is measured.
            let _ = loan.payload().write_at(0, black_box(&payload));
            loan.commit(payload.len(), &meta).unwrap();
            let guard = channel.try_recv_in_place().unwrap();
            black_box(guard.payload().word(0))
        })
    });
    group.bench_function("try_send 32 B + recv_in_place read word", |b| {
        b.iter(|| {
            channel.try_send(black_box(&payload), &meta).unwrap();
            let guard = channel.try_recv_in_place().unwrap();
            black_box(guard.payload().word(0))
        })
    });
    group.finish();
}

criterion_group!(benches, send_recv, batch, zero_copy);
criterion_main!(benches);
