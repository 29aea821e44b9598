"""Where a fault sits in a fuzz case's program: its frame, its phase, the SAVEs around it.

Used to tell mismatches the ISA allows from real ones: after a fault, SAVEs of the faulting
frame before the faulting word may or may not have run; when several cores of a tenant fault
in the same phase, which one the hardware sees first depends on timing.
"""

import numpy as np

from vdla import isa

from . import fuzz_words as fw

__all__ = ["frame_around", "phase_of", "save_bytes"]

Op = isa.Opcode
_BOUNDARY = (Op.FRAME, Op.SYNC, Op.END)


def frame_around(case, pc):
    """``(first, end)`` addresses of the frame body holding ``pc`` (the words after its
    FRAME up to the next boundary or the end of the region), or None when ``pc`` is in no
    frame. A ``pc`` just past the region (a REGION fault) belongs to the frame it ends."""
    lo, hi = case.prog_base, case.prog_base + min(case.prog_size, len(case.words))
    k = min(pc, hi) - 1 if pc >= hi else pc
    while k >= lo and fw.opcode(case.word_at(k)) not in _BOUNDARY:
        k -= 1
    if k < lo or fw.opcode(case.word_at(k)) != Op.FRAME or k == pc:
        return None
    end = k + 1
    while end < hi and fw.opcode(case.word_at(end)) not in _BOUNDARY:
        end += 1
    return k + 1, end


def phase_of(case, vcore, pc):
    """Number of SYNCs virtual core ``vcore`` passes before reaching ``pc`` from the start
    of its stream, or None when its stream does not reach ``pc``."""
    if not 0 <= vcore < len(case.words) or fw.opcode(case.words[vcore]) != Op.STREAM:
        return None
    at = case.prog_base + fw.get(case.words[vcore], "stream", "offset")
    phase = 0
    while at < pc:
        op = fw.opcode(case.word_at(at))
        if op == Op.END or at >= case.prog_base + case.prog_size:
            return None
        phase += op == Op.SYNC
        at += 1
    return phase if at == pc else None


def save_bytes(case, first, end):
    """Boolean mask over A's segment of the bytes the SAVE words in ``[first, end)`` write
    (the parts inside the segment)."""
    edges = np.zeros(case.seg_size + 1, np.int64)
    for pc in range(first, end):
        w = case.word_at(pc)
        if fw.opcode(w) != Op.SAVE:
            continue
        f = {n: fw.get(w, "dma", n) for n in ("dram_addr", "length", "rows", "planes",
                                               "row_stride", "plane_stride")}
        p, r = np.meshgrid(np.arange(f["planes"]), np.arange(f["rows"]), indexing="ij")
        starts = (f["dram_addr"] + 8 * (p * f["plane_stride"] + r * f["row_stride"])).ravel()
        starts = np.minimum(starts, case.seg_size)
        np.add.at(edges, starts, 1)
        np.add.at(edges, np.minimum(starts + 8 * f["length"], case.seg_size), -1)
    return np.cumsum(edges)[:-1] > 0
