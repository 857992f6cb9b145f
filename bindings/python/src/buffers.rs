//! Bytes-like arguments within the limited C API of Python 3.9 (the extension is built for
//! the stable ABI, `abi3-py39`: one wheel for every CPython from 3.9 on).
//!
//! The buffer protocol (`PyObject_GetBuffer`) joined the limited API only in Python 3.11, so
//! it is not used. Instead:
//!
//! - `bytes` (the common, fastest case) and `bytearray` are read in place through their own
//!   functions (`PyBytes_AsString`, `PyByteArray_AsString`, both in the limited API): no
//!   copy.
//! - Anything else that exports a buffer (memoryview, array, numpy arrays, mmap) goes through a
//!   Python `memoryview` of it: read as one copy of its bytes (`tobytes()`). Such a buffer
//!   must be C-contiguous; its bytes are taken raw, whatever its item format.
//! - Writes (`Consumer.receive_into`) go to private memory first and are copied into the
//!   object afterwards, only the bytes written (see [`with_writable`]). That memory is a
//!   [`MessageBuf`]: on the stack for a message of one slot, on the heap, sized to the
//!   message, only for a longer one.
//!
//! The slices handed out here live only while the GIL is held: no Python code runs and resizes
//! or rewrites the object meanwhile. Callers never keep them across `Python::detach`.

use dmxp::core::layout::MSG_INLINE;
use pyo3::exceptions::PyBufferError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PySlice};

/// A memoryview of `obj` (TypeError if `obj` exports no buffer), checked C-contiguous.
fn contiguous_view<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyMemoryView>> {
    let py = obj.py();
    let view = PyMemoryView::from(obj)?;
    if !view.getattr(intern!(py, "c_contiguous"))?.is_truthy()? {
        release(&view);
        return Err(PyBufferError::new_err("the buffer must be C-contiguous"));
    }
    Ok(view)
}

/// Ends the memoryview's export at once (a bytearray behind it may be resized again).
fn release(view: &Bound<'_, PyAny>) {
    // `release()` fails only while the view itself is exported further, which ours never is.
    let _ = view.call_method0(intern!(view.py(), "release"));
}

/// A copy of the bytes of a C-contiguous buffer other than bytes and bytearray.
fn copy_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let view = contiguous_view(obj)?;
    let copy = view.call_method0(intern!(obj.py(), "tobytes"));
    release(&view);
    Ok(copy?.cast_into::<PyBytes>()?)
}

/// Calls `f` with the bytes of a bytes-like object.
pub(crate) fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    if let Ok(array) = obj.cast::<PyByteArray>() {
        // SAFETY: the slice is used only inside `f`, with the GIL held (module invariant), so
        // no Python code resizes or rewrites the bytearray meanwhile.
        return Ok(f(unsafe { array.as_bytes() }));
    }
    Ok(f(copy_of(obj)?.as_bytes()))
}

/// Private memory for one message: a slot's worth on the stack (no allocation for a message of
/// one slot, the common case), grown on the heap to the length of a longer message (a run,
/// PROTOCOL.md §12) when a receive reports it, up to a cap.
pub(crate) struct MessageBuf {
    inline: [u8; MSG_INLINE],
    heap: Vec<u8>,
    /// The room offered now: `min(cap, 960)`, or more once grown.
    room: usize,
    /// The most this buffer may offer (the caller's buffer length, or unbounded).
    cap: usize,
}

impl MessageBuf {
    /// A buffer that grows to any message (the channel's limit bounds what a receive asks).
    pub fn growable() -> Self {
        Self::capped(usize::MAX)
    }

    /// A buffer that offers at most `cap` bytes.
    pub fn capped(cap: usize) -> Self {
        Self {
            inline: [0; MSG_INLINE],
            heap: Vec::new(),
            room: cap.min(MSG_INLINE),
            cap,
        }
    }

    /// A private copy of `payload`.
    pub fn holding(payload: &[u8]) -> Self {
        let mut buf = Self::capped(payload.len());
        if payload.len() > MSG_INLINE {
            buf.heap = payload.to_vec();
            buf.room = payload.len();
        } else {
            buf.room().copy_from_slice(payload);
        }
        buf
    }

    /// The room offered now.
    pub fn room(&mut self) -> &mut [u8] {
        if self.room <= MSG_INLINE {
            &mut self.inline[..self.room]
        } else {
            &mut self.heap[..self.room]
        }
    }

    /// The first `len` bytes written into the room (`len` at most the room).
    pub fn filled(&self, len: usize) -> &[u8] {
        if self.room <= MSG_INLINE {
            &self.inline[..len]
        } else {
            &self.heap[..len]
        }
    }

