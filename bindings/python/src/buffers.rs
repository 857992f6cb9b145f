//! Bytes-like arguments through the buffer protocol, without copying.
//!
//! `bytes` objects are read in place (the common, fastest case). Anything else that exports a
//! C-contiguous buffer (bytearray, memoryview, array, numpy arrays, mmap) is read or written
//! through `PyObject_GetBuffer`, as raw bytes whatever its item format.
//!
//! The slices handed out here live only while the GIL is held: no Python code can run and
//! resize or rewrite the object meanwhile, and the exported buffer keeps its memory in place.
//! Callers never keep them across `Python::detach`.

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The bytes of `buffer`, which must be C-contiguous.
fn readable(buffer: &PyUntypedBuffer) -> PyResult<&[u8]> {
    if !buffer.is_c_contiguous() {
        return Err(PyBufferError::new_err("the buffer must be C-contiguous"));
    }
    let len = buffer.len_bytes();
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: a C-contiguous buffer's memory is `len_bytes()` bytes from `buf_ptr()`, valid
    // while the export (`buffer`, borrowed for the returned lifetime) is held. We hold the GIL
    // for as long as the slice is used (module invariant), so no Python code writes it
    // meanwhile; u8 has no alignment or validity requirement.
    Ok(unsafe { std::slice::from_raw_parts(buffer.buf_ptr().cast::<u8>(), len) })
}

/// Calls `f` with the bytes of a bytes-like object.
pub(crate) fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let buffer = PyUntypedBuffer::get(obj)?;
    let result = f(readable(&buffer)?);
    buffer.release(obj.py());
    Ok(result)
}

/// Calls `f` with the memory of a writable bytes-like object (bytearray, memoryview, ...).
pub(crate) fn with_writable<R>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&mut [u8]) -> R,
) -> PyResult<R> {
    let buffer = PyUntypedBuffer::get(obj)?;
    if buffer.readonly() {
        return Err(PyBufferError::new_err(
            "the buffer is read-only: pass a bytearray or a writable memoryview",
        ));
    }
    if !buffer.is_c_contiguous() {
        return Err(PyBufferError::new_err("the buffer must be C-contiguous"));
    }
    let len = buffer.len_bytes();
    let mut empty = [0u8; 0];
    let memory: &mut [u8] = if len == 0 {
        &mut empty
    } else {
        // SAFETY: as in `readable`, and the exporter said the buffer is writable. The slice
        // is the only Rust reference to this memory and lives only inside this call, with the
        // GIL held throughout.
        unsafe { std::slice::from_raw_parts_mut(buffer.buf_ptr().cast::<u8>(), len) }
    };
    let result = f(memory);
    buffer.release(obj.py());
    Ok(result)
}

/// A list (or any iterable) of bytes-like objects, viewed as slices.
pub(crate) struct Payloads<'py> {
    items: Vec<Bound<'py, PyAny>>,
    buffers: Vec<PyUntypedBuffer>,
}

impl<'py> Payloads<'py> {
    /// Collects the items of `payloads` and exports the buffers of those that are not `bytes`.
    pub fn collect(payloads: &Bound<'py, PyAny>) -> PyResult<Self> {
        let items: Vec<Bound<'py, PyAny>> = payloads.try_iter()?.collect::<PyResult<_>>()?;
        let buffers = items
            .iter()
            .filter(|item| !item.is_instance_of::<PyBytes>())
            .map(PyUntypedBuffer::get)
            .collect::<PyResult<_>>()?;
        Ok(Self { items, buffers })
    }

    /// The payloads as slices, in order.
    pub fn slices(&self) -> PyResult<Vec<&[u8]>> {
        let mut buffers = self.buffers.iter();
        self.items
            .iter()
            .map(|item| match item.cast::<PyBytes>() {
                Ok(bytes) => Ok(bytes.as_bytes()),
                Err(_) => match buffers.next() {
                    Some(buffer) => readable(buffer),
                    None => Err(PyBufferError::new_err("payload changed type while sending")),
                },
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}
