"""LOAD / SAVE field generation: a strided DRAM region as few DMA instructions as possible.

A transfer is described as the ISA's 3-D copy (``planes`` x ``rows`` x ``length`` words with
DRAM strides; the buffer side is dense). When a dimension exceeds its field width the region
is re-expressed (a contiguous plane folded into rows, an over-long row folded into rows of a
plane) or, as a last resort, split into several instructions, each starting on a whole
buffer entry.
"""

from vdla import isa

__all__ = ["dma_fields", "entry_words", "MAX_LENGTH", "MAX_ROWS", "MAX_PLANES"]

_F = isa.FIELDS["dma"]
MAX_LENGTH = (1 << _F["length"][1]) - 1
MAX_ROWS = (1 << _F["rows"][1]) - 1
MAX_PLANES = (1 << _F["planes"][1]) - 1
MAX_ROW_STRIDE = (1 << _F["row_stride"][1]) - 1
MAX_PLANE_STRIDE = (1 << _F["plane_stride"][1]) - 1


_WBUF, _PBUF = isa.Buffer.WBUF.value, isa.Buffer.PBUF.value


def entry_words(buf, cb):
    """8-byte words per native entry of ``buf`` (see :class:`vdla.isa.DmaFields`)."""
    buf = int(getattr(buf, "value", buf))
    if buf == _WBUF:
        return cb * cb // isa.WORD_BYTES
    if buf == _PBUF:
        return isa.POST_BYTES // isa.WORD_BYTES
    return cb // isa.WORD_BYTES


def _fold(n, limit, align, max_outer):
    """Largest ``l <= limit``, multiple of ``align``, dividing ``n``, ``n // l <= max_outer``."""
    for l in range(min(limit, n) // align * align, 0, -align):
        if n % l == 0 and n // l <= max_outer:
            return l
    return None


def dma_fields(buf, buf_addr, dram_addr, length, rows=1, planes=1, row_stride=None,
               plane_stride=None, cb=8):
    """Field dicts of the LOAD/SAVE instructions moving a 3-D region (all sizes in words).

    ``buf_addr`` is in entries of ``buf``, ``dram_addr`` in bytes; strides default to the
    dense layout. The result covers exactly the region, buffer side dense from ``buf_addr``.
    """
    buf = int(getattr(buf, "value", buf))
    ew = entry_words(buf, cb)
    row_stride = length if row_stride is None else row_stride
    plane_stride = rows * row_stride if plane_stride is None else plane_stride
    out = []

    def emit(bw, dram_w, l, r, p, rs, ps):
        if bw % ew:
            raise ValueError(f"DMA split at word {bw} is not on a {isa.Buffer(buf).name} "
                             "entry boundary")
        if (p > 1 and ps > MAX_PLANE_STRIDE) or (r > 1 and rs > MAX_ROW_STRIDE):
            # A stride too long for its field: one instruction per plane (and per row).
            for i in range(p):
                for j in range(r if rs > MAX_ROW_STRIDE else 1):
                    rr = 1 if rs > MAX_ROW_STRIDE else r
                    emit(bw + (i * r + j) * l, dram_w + i * ps + j * rs, l, rr, 1, rs, 0)
            return
        out.append({"buf": buf, "buf_addr": buf_addr + bw // ew,
                    "dram_addr": dram_addr + dram_w * isa.WORD_BYTES, "length": l,
                    "rows": r if r > 1 else 1, "planes": p,
                    "row_stride": rs if r > 1 else 0, "plane_stride": ps if p > 1 else 0})

    def contiguous(bw, dram_w, n):
        # n contiguous words: rectangles of whole entries, then a tail.
        while n:
            if n <= MAX_LENGTH:
                emit(bw, dram_w, n, 1, 1, 0, 0)
                return
            l = _fold(n, MAX_LENGTH, ew, MAX_ROWS * MAX_PLANES)
            if l is not None:
                r = n // l
                rr = _fold(r, MAX_ROWS, 1, MAX_PLANES)
                if rr is not None:
                    emit(bw, dram_w, l, rr, r // rr, l, l * rr)
                    return
            l = MAX_LENGTH // ew * ew
            r = min(MAX_ROWS, n // l)
            emit(bw, dram_w, l, r, 1, l, 0)
            bw, dram_w, n = bw + l * r, dram_w + l * r, n - l * r

    # Fold contiguous rows (and planes) into longer bursts while they fit a LOAD row.
    if rows > 1 and row_stride == length and length * rows <= MAX_LENGTH:
        length, rows, row_stride = length * rows, 1, length * rows
    if rows == 1 and planes > 1 and plane_stride == length and length * planes <= MAX_LENGTH:
        length, planes = length * planes, 1
    plane_words = length * rows
    if length <= MAX_LENGTH and rows <= MAX_ROWS:
        for p0 in range(0, planes, MAX_PLANES):
            p = min(MAX_PLANES, planes - p0)
            emit(p0 * plane_words, p0 * plane_stride, length, rows, p, row_stride, plane_stride)
        return out
    if rows == 1 or row_stride == length:
        # Each plane is contiguous: fold it into rows of one plane, or copy it piecewise.
        l = _fold(plane_words, MAX_LENGTH, ew, MAX_ROWS)
        if l is not None:
            for p0 in range(0, planes, MAX_PLANES):
                p = min(MAX_PLANES, planes - p0)
                emit(p0 * plane_words, p0 * plane_stride, l, plane_words // l, p, l,
                     plane_stride)
            return out
        if planes == 1 or plane_stride == plane_words:
            contiguous(0, 0, plane_words * planes)
            return out
        for p in range(planes):
            contiguous(p * plane_words, p * plane_stride, plane_words)
        return out
    # Rows longer than a LOAD row: each row becomes a plane of shorter rows.
    l = _fold(length, MAX_LENGTH, ew, MAX_ROWS)
    for p in range(planes):
        if l is not None and rows <= MAX_PLANES:
            emit(p * plane_words, p * plane_stride, l, length // l, rows, l, row_stride)
        else:
            for r in range(rows):
                contiguous(p * plane_words + r * length, p * plane_stride + r * row_stride,
                           length)
    return out
