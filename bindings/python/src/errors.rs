//! Rust errors to the Python exceptions of `dmxp.errors`.
//!
//! The exception classes are defined in Python (`dmxp/errors.py`) because some of them derive
//! from two bases (`dmxp.TimeoutError` is also a builtin `TimeoutError`); the extension imports
//! that module the first time it raises.

use dmxp::core::{BlobError, Corruption, Error as CoreError, RecvError, SendError};
use dmxp::ErrorKind;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Keyword arguments of an exception's constructor.
type Kwargs<'a> = &'a [(&'static str, Option<u64>)];

/// The class `dmxp.errors.<name>`.
pub(crate) fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || {
        PyModule::import(py, "dmxp.errors").map(Bound::unbind)
    })?;
    module.bind(py).getattr(name)
}

/// Builds `dmxp.errors.<class>(message, **kwargs)`. `None` values are passed as `None`.
pub(crate) fn new_error(py: Python<'_>, class: &str, message: String, kwargs: Kwargs<'_>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = error_class(py, class)?;
        let dict = PyDict::new(py);
        for (key, value) in kwargs {
            dict.set_item(key, value)?;
        }
        let instance = class.call((message,), Some(&dict))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|failure| failure)
}

/// `dmxp.errors.IoError(errno, message)`, an `OSError` with `errno` set when known.
fn io_error(py: Python<'_>, errno: Option<i32>, message: String) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = error_class(py, "IoError")?;
        let instance = match errno {
            Some(errno) => class.call1((errno, message))?,
            None => class.call1((message,))?,
        };
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|failure| failure)
}

/// The class for a corrupt field: the two incompatibility checks get their own subclasses.
fn corrupt_class(field: &str) -> &'static str {
    match field {
        "magic" => "BadMagicError",
        "version" => "UnsupportedVersionError",
        _ => "CorruptError",
    }
}

fn corrupt(py: Python<'_>, field: &str, channel: Option<u32>, message: String) -> PyErr {
    let class = corrupt_class(field);
    let build = || -> PyResult<PyErr> {
        let dict = PyDict::new(py);
        dict.set_item("field", field)?;
        dict.set_item("channel", channel)?;
        let instance = error_class(py, class)?.call((message,), Some(&dict))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|failure| failure)
}

/// An error of the Rust facade (opening segments and channels).
pub(crate) fn from_facade(py: Python<'_>, error: &dmxp::Error) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        ErrorKind::NotFound => new_error(py, "NotFoundError", message, &[]),
        ErrorKind::AlreadyExists => new_error(py, "AlreadyExistsError", message, &[]),
        ErrorKind::Full => new_error(py, "FullError", message, &[]),
        ErrorKind::TooLarge { len, limit } => new_error(
            py,
            "TooLargeError",
            message,
            &[("length", Some(len as u64)), ("limit", Some(limit as u64))],
        ),
        ErrorKind::BufferTooSmall { needed, available } => new_error(
            py,
            "BufferTooSmallError",
            message,
            &[
                ("needed", Some(needed as u64)),
                ("available", Some(available as u64)),
            ],
        ),
        ErrorKind::Timeout => new_error(py, "TimeoutError", message, &[]),
        ErrorKind::Corrupt { field, channel } => corrupt(py, field, channel, message),
        ErrorKind::Lost { message_id } => new_error(
            py,
            "LostError",
            message,
            &[("message_id", Some(message_id))],
        ),
        ErrorKind::InvalidInput => new_error(py, "InvalidInputError", message, &[]),
        ErrorKind::RunsNotSupported { channel } => runs_not_supported(py, channel, message),
        ErrorKind::OutOfSpace => new_error(py, "OutOfSpaceError", message, &[]),
        ErrorKind::Busy => new_error(py, "BusyError", message, &[]),
        ErrorKind::Revoked { message_id } => new_error(
            py,
            "RevokedError",
            message,
            &[("message_id", Some(message_id))],
        ),
        ErrorKind::PoolExhausted { len } => new_error(
            py,
            "PoolExhaustedError",
            message,
            &[("length", Some(len as u64))],
        ),
        ErrorKind::NoBlobPool => new_error(py, "NoBlobPoolError", message, &[]),
        ErrorKind::NotRegistered => new_error(py, "PeerTableFullError", message, &[]),
        ErrorKind::Untrusted { owner, mode } => new_error(
            py,
            "UntrustedError",
            message,
            &[
                ("owner", owner.map(u64::from)),
                ("mode", mode.map(u64::from)),
            ],
        ),
        ErrorKind::Io(_) => {
            let errno = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error);
            io_error(py, errno, message)
        }
        _ => new_error(py, "DmxpError", message, &[]),
    }
}

