"""Corruptions of fuzz programs: the mistakes a program can hold, applied on purpose.

Each takes ``(rng, streams, ctx)`` (the streams as lists of 128-bit ints, changed in place;
``ctx`` with the ``config`` and the segment size) and returns a one-line note of what it did,
or None when the program offers no place for it. The random programs (:mod:`.fuzz_programs`)
and the mutants (:mod:`.fuzz_mutate`) draw from them.
"""

import numpy as np

from vdla import isa

from . import fuzz_words as fw

__all__ = ["CORRUPTIONS", "corrupt", "corrupt_headers", "drop", "pick", "positions"]

Op, Buf = isa.Opcode, isa.Buffer


_UNIT_OPS = (Op.LOAD, Op.SAVE, Op.SETUP, Op.CONV, Op.MISC)
_COUNT_FIELDS = {"dma": ("length", "rows", "planes"), "setup": ("kh", "kw", "stride", "n_icg"),
                 "conv": ("out_h", "out_w", "n_ob"), "misc": ("out_h", "out_w", "n_cb")}


def positions(streams, ops=None):
    """``(stream, index)`` of every word (of one of ``ops``, or any)."""
    return [(k, i) for k, s in enumerate(streams) for i, w in enumerate(s)
            if ops is None or fw.opcode(w) in ops]


def pick(rng, items):
    """One of ``items`` (None when there is none)."""
    return items[int(rng.integers(len(items)))] if items else None


def _flip_flag(rng, streams, ctx):
    at = pick(rng, positions(streams, _UNIT_OPS))
    if at:
        k, i = at
        name = pick(rng, ["pop_prev", "pop_next", "push_prev", "push_next"])
        streams[k][i] ^= 1 << isa.FIELDS["head"][f"deps.{name}"][0]
        return f"flag {name} toggled at stream {k} word {i}"


def _reserved_bit(rng, streams, ctx):
    at = pick(rng, positions(streams, set(isa.BODY_OF)))
    if at:
        k, i = at
        mask = isa.reserved_mask(fw.opcode(streams[k][i]))
        bits = [b for b in range(isa.INSN_BITS) if mask >> b & 1]
        bit = pick(rng, bits[:4] + bits[-2:] + [pick(rng, bits)])
        streams[k][i] |= 1 << bit
        return f"reserved bit {bit} set at stream {k} word {i}"


def _zero_count(rng, streams, ctx):
    at = pick(rng, positions(streams, (Op.LOAD, Op.SAVE, Op.SETUP, Op.CONV, Op.MISC)))
    if at:
        k, i = at
        view = fw.view_of(streams[k][i])
        name = pick(rng, list(_COUNT_FIELDS[view]))
        streams[k][i] = fw.put(streams[k][i], view, name, 0)
        return f"{name}=0 at stream {k} word {i}"


def _wild_field(rng, streams, ctx):
    at = pick(rng, positions(streams, _UNIT_OPS))
    if at:
        k, i = at
        view = fw.view_of(streams[k][i])
        name = pick(rng, list(isa.FIELDS[view]))
        width = isa.FIELDS[view][name][1]
        value = int(rng.integers(0, 1 << min(width, int(rng.integers(1, 13)))))
        streams[k][i] = fw.put(streams[k][i], view, name, value)
        return f"{view}.{name}={value} at stream {k} word {i}"


