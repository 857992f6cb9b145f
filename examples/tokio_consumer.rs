//! One tokio task set on a current-thread runtime serving many channels: one task per
//! channel awaits its messages (`receive_async`, an io_uring futex wait, PROTOCOL.md §7.4),
//! and no thread is parked per channel.
//!
//! ```text
//! cargo run -p dmxp --features tokio,file --example tokio_consumer -- [CHANNELS] [PER_CHANNEL]
//! ```
//!
//! Without a second program at hand, it feeds itself: a plain thread sends `PER_CHANNEL`
//! messages on each of `CHANNELS` channels (default 64 × 1,000) of a file segment in the temp
//! directory, round-robin, blocking while a ring is full. Point a producer of your own at the
//! same file and channel ids to feed it from another process instead.

use std::time::{Duration, Instant};

use dmxp::{ChannelBuilder, Consumer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channels: u32 = args.next().map_or(Ok(64), |a| a.parse())?;
    let per_channel: u64 = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let path = std::env::temp_dir().join(format!("dmxp-tokio-consumer-{}", std::process::id()));
    let builder = |channel: u32| {
        ChannelBuilder::new()
            .with_file(&path)
            .with_segment_size(8 << 20)
            .with_channel_id(channel)
            .with_capacity(16)
    };

    // Create the channels, then feed them from a thread (any process would do).
    let producers = (0..channels)
        .map(|channel| builder(channel).build_producer())
        .collect::<dmxp::Result<Vec<_>>>()?;
    let consumers: Vec<Consumer> = (0..channels)
        .map(|channel| builder(channel).build_consumer())
        .collect::<dmxp::Result<_>>()?;
    let feeder = std::thread::spawn(move || -> dmxp::Result<()> {
        for index in 0..per_channel {
            for producer in &producers {
                producer.send_blocking(index.to_le_bytes())?;
            }
        }
        Ok(())
    });

    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = runtime.block_on(async {
        let mut tasks = Vec::new();
        for mut consumer in consumers {
            tasks.push(tokio::spawn(async move {
                for expected in 0..per_channel {
                    let payload = consumer.receive_async().await?;
                    assert_eq!(payload, expected.to_le_bytes(), "in order, exactly once");
                }
                Ok::<_, dmxp::Error>((consumer.channel_id(), consumer.async_wakeup()))
            }));
        }
        let mut total = 0;
        for task in tasks {
            let (channel, wakeup) = task.await.expect("task panicked")?;
            if channel == 0 {
                println!("woken by: {wakeup:?}");
            }
            total += per_channel;
        }
        Ok::<_, dmxp::Error>(total)
    })?;
    feeder.join().expect("feeder panicked")?;
    let elapsed = started.elapsed();
    println!(
        "{total} messages on {channels} channels in {elapsed:.2?} on one thread \
         ({:.0} messages/s)",
        total as f64 / elapsed.max(Duration::from_nanos(1)).as_secs_f64()
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}