/// An error of the core's segment operations (attach, open, parse), about `segment`.
pub(crate) fn from_core(py: Python<'_>, error: CoreError, segment: &str) -> PyErr {
    let message = format!("{segment}: {error}");
    match error {
        CoreError::Corrupt(c) => corrupt_error(py, c, segment),
        CoreError::NotReady => new_error(py, "NotReadyError", message, &[]),
        CoreError::RegionTooSmall { .. } => corrupt(py, "segment_size", None, message),
        CoreError::RegionMisaligned { .. }
        | CoreError::InvalidChannelId { .. }
        | CoreError::InvalidCapacity { .. }
        | CoreError::InvalidMaxMessageSize { .. } => {
            new_error(py, "InvalidInputError", message, &[])
        }
        CoreError::ChannelNotFound { .. } => new_error(py, "NotFoundError", message, &[]),
        CoreError::RunsNotSupported { id } => runs_not_supported(py, id, message),
        CoreError::ChannelExists { .. } | CoreError::AlreadyFormatted => {
            new_error(py, "AlreadyExistsError", message, &[])
        }
        CoreError::ChannelBeingCreated { .. } => new_error(py, "TimeoutError", message, &[]),
        CoreError::OutOfSpace { .. } => new_error(py, "OutOfSpaceError", message, &[]),
        CoreError::Busy => new_error(py, "BusyError", message, &[]),
        // The facade's kind for both is OutOfSpace / InvalidInput; the subclass says which.
        CoreError::PeerTableFull => new_error(py, "PeerTableFullError", message, &[]),
        CoreError::InvalidPid | CoreError::InvalidPeerRecords { .. } => {
            new_error(py, "InvalidInputError", message, &[])
        }
        CoreError::InvalidBlobPool => new_error(py, "InvalidInputError", message, &[]),
        CoreError::Blob(e) => blob_error(py, e, message, 0),
    }
}

/// A failed blob-pool operation (PROTOCOL.md §13) on `channel`.
pub(crate) fn from_blob(py: Python<'_>, error: BlobError, channel: u32) -> PyErr {
    blob_error(py, error, format!("channel {channel}: {error}"), 0)
}

/// The exception of a blob-pool error, with `message`; `message_id` for a revoked block.
pub(crate) fn blob_error(
    py: Python<'_>,
    error: BlobError,
    message: String,
    message_id: u64,
) -> PyErr {
    match error {
        BlobError::NoPool | BlobError::NotABlobChannel { .. } => {
            new_error(py, "NoBlobPoolError", message, &[])
        }
        // A handle without a peer record: the table was full when it opened.
        BlobError::NotRegistered => new_error(py, "PeerTableFullError", message, &[]),
        BlobError::InvalidSpec => new_error(py, "InvalidInputError", message, &[]),
        BlobError::TooLarge { len, largest } => new_error(
            py,
            "TooLargeError",
            message,
            &[("length", Some(len as u64)), ("limit", Some(largest))],
        ),
        BlobError::PoolExhausted { len } => new_error(
            py,
            "PoolExhaustedError",
            message,
            &[("length", Some(len as u64))],
        ),
        BlobError::TimedOut => new_error(py, "TimeoutError", message, &[]),
        BlobError::Revoked => new_error(
            py,
            "RevokedError",
            message,
            &[("message_id", Some(message_id))],
        ),
    }
}

/// A corruption found by validation, naming the field.
pub(crate) fn corrupt_error(py: Python<'_>, c: Corruption, segment: &str) -> PyErr {
    corrupt(
        py,
        c.field(),
        c.channel(),
        format!("{segment}: corrupt segment: {c}"),
    )
}