    /// The most this buffer offers: what a "buffer too small" error reports as available.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Offers `needed` bytes of room (a message of that length is waiting); false when that
    /// is more than the cap or no more than the room already offered.
    pub fn grow(&mut self, needed: usize) -> bool {
        if needed > self.cap || needed <= self.room {
            return false;
        }
        if needed > MSG_INLINE {
            self.heap.resize(needed, 0);
        }
        self.room = needed;
        true
    }
}

/// Calls `f` with private memory for a message to be written into a writable bytes-like
/// object (bytearray, memoryview, array, numpy array...): a [`MessageBuf`] capped at the
/// object's length (so a message longer than the object is refused, left in the ring), which
/// allocates only for a message longer than one slot. `f` returns its result and how many
/// leading bytes it wrote; those are then copied into the object, with the GIL held.
///
/// Private memory because `f` may release the GIL (a receive waiting for a message in flight)
/// and no export pins the object meanwhile: another thread could resize a bytearray. If the
/// object shrank below what `f` wrote by then, BufferError is raised (the bytes are lost).
pub(crate) fn with_writable<R>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&mut MessageBuf) -> (R, usize),
) -> PyResult<R> {
    if let Ok(array) = obj.cast::<PyByteArray>() {
        let mut private = MessageBuf::capped(array.len());
        let (result, written) = f(&mut private);
        if written > 0 {
            // SAFETY: the slice lives only in this block, with the GIL held: no Python code
            // runs meanwhile, and it is the only Rust reference to this memory.
            let memory = unsafe { array.as_bytes_mut() };
            match memory.get_mut(..written) {
                Some(dst) => dst.copy_from_slice(private.filled(written)),
                None => return Err(shrank(written, memory.len())),
            }
        }
        return Ok(result);
    }
    let py = obj.py();
    let view = PyMemoryView::from(obj)?;
    if view.getattr(intern!(py, "readonly"))?.is_truthy()? {
        release(&view);
        return Err(PyBufferError::new_err(
            "the buffer is read-only: pass a bytearray or a writable memoryview",
        ));
    }
    if !view.getattr(intern!(py, "c_contiguous"))?.is_truthy()? {
        release(&view);
        return Err(PyBufferError::new_err("the buffer must be C-contiguous"));
    }
    let outcome = (|| {
        // Raw bytes, whatever the item format and shape.
        let bytes = view.call_method1(intern!(py, "cast"), ("B",))?;
        let mut private = MessageBuf::capped(bytes.len()?);
        let (result, written) = f(&mut private);
        let copied = match written {
            0 => Ok(()),
            n if n > bytes.len().unwrap_or(0) => Err(shrank(n, bytes.len().unwrap_or(0))),
            n => bytes.set_item(
                PySlice::new(py, 0, n as isize, 1),
                PyBytes::new(py, private.filled(n)),
            ),
        };
        release(&bytes);
        copied.map(|()| result)
    })();
    release(&view);
    outcome
}

fn shrank(written: usize, len: usize) -> PyErr {
    PyBufferError::new_err(format!(
        "the buffer shrank to {len} bytes while receiving a {written}-byte message (dropped)"
    ))
}

/// A list (or any iterable) of bytes-like objects, viewed as slices.
pub(crate) struct Payloads<'py> {
    /// Each a `bytes`: the payloads that are not are copied once (the GIL is released between
    /// the batches of `send_all`, so no pointer into a mutable object is kept).
    items: Vec<Bound<'py, PyBytes>>,
}

impl<'py> Payloads<'py> {
    /// Collects the items of `payloads`, copying those that are not `bytes`.
    pub fn collect(payloads: &Bound<'py, PyAny>) -> PyResult<Self> {
        let items = payloads
            .try_iter()?
            .map(|item| {
                let item = item?;
                match item.cast_into::<PyBytes>() {
                    Ok(bytes) => Ok(bytes),
                    Err(e) => {
                        let item = e.into_inner();
                        match item.cast::<PyByteArray>() {
                            Ok(array) => Ok(PyBytes::new(item.py(), &array.to_vec())),
                            Err(_) => copy_of(&item),
                        }
                    }
                }
            })
            .collect::<PyResult<_>>()?;
        Ok(Self { items })
    }

    /// The payloads as slices, in order.
    pub fn slices(&self) -> PyResult<Vec<&[u8]>> {
        Ok(self.items.iter().map(|bytes| bytes.as_bytes()).collect())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}
