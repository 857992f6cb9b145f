"""The memoryviews of ``BlobLoan.view`` and ``BlobMessage.view``: blocks of the blob pool,
in place in the segment (``docs/PROTOCOL.md`` section 13).

The extension is built for the limited C API of Python 3.9, which has no way to export a
buffer from an extension type. ``PyMemoryView_FromMemory`` makes a view of raw memory, but
one that owns nothing: a slice of it, or the view numpy keeps under ``numpy.frombuffer(view)``,
would point into the segment with nothing keeping the segment mapped once the handle is
closed. So the view is made over a ``ctypes`` array at the block's address, which carries the
extension's ``_Mapping`` (a reference to the mapping): every view derived from ours is
registered on the same managed buffer, which holds the array, and so the mapping, until the
last of them is gone. Releasing our view (commit, abandon, release) makes using it raise
``ValueError``; views derived from it stay valid memory, no longer the message's.
"""

from __future__ import annotations

import ctypes
from typing import Any

# One array type per block size (a pool has at most 8 classes), so that ctypes' cache of
# array types does not grow with the lengths asked for.
_BLOCK_TYPES: dict[int, Any] = {}


def block_view(
    address: int, capacity: int, length: int, mapping: object, readonly: bool
) -> memoryview:
    """A memoryview (format ``"B"``) of the first ``length`` bytes of the block of
    ``capacity`` bytes at ``address``, keeping ``mapping`` alive while it or any view derived
    from it lives; read-only if ``readonly``."""
    block_type = _BLOCK_TYPES.get(capacity)
    if block_type is None:
        block_type = _BLOCK_TYPES.setdefault(capacity, ctypes.c_ubyte * capacity)
    # The extension guarantees that the block is mapped while `mapping` lives, and the array
    # holds `mapping`.
    block = block_type.from_address(address)
    block._dmxp_mapping = mapping
    whole = memoryview(block)
    view = whole.cast("B")[:length]
    whole.release()
    if readonly:
        writable, view = view, view.toreadonly()
        writable.release()
    return view
