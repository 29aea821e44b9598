"""The loop-nest sequencer: one beat (IBUF entry, WBUF entry, destination) per cycle.

Loop order of a :class:`.layouts.Job`::

    for blk in n_blk:                    # output (channel) block
      for oy in out_h: for ox in out_w:  # output pixel
        for p in passes:                 # OCP output lanes at a time (CONV: CB/OCP passes)
          for ky in kh: for kx in kw:    # window
            for g in ng:                 # input channel block (one when depthwise)

The pass loop sits outside the window so that each accumulator group of the PE array is one
uninterrupted run of beats; every ordering of a pixel's (wrapping) int32 sums gives the same
result. Addresses are never multiplied: each loop level keeps a running base that is stepped
or reloaded when the level advances (modulo 2**16, so a window starting above or left of the
tile needs no special case; only the addresses of unpadded positions are used).

Two register stages: A holds the loop counters and running bases, B the beat (read addresses,
flags, destination tag) that the unit presents to the buffers. Both move when ``adv``.
"""

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import Job, Kind, Tag

__all__ = ["Sequencer", "Beat"]

_ADDR = unsigned(16)

#: One beat as registered in stage B.
Beat = data.StructLayout({
    "ibuf_addr": _ADDR,
    "wbuf_addr": _ADDR,
    "first": 1,         # first beat of an accumulation (window start)
    "last": 1,          # last beat of an accumulation: a result follows
    "iy": signed(14),   # input row and column read (outside the tile: pad)
    "ix": signed(14),
    "tag": Tag,
})


