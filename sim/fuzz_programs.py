"""Seeded tenant programs for the instruction-stream fuzzer: random ones and mutants.

A :class:`FuzzCase` is everything tenant A of one fuzz run needs: its region's words, its
registers (core mask, region, segment, RUNS) and its segment's initial bytes. :func:`make_case`
derives one from ``(seed, index)`` alone, so any case is reproduced from those two numbers:

* *random* programs (:func:`random_program`): frames of LOAD / SETUP / CONV / MISC / SAVE with
  small in-range fields and consistent dependency tokens, over one to three virtual cores
  with barriers, then a few deliberate corruptions (a wrong flag, a reserved bit, a count of
  zero, a DMA extent moved across the segment end, an undefined opcode, a missing SETUP,
  FRAME or END, mismatched barriers, a bad STREAM header, a short region...);
* *mutants* (:mod:`.fuzz_mutate`): a compiled model linked for A's cores with bits flipped,
  fields changed, words swapped, duplicated or deleted, headers mostly kept valid.

Run time is bounded by construction: every DMA moves at most a buffer's worth of words (a
larger one faults BUFFER before its first beat), and the fields the generators pick keep
CONV / MISC small; the harness also drops cases whose golden-model estimate is long
(:data:`MAX_ESTIMATED_CYCLES`).
"""

import dataclasses

import numpy as np

from vdla import isa

from . import fuzz_words as fw
from .fuzz_corrupt import corrupt, corrupt_headers

__all__ = ["Layout", "FuzzCase", "make_case", "random_program", "choose_mask",
           "MAX_ESTIMATED_CYCLES"]