def _segment_edge(rng, streams, ctx):
    """Move a DMA so its extent ends just inside, at or just past the segment end."""
    at = pick(rng, positions(streams, (Op.LOAD, Op.SAVE)))
    if at:
        k, i = at
        w = streams[k][i]
        f = {n: fw.get(w, "dma", n) for n in ("length", "rows", "planes", "row_stride",
                                               "plane_stride")}
        extent = 8 * ((f["planes"] - 1) * f["plane_stride"] + (f["rows"] - 1) * f["row_stride"]
                      + f["length"])
        past = 8 * int(pick(rng, [-1, 0, 1, 1, 2, 64]))
        addr = max(0, (ctx["seg_size"] // 8) * 8 - extent + past)
        streams[k][i] = fw.put(w, "dma", "dram_addr", addr)
        return f"DMA extent moved to end {past:+d} bytes from the segment end, stream {k} word {i}"


def _misalign(rng, streams, ctx):
    at = pick(rng, positions(streams, (Op.LOAD, Op.SAVE)))
    if at:
        k, i = at
        addr = fw.get(streams[k][i], "dma", "dram_addr") + int(rng.integers(1, 8))
        streams[k][i] = fw.put(streams[k][i], "dma", "dram_addr", addr)
        return f"dram_addr misaligned at stream {k} word {i}"


def _buffer_edge(rng, streams, ctx):
    at = pick(rng, positions(streams, (Op.LOAD, Op.SAVE)))
    if at:
        k, i = at
        w = streams[k][i]
        buf = Buf(fw.get(w, "dma", "buf"))
        cfg = ctx["config"]
        depth = {Buf.IBUF: cfg.ibuf_depth, Buf.WBUF: cfg.wbuf_depth, Buf.PBUF: cfg.pbuf_depth,
                 Buf.OBUF: cfg.obuf_depth}[buf]
        addr = max(0, depth - int(rng.integers(0, 3)))
        streams[k][i] = fw.put(w, "dma", "buf_addr", addr)
        return f"{buf.name} buf_addr={addr} (near the end) at stream {k} word {i}"


def _bad_word(rng, streams, ctx):
    k = int(rng.integers(len(streams)))
    i = int(rng.integers(len(streams[k]) + 1))
    code = pick(rng, fw.UNDEFINED_OPCODES + [Op.STREAM.value])
    body = int(rng.integers(0, 1 << 62)) << int(rng.integers(8, 66)) if rng.random() < 0.5 else 0
    word = (body & fw.MASK128 & ~0xFF) | code
    if rng.random() < 0.5:
        streams[k].insert(i, word)
        return f"opcode {code} word inserted at stream {k} word {i}"
    if i < len(streams[k]):
        streams[k][i] = word
        return f"stream {k} word {i} replaced by opcode {code}"


def drop(rng, streams, ctx, ops=None):
    """Delete a word (of one of ``ops``, or any)."""
    at = pick(rng, positions(streams, ops))
    if at:
        k, i = at
        op = fw.opcode(streams[k].pop(i))
        return f"{op.name if op else '?'} deleted at stream {k} word {i}"


def _drop_control(rng, streams, ctx):
    return drop(rng, streams, ctx, (Op.FRAME, Op.SETUP, Op.SYNC, Op.END))


def _outside_frame(rng, streams, ctx):
    units = positions(streams, (Op.LOAD, Op.SAVE, Op.CONV, Op.MISC))
    ends = [(k, i + 1) for k, i in positions(streams, (Op.SYNC,))] + [
        (k, 0) for k in range(len(streams))]
    at, src = pick(rng, ends), pick(rng, units)
    if at and src:
        k, i = at
        streams[k].insert(i, streams[src[0]][src[1]])
        return f"unit word inserted outside a frame at stream {k} word {i}"


def _barrier(rng, streams, ctx):
    at = pick(rng, positions(streams, (Op.SYNC, Op.END)))
    if at:
        k, i = at
        if fw.opcode(streams[k][i]) == Op.SYNC and rng.random() < 0.5:
            value = fw.get(streams[k][i], "sync", "barrier") + int(rng.integers(1, 4))
            streams[k][i] = fw.put(streams[k][i], "sync", "barrier", value)
            return f"SYNC barrier changed to {value} at stream {k} word {i}"
        if fw.opcode(streams[k][i]) == Op.END:
            streams[k][i] = isa.encode(Op.SYNC, barrier=int(rng.integers(0, 4)))
            return f"END replaced by SYNC at stream {k} word {i}"
        streams[k][i] = isa.encode(Op.END)
        return f"SYNC replaced by END at stream {k} word {i}"


def _duplicate(rng, streams, ctx):
    at = pick(rng, positions(streams))
    if at:
        k, i = at
        streams[k].insert(i + 1, streams[k][i])
        return f"word duplicated at stream {k} word {i}"


def _swap(rng, streams, ctx):
    at = pick(rng, [(k, i) for k, i in positions(streams) if i + 1 < len(streams[k])])
    if at:
        k, i = at
        s = streams[k]
        s[i], s[i + 1] = s[i + 1], s[i]
        return f"words {i} and {i + 1} of stream {k} swapped"


def _random_word(rng, streams, ctx):
    k = int(rng.integers(len(streams)))
    i = int(rng.integers(len(streams[k]) + 1))
    op = pick(rng, list(_UNIT_OPS) + [Op.FRAME])
    word = (int(rng.integers(0, 1 << 63)) << 64 | int(rng.integers(0, 1 << 63))) << 1
    word = (word & fw.MASK128 & ~0xFF & ~isa.reserved_mask(op)) | op.value
    streams[k].insert(i, word)
    return f"random {op.name} body inserted at stream {k} word {i}"


#: Corruptions of random programs: ``name -> fn(rng, streams, ctx)`` returning a note (None
#: when the program offers no place for it).
CORRUPTIONS = {
    "flip_flag": _flip_flag, "reserved_bit": _reserved_bit, "zero_count": _zero_count,
    "wild_field": _wild_field, "segment_edge": _segment_edge, "misalign": _misalign,
    "buffer_edge": _buffer_edge, "bad_word": _bad_word, "drop_control": _drop_control,
    "outside_frame": _outside_frame, "barrier": _barrier, "duplicate": _duplicate,
    "swap": _swap, "random_word": _random_word,
}
#: Relative weights: the corruptions that keep a program running deep come first.
_WEIGHTS = {"flip_flag": 3, "segment_edge": 3, "wild_field": 2, "reserved_bit": 1,
            "zero_count": 1, "misalign": 1, "buffer_edge": 2, "bad_word": 1, "drop_control": 2,
            "outside_frame": 1, "barrier": 2, "duplicate": 1, "swap": 2, "random_word": 1}


def corrupt(rng, streams, ctx, count):
    """Apply ``count`` corruptions drawn by weight; return their notes."""
    names = list(CORRUPTIONS)
    weights = np.array([_WEIGHTS[n] for n in names], float)
    notes = []
    for _ in range(count):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        note = CORRUPTIONS[name](rng, streams, ctx)
        if note:
            notes.append(note)
    return notes


def corrupt_headers(rng, words, count):
    """One bad STREAM header (wrong count / vcore / offset, a flag, a reserved bit)."""
    k = int(rng.integers(count))
    w = words[k]
    kind = int(rng.integers(5))
    if kind == 0:
        words[k] = fw.put(w, "stream", "count", count + int(pick(rng, [-1, 1])))
    elif kind == 1:
        words[k] = fw.put(w, "stream", "vcore", (k + 1) % 256)
    elif kind == 2:
        words[k] = fw.put(w, "stream", "offset", int(pick(rng, [0, len(words), 1 << 20])))
    elif kind == 3:
        words[k] = fw.with_flag(w, "push_next")
    else:
        words[k] = w | 1 << int(rng.integers(48, 128))
    return f"STREAM header {k} corrupted ({['count', 'vcore', 'offset', 'flag', 'reserved'][kind]})"
