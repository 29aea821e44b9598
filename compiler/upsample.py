"""Tiling and instruction frames of a nearest-neighbour upsampling (:class:`ir.Resize`).

Output pixel ``(y, x)`` is input pixel ``(y // k, x // k)``. The DMA does the duplication,
the MISC LUT the requantization (the table is the identity when the scale is unchanged):

* LOAD repeats each input pixel ``k`` times along W: ``rows`` = ``k`` with a DRAM
  ``row_stride`` of 0 inside ``planes`` = the pixels read, ``plane_stride`` one pixel. Whole
  input rows of a block are contiguous in DRAM, so one LOAD per block reads several rows;
  a band of columns takes one LOAD per row;
* MISC LUT maps the chunk (``n_cb`` blocks of ``rows x k*cols`` entries) into OBUF;
* SAVE writes the chunk ``k`` times, once per output row of each input row (DRAM row stride
  ``k`` output rows).

A chunk is ``n_blocks`` channel blocks x ``rows`` input rows x ``cols`` input columns whose
IBUF and OBUF entries fit half of each buffer; steps alternate halves as :mod:`.codegen`'s
lookups do, and each frame loads the table once into PBUF 0.
"""

import dataclasses

from vdla import isa

from .dma import dma_fields
from .errors import CompileError
from .frames import Step
from .layout import blocks
from .tiling import MAX_HW, MAX_NOB

__all__ = ["ResizePlan", "plan_resize", "resize_frames"]

_IB, _PB, _OB = isa.Buffer.IBUF, isa.Buffer.PBUF, isa.Buffer.OBUF
#: Frames a layer is cut into at least (when it has that many chunks), so cores share it.
_MIN_FRAMES = 8
_MAX_STEPS = 8


@dataclasses.dataclass
class ResizePlan:
    factor: int
    chunks: list            # [(block, n_blocks, row, n_rows, col, n_cols)], input coordinates
    frames: list            # [[chunk index, ...]]


def _view(n):
    """``(out_h, out_w)`` of ``n`` entries for the MISC fields (each <= MAX_HW), or None."""
    for pw in range(min(n, MAX_HW), 0, -1):
        if n % pw == 0:
            return (n // pw, pw) if n // pw <= MAX_HW else None
    return None


def plan_resize(name, in_shape, factor, cfg):
    """Chunks and frames of upsampling a ``(C, H, W)`` tensor by ``factor``."""
    c, h, w = in_shape
    k, nb = factor, blocks(c, cfg.cb)
    cap = min(cfg.ibuf_depth, cfg.obuf_depth) // 2       # entries of one buffer half
    if k > cap:
        raise CompileError(f"layer {name}: upsampling by {k} does not fit half of IBUF / OBUF "
                           f"({cap} entries)")
    cols = min(w, cap // k)
    rows = min(h, cap // (cols * k))
    # The MISC sees each chunk as out_h x out_w entries, both within their fields.
    while not all(_view(min(rows, h - r) * min(cols, w - x) * k)
                  for r in range(0, h, rows) for x in range(0, w, cols)):
        rows, cols = (rows - 1, cols) if rows > 1 else (rows, cols - 1)
        if cols < 1:
            raise CompileError(f"layer {name}: cannot be tiled for configuration "
                               f"{cfg.name!r}")
    per = min(nb, MAX_NOB, cap // (rows * cols * k)) if (rows, cols) == (h, w) else 1
    chunks = [(b, min(per, nb - b), r, min(rows, h - r), x, min(cols, w - x))
              for b in range(0, nb, per) for r in range(0, h, rows) for x in range(0, w, cols)]
    steps = max(1, min(_MAX_STEPS, len(chunks) // _MIN_FRAMES))
    frames = [list(range(i, min(i + steps, len(chunks)))) for i in range(0, len(chunks), steps)]
    return ResizePlan(k, chunks, frames)


def _loads(cfg, base, addr, shape, chunk, k):
    """LOADs of one chunk, each input pixel ``k`` times, to IBUF from entry ``base``."""
    _, h, w = shape
    b, nb, r0, nr, x0, nw = chunk
    cb, ew = cfg.cb, cfg.cb // 8
    out = []
    for j in range(nb):
        lines = [(r0, nr * w)] if nw == w else [(r0 + i, nw) for i in range(nr)]
        for i, (row, pixels) in enumerate(lines):
            dram = addr + (((b + j) * h + row) * w + x0) * cb
            # rows = k with stride 0: the same pixel k times, then the next (plane_stride).
            out += dma_fields(_IB, base + (j * nr + i) * nw * k, dram, ew, k, pixels, 0, ew, cb)
    return out


def _saves(cfg, base, addr, shape, chunk, k):
    """SAVEs of one chunk from OBUF entry ``base``: each row to its ``k`` output rows."""
    _, h, w = shape
    b, nb, r0, nr, x0, nw = chunk
    cb, ew = cfg.cb, cfg.cb // 8
    oh, ow = h * k, w * k
    out = []
    for a in range(k):
        dram = addr + ((b * oh + r0 * k + a) * ow + x0 * k) * cb
        out += dma_fields(_OB, base, dram, nw * k * ew, nr, nb, k * ow * ew, oh * ow * ew, cb)
    return out


def resize_frames(layer, graph, cfg, addrs):
    """``(plan, [(setup fields, [Step])])`` of an :class:`ir.Resize` layer."""
    shape = tuple(graph.tensors[layer.input].shape)
    k = layer.factor
    plan = plan_resize(layer.name, shape, k, cfg)
    out = []
    for frame in plan.frames:
        head = dma_fields(_PB, 0, addrs.post, isa.LUT_ENTRIES * 2, cb=cfg.cb)
        steps = []
        for s, ci in enumerate(plan.chunks[i] for i in frame):
            halves = len(frame) > 1
            ibase = (s % 2) * (cfg.ibuf_depth // 2) if halves else 0
            obase = (s % 2) * (cfg.obuf_depth // 2) if halves else 0
            _, nb, _, nr, _, nw = ci
            oh, ow = _view(nr * nw * k)
            op = (isa.Opcode.MISC, {"func": isa.MiscFunc.LUT.value, "src_a": ibase, "src_b": 0,
                                    "obuf_addr": obase, "pbuf_addr": 0, "out_h": oh,
                                    "out_w": ow, "n_cb": nb, "in_h": 0, "in_w": 0,
                                    "pad_top": 0, "pad_left": 0})
            loads = (head if s == 0 else []) + _loads(cfg, ibase, addrs.inputs[0], shape, ci, k)
            steps.append(Step(loads, [op], _saves(cfg, obase, addrs.output, shape, ci, k),
                              s - 2 if s >= 2 else None))
        setup = {"kh": 1, "kw": 1, "stride": 1, "n_icg": 1, "pad_value": 0, "dw": 0}
        out.append((setup, steps))
    return plan, out