class Sequencer(wiring.Component):
    """Address generation for CONV, pooling and ADD.

    Members
    -------
    start : ``In(1)``
        Begin ``job`` (which must then stay put until ``busy`` drops).
    job : ``In(Job)``
    adv : ``In(1)``
        The beat on ``beat`` is taken (if ``valid``) and both stages move.
    valid : ``Out(1)``, beat : ``Out(Beat)``
        Stage B.
    pad : ``Out(1)``
        The beat's input position lies outside the tile: read ``pad_value``.
    busy : ``Out(1)``
        Beats remain to be issued or taken.
    """

    def __init__(self, config):
        self._passes = config.icp // config.ocp
        if self._passes > 1 << data.Layout.cast(Tag)["p"].width:
            raise ValueError(f"icp/ocp = {self._passes} passes do not fit the tag")
        super().__init__({
            "start": In(1),
            "job": In(Job),
            "adv": In(1),
            "valid": Out(1),
            "beat": Out(Beat),
            "pad": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        job = self.job

        # Stage A: counters ...
        a_valid = Signal()
        blk, oy, ox = Signal(10), Signal(8), Signal(8)
        p, ky, kx, g = Signal(range(self._passes)), Signal(8), Signal(8), Signal(12)
        # ... (innermost loop level first) and their limits, latched at start ...
        counters = {"g": g, "kx": kx, "ky": ky, "p": p, "ox": ox, "oy": oy, "blk": blk}
        lim = {name: Signal(sig.shape(), name=f"{name}_last") for name, sig in counters.items()}
        b_offset = Signal(_ADDR)       # src_b - src_a: ADD's second column
        blk_step = Signal(_ADDR)       # input entries per output block (depthwise, MISC)
        # ... and running bases.
        yb, xb = Signal(signed(14)), Signal(signed(14))     # window origin row / column
        blk_base, row_base, pix_base = Signal(_ADDR), Signal(_ADDR), Signal(_ADDR)
        ky_off, kx_off, k_off = Signal(_ADDR), Signal(_ADDR), Signal(_ADDR)
        w_base, w_addr = Signal(_ADDR), Signal(_ADDR)
        out_off = Signal(14)

        # Where each loop level wraps: ``at[name]`` is ``counter == limit``, kept in a register
        # of its own beside the counter (compared a cycle early), so that the wrap decisions
        # and the enables they make start at flip-flops. ``end[k]``: levels 0..k all wrap.
        at = {name: Signal(name=f"{name}_at_last") for name in counters}
        at_zero = {name: Signal(name=f"{name}_last_zero") for name in counters}

        def inc(name):
            counter = counters[name]
            return [counter.eq(counter + 1), at[name].eq(counter + 1 == lim[name])]

        def clr(*names):
            return [s for name in names for s in (counters[name].eq(0),
                                                  at[name].eq(at_zero[name]))]

        end = []
        for w in at.values():       # innermost level first
            end.append(w if not end else end[-1] & w)
        pass_end, blk_end, final = end[2], end[5], end[6]

        # Stage B.
        b = self.beat
        m.d.comb += self.busy.eq(a_valid | self.valid)
        with m.If(self.adv):
            m.d.sync += [
                self.valid.eq(a_valid),
                b.ibuf_addr.eq(Mux((job.kind == Kind.ADD) & (kx != 0),
                                   pix_base + b_offset, pix_base + k_off)),
                b.wbuf_addr.eq(w_addr),
                b.first.eq((g == 0) & (kx == 0) & (ky == 0)),
                b.last.eq(pass_end),
                b.iy.eq(yb + ky),
                b.ix.eq(xb + kx),
                b.tag.addr.eq(job.obuf_addr + out_off),
                b.tag.p.eq(p),
                b.tag.blk_last.eq(blk_end),
                b.tag.final.eq(final),
            ]
        outside = (b.iy < 0) | (b.iy >= job.in_h) | (b.ix < 0) | (b.ix >= job.in_w)
        m.d.comb += self.pad.eq((job.kind != Kind.ADD) & outside)

        # Stage A.
        origin = job.origin
        first_limits = {"blk": job.n_blk - 1, "oy": job.out_h - 1, "ox": job.out_w - 1,
                        "ky": job.kh - 1, "kx": job.kw - 1, "g": job.ng - 1,
                        "p": Mux(job.kind == Kind.CONV, self._passes - 1, 0)}
        # Limits as the registers will hold them (truncated to the counters' widths).
        limit_is_zero = {name: Value.cast(value)[:len(lim[name])] == 0
                         for name, value in first_limits.items()}
        with m.If(self.start):
            m.d.sync += [
                a_valid.eq(1), self.valid.eq(0),
                *[lim[name].eq(value) for name, value in first_limits.items()],
                *[counters[name].eq(0) for name in counters],
                *[flag.eq(limit_is_zero[name]) for name, flag in at.items()],
                *[flag.eq(limit_is_zero[name]) for name, flag in at_zero.items()],
                b_offset.eq(job.src_b - job.src_a),
                blk_step.eq(Mux(job.dw, job.plane, 0)),
                yb.eq(-job.pad_top), xb.eq(-job.pad_left),
                blk_base.eq(origin), row_base.eq(origin), pix_base.eq(origin),
                ky_off.eq(0), kx_off.eq(0), k_off.eq(0),
                w_base.eq(job.wbuf_addr), w_addr.eq(job.wbuf_addr), out_off.eq(0),
            ]
        with m.Elif(self.adv & a_valid):
            with m.If(~end[0]):
                m.d.sync += [*inc("g"), k_off.eq(k_off + job.plane)]
            with m.Elif(~end[1]):
                m.d.sync += [*clr("g"), *inc("kx"), kx_off.eq(kx_off + 1),
                             k_off.eq(kx_off + 1)]
            with m.Elif(~end[2]):
                m.d.sync += [*clr("g", "kx"), *inc("ky"), ky_off.eq(ky_off + job.in_w),
                             kx_off.eq(ky_off + job.in_w), k_off.eq(ky_off + job.in_w)]
            with m.Else():
                # End of one accumulation: the window restarts, weights from the block's first.
                m.d.sync += [*clr("g", "kx", "ky"),
                             ky_off.eq(0), kx_off.eq(0), k_off.eq(0), w_addr.eq(w_base)]
                with m.If(~end[3]):
                    m.d.sync += inc("p")
                with m.Else():
                    m.d.sync += [*clr("p"), out_off.eq(out_off + 1)]
                with m.If(end[3] & ~end[4]):
                    m.d.sync += [*inc("ox"), xb.eq(xb + job.stride),
                                 pix_base.eq(pix_base + job.stride)]
                with m.If(end[4] & ~end[5]):
                    m.d.sync += [*clr("ox"), *inc("oy"), xb.eq(-job.pad_left),
                                 yb.eq(yb + job.stride), row_base.eq(row_base + job.row_step),
                                 pix_base.eq(row_base + job.row_step)]
                with m.If(end[5] & ~end[6]):
                    next_blk = blk_base + blk_step
                    m.d.sync += [*clr("ox", "oy"), *inc("blk"), xb.eq(-job.pad_left),
                                 yb.eq(-job.pad_top), blk_base.eq(next_blk),
                                 row_base.eq(next_blk), pix_base.eq(next_blk),
                                 w_base.eq(w_base + job.blk_weights),
                                 w_addr.eq(w_base + job.blk_weights)]
                with m.If(end[6]):
                    m.d.sync += a_valid.eq(0)
            with m.If(~pass_end):
                m.d.sync += w_addr.eq(w_addr + 1)
        return m
