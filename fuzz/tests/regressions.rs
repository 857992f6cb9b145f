//! Library bugs the fuzz targets found, reproduced without a fuzz input, kept as regression
//! tests once fixed.

use dmxp_fuzz::support::{formatted_segment, Patience};
use dmxp_nostd::layout::{HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{ChannelOptions, Region, Segment, SendError, SendMeta};
use std::sync::mpsc;
use std::time::Duration;
use zerocopy::IntoBytes;

/// `send_blocking` of a run that does not fit while the slot at `tail` is free must wait and
/// time out. (It used to spin for ever: its wait's readiness check looked at the slot at
/// `tail` only, found it free and returned without asking the wait strategy; a run now waits
/// until all its slots are free.)
#[test]
fn blocking_run_send_that_does_not_fit_times_out() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut memory = formatted_segment(HEADER_SIZE + 4 * SLOT_SIZE, 1);
        let region = Region::new(memory.as_mut_bytes()).expect("aligned");
        let segment = Segment::attach(region).expect("formatted");
        let options = ChannelOptions::default().with_max_message_size(4 * MSG_INLINE);
        let (channel, _) = segment
            .open_or_create_channel_with(0, 4, 1, options)
            .expect("room");
        let meta = SendMeta::default();
        // Two of four slots taken: a three-slot run does not fit, the slot at tail is free.
        channel.try_send(b"one", &meta).expect("room");
        channel.try_send(b"two", &meta).expect("room");
        let run = vec![7u8; 3 * MSG_INLINE];
        assert_eq!(channel.try_send(&run, &meta), Err(SendError::Full));
        let result = channel.send_blocking(&run, &meta, &Patience::new(2));
        done.send(result).expect("the test waits");
    });
    let result = finished
        .recv_timeout(Duration::from_secs(5))
        .expect("send_blocking did not return within 5 s");
    assert_eq!(result, Err(SendError::TimedOut));
}
