"""Arrow columns from Python lists and back to numpy, without pyarrow's pandas probe.

``pa.array``, ``pa.table`` and ``Array.to_numpy`` first ask whether pandas is installed, and import
it when it is (to recognise pandas objects). Nothing in the prepare stage uses pandas, yet that
import cost 0.3 s and about 40 MB of resident memory in every process that wrote or read a column:
the stage itself and each of its task processes (measured on the shared data, one process: peak
RSS 228 MB with the import, 188 MB without). Here arrays are built from their buffers, and a
fixed-width column is read through its data buffer: the same arrays and values, no pandas.
Anything these functions do not cover (nulls, other types) goes through pyarrow's own calls.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_INT32_MAX = 2**31 - 1
_NUMPY = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
          pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
          pa.float32(): np.float32, pa.float64(): np.float64}


def array(values, type: pa.DataType) -> pa.Array:
    """An Arrow array of ``type`` (a string or fixed-width number type) holding ``values`` (a list,
    or a numpy array for numbers), none of them None."""
    if type == pa.string():
        encoded = [v.encode("utf-8") for v in values]  # a lone surrogate raises, as in pa.array
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        if offsets[-1] > _INT32_MAX:  # a string column's offsets are int32
            return pa.array(values, type=type)
        return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets.astype(np.int32)),
                                           pa.py_buffer(b"".join(encoded)))
    dtype = _NUMPY.get(type)
    if dtype is None or isinstance(values, np.ndarray) and not np.can_cast(values.dtype, dtype, "safe"):
        return pa.array(values, type=type)  # (numpy values that would not fit: pyarrow raises, as before)
    data = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(type, len(data), [None, pa.py_buffer(data)])


def table(columns: dict, schema: pa.Schema) -> pa.Table:
    """``pa.table(columns, schema=schema)`` for the types :func:`array` covers."""
    return pa.Table.from_arrays([array(columns[f.name], f.type) for f in schema], schema=schema)


def to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of a fixed-width number column without nulls as a numpy array (a read-only
    view when the column is one chunk, as ``Array.to_numpy`` gives); other columns go through
    pyarrow's ``to_numpy`` (nulls become NaN)."""
    dtype = _NUMPY.get(column.type)
    if dtype is None or column.null_count:
        return column.to_numpy() if isinstance(column, pa.ChunkedArray) else column.to_numpy(zero_copy_only=False)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [np.frombuffer(c.buffers()[1], dtype=dtype, count=len(c), offset=c.offset * np.dtype(dtype).itemsize)
             for c in chunks if len(c)]  # an empty chunk may have no data buffer
    if len(parts) == 1:
        parts[0].flags.writeable = False  # Arrow's data, which is immutable
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