/// A failed send on `channel`.
pub(crate) fn from_send(py: Python<'_>, error: SendError, channel: u32) -> PyErr {
    match error {
        SendError::Full => new_error(py, "FullError", format!("channel {channel} is full"), &[]),
        SendError::TooLarge { len, limit } => new_error(
            py,
            "TooLargeError",
            format!(
                "channel {channel}: message of {len} bytes exceeds the limit of {limit} bytes \
                 (nothing sent)"
            ),
            &[("length", Some(len as u64)), ("limit", Some(limit as u64))],
        ),
        SendError::ReservedFlags { flags } => new_error(
            py,
            "InvalidInputError",
            format!("channel {channel}: flags {flags:#06x} set protocol-reserved bits (0x00ff)"),
            &[],
        ),
        SendError::Busy => new_error(
            py,
            "BusyError",
            format!("channel {channel}: send gave up after too many contended retries"),
            &[],
        ),
        SendError::TimedOut => new_error(
            py,
            "TimeoutError",
            format!("channel {channel}: timed out waiting for a free slot"),
            &[],
        ),
        SendError::Revoked { message_id } => new_error(
            py,
            "RevokedError",
            format!(
                "channel {channel}: the claim on position {message_id} was revoked by a repair \
                 before it was published (this producer was judged dead or held it past the \
                 unblock timeout); the message may or may not have been delivered"
            ),
            &[("message_id", Some(message_id))],
        ),
    }
}

/// A failed receive on `channel` (never `Empty`, which is not an error).
pub(crate) fn from_recv(py: Python<'_>, error: RecvError, channel: u32) -> PyErr {
    match error {
        RecvError::Empty | RecvError::Pending { .. } => {
            new_error(py, "DmxpError", format!("channel {channel} is empty"), &[])
        }
        RecvError::BufferTooSmall { needed, available } => new_error(
            py,
            "BufferTooSmallError",
            format!(
                "channel {channel}: buffer of {available} bytes too small for a {needed}-byte \
                 message (nothing consumed)"
            ),
            &[
                ("needed", Some(needed as u64)),
                ("available", Some(available as u64)),
            ],
        ),
        RecvError::Corrupt {
            message_id,
            payload_len,
        } => corrupt(
            py,
            "payload_len",
            Some(channel),
            format!(
                "channel {channel}: message {message_id} dropped as corrupt (payload_len \
                 {payload_len})"
            ),
        ),
        RecvError::Lost { message_id } => new_error(
            py,
            "LostError",
            format!("channel {channel}: message {message_id} lost (its producer died)"),
            &[("message_id", Some(message_id))],
        ),
        RecvError::Busy => new_error(
            py,
            "BusyError",
            format!("channel {channel}: receive gave up after too many contended retries"),
            &[],
        ),
        RecvError::TimedOut => new_error(
            py,
            "TimeoutError",
            format!("channel {channel}: timed out waiting for a message"),
            &[],
        ),
        RecvError::Revoked { message_id } => new_error(
            py,
            "RevokedError",
            format!(
                "channel {channel}: the claim on message {message_id} was revoked by a repair \
                 before this consumer freed it; nothing delivered"
            ),
            &[("message_id", Some(message_id))],
        ),
        // The receives route these themselves (a blob copied, an inline message received
        // as one); reaching here is a bug, reported as it is.
        RecvError::IsBlob { .. } | RecvError::NotABlob { .. } => {
            new_error(py, "DmxpError", format!("channel {channel}: {error}"), &[])
        }
        RecvError::NotRegistered => new_error(
            py,
            "PeerTableFullError",
            format!("channel {channel}: {error}"),
            &[],
        ),
    }
}

/// The error every method of a closed producer or consumer raises.
pub(crate) fn closed(py: Python<'_>, what: &str) -> PyErr {
    new_error(py, "ClosedError", format!("{what} is closed"), &[])
}

/// `dmxp.errors.RunsNotSupportedError`: a channel that carries runs, refused on request
/// (`single_slot_only=True`, PROTOCOL.md §12.1).
pub(crate) fn runs_not_supported(py: Python<'_>, channel: u32, message: String) -> PyErr {
    new_error(
        py,
        "RunsNotSupportedError",
        message,
        &[("channel", Some(u64::from(channel)))],
    )
}

/// A bad argument.
pub(crate) fn invalid(py: Python<'_>, message: String) -> PyErr {
    new_error(py, "InvalidInputError", message, &[])
}
