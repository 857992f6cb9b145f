//! Position independence: one memfd mapped twice in this process, so the same segment lives at
//! two different addresses, as it does for two processes (or a guest and its host). Everything
//! inside the segment is an offset, so each view must see what the other wrote.

#![cfg(all(target_os = "linux", not(loom)))]

use dmxp_nostd::layout::{HEADER_SIZE, SLOT_SIZE};
use dmxp_nostd::{Channel, Region, Segment, SendMeta};
use rustix::fd::OwnedFd;
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;
use std::ptr::{self, NonNull};

/// One read-write `MAP_SHARED` mapping of a whole memfd, unmapped on drop.
struct Mapping {
    base: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize) -> Self {
        // SAFETY: with a null hint and no MAP_FIXED the kernel picks fresh addresses, so the
        // new mapping replaces no memory this process uses; `fd` is a memfd of `len` bytes.
        let base = unsafe {
            mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap of the memfd");
        Self {
            base: NonNull::new(base).expect("mmap returned null"),
            len,
        }
    }

    fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// The mapping as a region, for as long as `self` is borrowed.
    fn region(&self) -> Region<'_> {
        // SAFETY: the mapping is readable and writable for `len` bytes until `self` is dropped,
        // which the borrow prevents while the region lives; the pointer is mmap's return value
        // (write provenance); this process touches the mapping only through regions (atomics).
        unsafe { Region::from_raw_parts(self.base.as_ptr().cast(), self.len) }
            .expect("mmap returns page-aligned memory")
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` describe exactly the mapping made in `new`, and no region
        // borrowed from `self` is alive (dropping needs `&mut self`).
        unsafe { munmap(self.base.as_ptr(), self.len) }.expect("munmap");
    }
}

fn meta(message_type: u32) -> SendMeta {
    SendMeta {
        message_type,
        sender_pid: std::process::id(),
        sender_runtime: 1,
        ..SendMeta::default()
    }
}

/// Sends `count` messages through `from` and receives each through `to`, checking the
/// payload, the id and the metadata.
fn relay(from: &Channel<'_>, to: &Channel<'_>, count: u64, message_type: u32) {
    let mut out = [0u8; 960];
    for _ in 0..count {
        let text = format!("message {} of type {message_type}", from.tail());
        let id = from.try_send(text.as_bytes(), &meta(message_type)).unwrap();
        let received = to.try_recv(&mut out).unwrap();
        assert_eq!(&out[..received.len], text.as_bytes());
        assert_eq!(received.meta.message_id, id);
        assert_eq!(received.meta.message_type, message_type);
        assert_eq!(received.meta.channel_id, to.id());
        assert_eq!(received.meta.sender_pid, std::process::id());
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn one_segment_at_two_addresses() {
    let len = HEADER_SIZE + (8 + 2) * SLOT_SIZE;
    let fd = memfd_create("dmxp-position-independence", MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&fd, len as u64).unwrap();
    let a = Mapping::new(&fd, len);
    let b = Mapping::new(&fd, len);
    assert_ne!(a.addr(), b.addr(), "two mappings at two addresses");

    let pid = std::process::id();
    let segment_a = Segment::format(a.region(), pid).unwrap();
    let channel_a = segment_a.create_channel(3, 8, pid).unwrap();

    let segment_b = Segment::attach(b.region()).unwrap();
    assert_eq!(segment_b.creator_pid(), pid);
    assert_eq!(segment_b.channel_count(), 1);
    let channel_b = segment_b.open_channel(3).unwrap();
    assert_eq!(channel_b.geometry(), channel_a.geometry());

    // Both directions, over several laps of the 8-slot ring.
    relay(&channel_a, &channel_b, 30, 1);
    relay(&channel_b, &channel_a, 30, 2);
    assert_eq!((channel_a.head(), channel_a.tail()), (60, 60));
    assert_eq!((channel_b.head(), channel_b.tail()), (60, 60));

    // A ring filled through both views drains in order through either.
    for i in 0..8u8 {
        let sender = if i % 2 == 0 { &channel_a } else { &channel_b };
        sender.try_send(&[i; 9], &meta(3)).unwrap();
    }
    assert!(!channel_a.has_free_slot() && !channel_b.has_free_slot());
    let mut out = [0u8; 960];
    for i in 0..8u8 {
        let receiver = if i % 3 == 0 { &channel_b } else { &channel_a };
        let received = receiver.try_recv(&mut out).unwrap();
        assert_eq!(&out[..received.len], &[i; 9]);
    }

    // A loan written in place through B is read in place through A.
    let mut loan = channel_b.try_loan().unwrap();
    assert!(loan.payload().write_at(0, b"written at address B"));
    loan.commit(20, &meta(4)).unwrap();
    {
        let guard = channel_a.try_recv_in_place().unwrap();
        let mut text = [0u8; 20];
        assert_eq!(guard.payload().copy_to(&mut text), 20);
        assert_eq!(&text, b"written at address B");
        assert_eq!(guard.meta().message_type, 4);
    }

    // A channel created through B is visible through A.
    let second_b = segment_b.create_channel(9, 2, pid).unwrap();
    let second_a = segment_a.open_channel(9).unwrap();
    assert_eq!(second_a.geometry(), second_b.geometry());
    assert_eq!(
        second_a.geometry().band_offset,
        (HEADER_SIZE + 8 * SLOT_SIZE) as u64
    );
    assert_eq!(segment_a.channel_count(), 2);
    assert_eq!(segment_a.free_space(), 0);
    relay(&second_a, &second_b, 5, 5);
    relay(&second_b, &second_a, 5, 6);
    segment_a.validate_all().unwrap();
    segment_b.validate_all().unwrap();
}