Op, Buf = isa.Opcode, isa.Buffer
#: Cases whose golden-model cycle estimate exceeds this are replaced (the RTL takes up to a
#: few times the estimate on short DMA rows).
MAX_ESTIMATED_CYCLES = 40_000
#: Bytes of slack for A's segment base above ``Layout.seg_lo`` (8-byte steps).
SEG_SLACK = 0x800


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where tenant A lives: the cores it may be given, its part of the instruction memory
    and of DRAM. Tenant B owns ``b_mask`` and everything below ``imem_lo`` / from ``seg_hi``."""
    config: object
    a_cores: int = 0b0111
    b_mask: int = 0b1000
    imem_lo: int = 512
    seg_lo: int = 0x1000
    seg_hi: int = 0x10000


@dataclasses.dataclass
class FuzzCase:
    """Tenant A of one fuzz run (see the module docstring); ``notes`` says what was done to
    the program, one short line per change."""
    seed: int
    index: int
    kind: str
    words: list
    prog_base: int
    prog_size: int
    core_mask: int
    runs: int
    seg_base: int
    seg_size: int
    segment: np.ndarray
    notes: list = dataclasses.field(default_factory=list)

    @property
    def name(self):
        return f"seed {self.seed} program {self.index} ({self.kind})"

    def registers(self):
        return {"CORE_MASK": self.core_mask, "PROG_BASE": self.prog_base,
                "PROG_SIZE": self.prog_size, "SEG_BASE_LO": self.seg_base, "SEG_BASE_HI": 0,
                "SEG_SIZE_LO": self.seg_size, "SEG_SIZE_HI": 0, "RUNS": self.runs}

    def word_at(self, pc):
        """The word at instruction-memory address ``pc`` as A's window holds it (0 outside
        the words written)."""
        k = pc - self.prog_base
        return self.words[k] if 0 <= k < len(self.words) else 0


# ----------------------------------------------------------------------- masks and layout

def choose_mask(rng, layout):
    """``(core mask, number of streams to link)``; one case in twenty asks for cores it
    cannot have (none, another tenant's, outside the pool) to fault CORES at start."""
    mine = [c for c in range(layout.config.cores) if layout.a_cores >> c & 1]
    roll = rng.random()
    if roll < 0.05:
        bad = [0, layout.b_mask | 1 << mine[0], 1 << layout.config.cores,
               1 << mine[-1] | 1 << layout.config.cores]
        mask = bad[rng.integers(len(bad))]
        return mask, max(1, bin(mask).count("1"))
    n = 1 if roll < 0.45 else 2 if roll < 0.8 else 3
    n = min(n, len(mine))
    picked = sorted(rng.choice(mine, n, replace=False).tolist())
    return sum(1 << c for c in picked), n


def place_region(rng, layout, length):
    """``(prog_base, prog_size)`` for ``length`` words: mostly the exact region low in A's
    window; sometimes a few words longer (zeros follow) or shorter, or running past the
    end of the instruction memory."""
    depth = layout.config.imem_depth
    base = layout.imem_lo + int(rng.integers(0, 2048))
    size = length
    roll = rng.random()
    if roll < 0.04:
        base = depth - length + int(rng.integers(-2, 4))
    elif roll < 0.10:
        size = length + int(rng.integers(1, 5))
    elif roll < 0.14:
        size = max(0, length - int(rng.integers(1, 4)))
    return base, size


def place_segment(rng, layout, size):
    base = layout.seg_lo + 8 * int(rng.integers(0, SEG_SLACK // 8))
    if base + size > layout.seg_hi:
        raise ValueError(f"segment of {size} bytes does not fit A's part of DRAM")
    return base


# ------------------------------------------------------------------ random frames

class _Frames:
    """Makes legal frames for one segment size; fields small and inside the buffers."""

    def __init__(self, rng, config, seg_size):
        self.rng, self.cfg, self.seg_size = rng, config, seg_size
        cb = config.cb
        #: 8-byte words per buffer entry, and entries per buffer.
        self.wpe = {Buf.IBUF: cb // 8, Buf.WBUF: cb * cb // 8, Buf.PBUF: 2, Buf.OBUF: cb // 8}
        self.depth = {Buf.IBUF: config.ibuf_depth, Buf.WBUF: config.wbuf_depth,
                      Buf.PBUF: config.pbuf_depth, Buf.OBUF: config.obuf_depth}

    def r(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, *options):
        return options[int(self.rng.integers(len(options)))]

    def at(self, buf, entries):
        """A start entry with room for ``entries`` entries of ``buf``."""
        return self.r(0, max(0, self.depth[buf] - entries))

    def dma(self, op, buf, addr, entries, deps=None):
        """A LOAD or SAVE of ``entries`` entries at entry ``addr`` of ``buf``, in 1 to 3
        dimensions, at a random place of the segment (near its end one time in 25)."""
        n = entries * self.wpe[buf]
        planes = rows = 1
        shape = self.rng.random()
        divisors = [d for d in range(1, min(n, 16) + 1) if n % d == 0]
        if shape > 0.6:
            rows = self.pick(*divisors)
        if shape > 0.9:
            rest = [d for d in divisors if (n // rows) % d == 0]
            planes = self.pick(*rest)
        length = n // (rows * planes)
        row_stride = length + self.r(0, 3) if rows > 1 else self.r(0, 2)
        plane_stride = rows * row_stride + self.r(0, 5) if planes > 1 else self.r(0, 2)
        extent = (planes - 1) * plane_stride + (rows - 1) * row_stride + length
        seg_words = self.seg_size // 8
        if self.rng.random() < 0.04:
            first = seg_words + self.pick(-1, 0, 0, 1, 2) - extent
        else:
            first = self.r(0, max(0, seg_words - extent))
        return isa.encode(op, deps, buf=buf, buf_addr=addr, dram_addr=8 * max(0, first),
                          length=length, rows=rows, planes=planes, row_stride=row_stride,
                          plane_stride=plane_stride)

    def setup(self, kh, kw, stride, n_icg=1, dw=0, pad=None):
        pad = self.r(-128, 127) if pad is None else pad
        return isa.encode(Op.SETUP, kh=kh, kw=kw, stride=stride, n_icg=n_icg, pad_value=pad,
                          dw=dw)

    def conv_step(self):
        cb = self.cfg.cb
        kh, kw, stride = self.pick(1, 1, 2, 3), self.pick(1, 1, 2, 3), self.pick(1, 1, 2)
        dw = int(self.rng.random() < 0.15)
        n_icg = 1 if dw else self.pick(1, 1, 2)
        n_ob = self.pick(1, 1, 2)
        in_h, in_w = self.r(1, 5), self.r(1, 5)
        pt, pl = self.r(0, kh - 1), self.r(0, kw - 1)
        out_h = max(1, min(6, (in_h + 2 * pt - kh) // stride + 1))
        out_w = max(1, min(6, (in_w + 2 * pl - kw) // stride + 1))
        groups = n_ob if dw else n_icg
        ient, went = groups * in_h * in_w, n_ob * kh * kw * n_icg
        oent, pent = n_ob * out_h * out_w, n_ob * cb
        ia, wa, oa, pa = (self.at(Buf.IBUF, ient), self.at(Buf.WBUF, went),
                          self.at(Buf.OBUF, oent), self.at(Buf.PBUF, pent))
        loads = [self.dma(Op.LOAD, Buf.IBUF, ia, ient), self.dma(Op.LOAD, Buf.WBUF, wa, went),
                 self.dma(Op.LOAD, Buf.PBUF, pa, pent)]
        common = dict(ibuf_addr=ia, wbuf_addr=wa, pbuf_addr=pa, obuf_addr=oa, out_h=out_h,
                      out_w=out_w, n_ob=n_ob, in_h=in_h, in_w=in_w, pad_top=pt, pad_left=pl)
        if self.rng.random() < 0.2:
            # Accumulate in ABUF over two CONVs, the second one post-processing.
            compute = [isa.encode(Op.CONV, acc_init=1, acc_final=0, **common),
                       isa.encode(Op.CONV, acc_init=0, acc_final=1, **common)]
        else:
            compute = [isa.encode(Op.CONV, acc_init=int(self.rng.random() < 0.9),
                                  acc_final=1, **common)]
        setup = self.setup(kh, kw, stride, n_icg, dw)
        return setup, loads, compute, [self.dma(Op.SAVE, Buf.OBUF, oa, oent)]

    def pool_step(self):
        cb = self.cfg.cb
        kh, kw, stride = self.pick(1, 2, 3), self.pick(1, 2, 3), self.pick(1, 2)
        n_cb, in_h, in_w = self.pick(1, 1, 2), self.r(1, 5), self.r(1, 5)
        out_h, out_w = self.r(1, 4), self.r(1, 4)
        ient, oent, pent = n_cb * in_h * in_w, n_cb * out_h * out_w, n_cb * cb
        ia, oa, pa = self.at(Buf.IBUF, ient), self.at(Buf.OBUF, oent), self.at(Buf.PBUF, pent)
        func = self.pick(isa.MiscFunc.MAXPOOL, isa.MiscFunc.AVGPOOL)
        misc = isa.encode(Op.MISC, func=func, src_a=ia, obuf_addr=oa, pbuf_addr=pa,
                          out_h=out_h, out_w=out_w, n_cb=n_cb, in_h=in_h, in_w=in_w,
                          pad_top=self.r(0, kh - 1), pad_left=self.r(0, kw - 1))
        setup = self.setup(kh, kw, stride, pad=-128 if func == isa.MiscFunc.MAXPOOL else None)
        loads = [self.dma(Op.LOAD, Buf.IBUF, ia, ient), self.dma(Op.LOAD, Buf.PBUF, pa, pent)]
        return setup, loads, [misc], [self.dma(Op.SAVE, Buf.OBUF, oa, oent)]

    def add_step(self):
        cb = self.cfg.cb
        n_cb, out_h, out_w = self.pick(1, 1, 2), self.r(1, 4), self.r(1, 4)
        ent, pent = n_cb * out_h * out_w, n_cb * cb
        a, b = self.at(Buf.IBUF, ent), self.at(Buf.IBUF, ent)
        oa, pa = self.at(Buf.OBUF, ent), self.at(Buf.PBUF, pent)
        misc = isa.encode(Op.MISC, func=isa.MiscFunc.ADD, src_a=a, src_b=b, obuf_addr=oa,
                          pbuf_addr=pa, out_h=out_h, out_w=out_w, n_cb=n_cb)
        loads = [self.dma(Op.LOAD, Buf.IBUF, a, ent), self.dma(Op.LOAD, Buf.IBUF, b, ent),
                 self.dma(Op.LOAD, Buf.PBUF, pa, pent)]
        return None, loads, [misc], [self.dma(Op.SAVE, Buf.OBUF, oa, ent)]

    def lut_step(self):
        n_cb, out_h, out_w = self.pick(1, 1, 2), self.r(1, 4), self.r(1, 4)
        ent = n_cb * out_h * out_w
        ia, oa = self.at(Buf.IBUF, ent), self.at(Buf.OBUF, ent)
        pa = self.at(Buf.PBUF, isa.LUT_ENTRIES)
        misc = isa.encode(Op.MISC, func=isa.MiscFunc.LUT, src_a=ia, obuf_addr=oa,
                          pbuf_addr=pa, out_h=out_h, out_w=out_w, n_cb=n_cb)
        loads = [self.dma(Op.LOAD, Buf.IBUF, ia, ent),
                 self.dma(Op.LOAD, Buf.PBUF, pa, isa.LUT_ENTRIES)]
        return None, loads, [misc], [self.dma(Op.SAVE, Buf.OBUF, oa, ent)]

    def frame(self, number, layer):
        """FRAME and one or two steps, their tokens consistent: the last LOAD of a step
        pushes L->C, its first compute word pops it, the last one pushes C->S for the SAVE;
        a second step sometimes waits for the first one's buffers (C->L) or SAVE (S->C)."""
        words = [isa.encode(Op.FRAME, frame=number, layer=layer)]
        previous = None
        for _ in range(self.pick(1, 1, 2)):
            setup, loads, compute, saves = self.pick(self.conv_step, self.conv_step,
                                                     self.pool_step, self.add_step,
                                                     self.lut_step)()
            loads[-1] = fw.with_flag(loads[-1], "push_next")
            compute[0] = fw.with_flag(compute[0], "pop_prev")
            compute[-1] = fw.with_flag(compute[-1], "push_next")
            saves[0] = fw.with_flag(saves[0], "pop_prev")
            if previous is not None and self.rng.random() < 0.3:
                p_compute = previous[0]
                words[p_compute] = fw.with_flag(words[p_compute], "push_prev")
                loads[0] = fw.with_flag(loads[0], "pop_next")
            if previous is not None and self.rng.random() < 0.3:
                p_save = previous[1]
                words[p_save] = fw.with_flag(words[p_save], "push_prev")
                compute[0] = fw.with_flag(compute[0], "pop_next")
            words += loads + ([setup] if setup is not None else [])
            last_compute = len(words) + len(compute) - 1
            words += compute
            previous = (last_compute, len(words))
            words += saves
        return words


def random_program(rng, config, streams, seg_size):
    """Legal streams for ``streams`` virtual cores: one to three layers, each core zero to
    two frames per layer, SYNC between layers, END last. Returns a list of word lists."""
    gen = _Frames(rng, config, seg_size)
    layers = int(rng.integers(1, 4))
    out = [[] for _ in range(streams)]
    number = 0
    for layer in range(layers):
        for k in range(streams):
            for _ in range(int(rng.integers(0 if streams > 1 else 1, 3))):
                out[k] += gen.frame(number, layer)
                number += 1
            out[k].append(isa.encode(Op.END) if layer == layers - 1
                          else isa.encode(Op.SYNC, barrier=layer))
    return out


# --------------------------------------------------------------------------- cases

def make_case(layout, seed, index, bases=None):
    """The case ``index`` of ``seed``: random half of the time, a mutant of one of ``bases``
    (compiled :class:`~vdla.compiler.program.Program` objects by name) otherwise."""
    rng = np.random.default_rng([seed, index])
    if bases and rng.random() < 0.5:
        from .fuzz_mutate import mutant_case
        name = sorted(bases)[int(rng.integers(len(bases)))]
        return mutant_case(rng, layout, seed, index, name, bases[name])
    return random_case(rng, layout, seed, index)


def random_case(rng, layout, seed, index):
    mask, count = choose_mask(rng, layout)
    seg_size = 8 * int(rng.integers(0x200, 0x800))
    if rng.random() < 0.1:
        seg_size += int(rng.integers(1, 8))         # a size that is no multiple of 8
    streams = random_program(rng, layout.config, count, seg_size)
    ctx = {"config": layout.config, "seg_size": seg_size}
    roll = rng.random()
    notes = corrupt(rng, streams, ctx, 0 if roll < 0.25 else 1 if roll < 0.7 else
                    int(rng.integers(2, 4)))
    words = fw.region_words(streams)
    if rng.random() < 0.05:
        notes.append(corrupt_headers(rng, words, count))
    prog_base, prog_size = place_region(rng, layout, len(words))
    return FuzzCase(seed=seed, index=index, kind="random", words=words, prog_base=prog_base,
                    prog_size=prog_size, core_mask=mask,
                    runs=2 if rng.random() < 0.1 else 1,
                    seg_base=place_segment(rng, layout, seg_size), seg_size=seg_size,
                    segment=rng.integers(0, 256, seg_size, dtype=np.uint8), notes=notes)
