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
//!   object afterwards, only the bytes written (see [`with_writable`]).
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

/// Calls `f` with room for the bytes to be written into a writable bytes-like object
/// (bytearray, memoryview, array, ...): private memory of the object's length, at most
/// `MSG_INLINE` (960) bytes, which any message fits. `f` returns its result and how many
/// leading bytes it wrote; those are then copied into the object, with the GIL held.
///
/// Private memory because `f` may release the GIL (a receive waiting for a message in flight)
/// and no export pins the object meanwhile: another thread could resize a bytearray. If the
/// object shrank below what `f` wrote by then, BufferError is raised (the bytes are lost).
pub(crate) fn with_writable<R>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&mut [u8]) -> (R, usize),
) -> PyResult<R> {
    let mut private = [0u8; MSG_INLINE];
    if let Ok(array) = obj.cast::<PyByteArray>() {
        let room = array.len().min(MSG_INLINE);
        let (result, written) = f(&mut private[..room]);
        if written > 0 {
            // SAFETY: the slice lives only in this block, with the GIL held: no Python code
            // runs meanwhile, and it is the only Rust reference to this memory.
            let memory = unsafe { array.as_bytes_mut() };
            match memory.get_mut(..written) {
                Some(dst) => dst.copy_from_slice(&private[..written]),
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
        let room = bytes.len()?.min(MSG_INLINE);
        let (result, written) = f(&mut private[..room]);
        let copied = match written {
            0 => Ok(()),
            n if n > bytes.len().unwrap_or(0) => Err(shrank(n, bytes.len().unwrap_or(0))),
            n => bytes.set_item(
                PySlice::new(py, 0, n as isize, 1),
                PyBytes::new(py, &private[..n]),
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
