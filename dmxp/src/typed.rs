//! Typed messages: a plain `#[repr(C)]` value sent as its bytes and received back as a value,
//! with no glue written by hand. [zerocopy]'s derives say which types qualify: `IntoBytes +
//! Immutable` to send (no padding, no interior mutability), `FromBytes` to receive (every bit
//! pattern is a value, so bytes from another process can never make an invalid one).
//!
//! A type larger than a slot's payload ([`MSG_INLINE`], 960 bytes) does not compile.

use std::mem::size_of;
use std::time::Duration;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::error::{Error, ErrorKind, Result};
use crate::{Consumer, Message, Producer, MSG_INLINE};

/// Fails to compile for a `T` larger than one slot's payload.
const fn fits_a_slot<T>() -> usize {
    assert!(
        size_of::<T>() <= MSG_INLINE,
        "a typed message must fit in one slot's 960-byte payload"
    );
    size_of::<T>()
}

impl Producer {
    /// Sends `value` as one message of `size_of::<T>()` bytes, without blocking (as
    /// [`Self::send`]): its message id, or `Full`.
    ///
    /// ```
    /// use zerocopy::{Immutable, IntoBytes, FromBytes, KnownLayout};
    ///
    /// #[derive(IntoBytes, FromBytes, Immutable, KnownLayout, Debug, PartialEq)]
    /// #[repr(C)]
    /// struct Quote {
    ///     price: f64,
    ///     quantity: u32,
    ///     venue: u32,
    /// }
    ///
    /// # let name = format!("/dmxp_doc_quotes_{}", std::process::id());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_segment_name(&name)
    ///     .with_segment_size(1 << 20)
    ///     .with_capacity(8);
    /// let producer = builder.clone().build_producer()?;
    /// let consumer = builder.build_consumer()?;
    ///
    /// let quote = Quote { price: 101.25, quantity: 300, venue: 7 };
    /// producer.send_value(&quote)?;
    /// assert_eq!(consumer.receive_value::<Quote>()?, Some(quote));
    /// # dmxp::unlink_segment(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// A type that does not fit in a slot is refused when the program is compiled:
    ///
    /// ```compile_fail
    /// let send: fn(&dmxp::Producer, &[u8; 961]) -> dmxp::Result<u64> = dmxp::Producer::send_value;
    /// # let _ = send;
    /// ```
    pub fn send_value<T: IntoBytes + Immutable>(&self, value: &T) -> Result<u64> {
        const { fits_a_slot::<T>() };
        self.send(value.as_bytes())
    }

    /// [`Self::send_value`], sleeping while the ring is full for at most `timeout` (as
    /// [`Self::send_timeout`]).
    pub fn send_value_timeout<T: IntoBytes + Immutable>(
        &self,
        value: &T,
        timeout: Duration,
    ) -> Result<u64> {
        const { fits_a_slot::<T>() };
        self.send_timeout(value.as_bytes(), timeout)
    }
}

impl Consumer {
    /// Receives the next message as a `T`, without blocking (as [`Self::receive`]): `None`
    /// when the channel is empty. A message whose length is not `size_of::<T>()` is consumed
    /// and reported as [`ErrorKind::WrongSize`]; the channel goes on.
    ///
    /// ```
    /// # let name = format!("/dmxp_doc_pairs_{}", std::process::id());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_segment_name(&name)
    ///     .with_segment_size(1 << 20)
    ///     .with_capacity(8);
    /// let producer = builder.clone().build_producer()?;
    /// let consumer = builder.build_consumer()?;
    ///
    /// producer.send_value(&[1u32, 2])?;
    /// producer.send(b"three bytes")?;
    /// assert_eq!(consumer.receive_value::<[u32; 2]>()?, Some([1, 2]));
    /// let wrong = consumer.receive_value::<[u32; 2]>().unwrap_err();
    /// assert!(matches!(wrong.kind(), dmxp::ErrorKind::WrongSize { expected: 8, found: 11, .. }));
    /// assert_eq!(consumer.receive_value::<[u32; 2]>()?, None);
    /// # dmxp::unlink_segment(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_value<T: FromBytes>(&self) -> Result<Option<T>> {
        const { fits_a_slot::<T>() };
        let mut buf = [0u8; MSG_INLINE];
        match self.receive_into(&mut buf)? {
            None => Ok(None),
            Some((meta, len)) => self.value_of(&buf[..len], meta.message_id).map(Some),
        }
    }

    /// [`Self::receive_value`], sleeping while the channel is empty for at most `timeout` (as
    /// [`Self::receive_timeout`]).
    pub fn receive_value_timeout<T: FromBytes>(&self, timeout: Duration) -> Result<Option<T>> {
        const { fits_a_slot::<T>() };
        match self.receive_timeout(timeout)? {
            None => Ok(None),
            Some(Message { payload, meta }) => self.value_of(&payload, meta.message_id).map(Some),
        }
    }

    /// `bytes` as a `T`, or the `WrongSize` error naming message `message_id`.
    fn value_of<T: FromBytes>(&self, bytes: &[u8], message_id: u64) -> Result<T> {
        T::read_from_bytes(bytes).map_err(|_| {
            let (expected, found) = (size_of::<T>(), bytes.len());
            Error::new(
                ErrorKind::WrongSize {
                    expected,
                    found,
                    message_id,
                },
                format!(
                    "{}: channel {}: message {message_id} has {found} bytes, the type received \
                     has {expected}",
                    self.segment(),
                    self.channel_id()
                ),
            )
        })
    }
}
