"""Acceptance of a CONV or MISC: field checks, derived sizes and buffer extent checks.

A faulting instruction must have no effect, so every extent is checked before the first
beat. The products this needs (tile sizes, extents, address steps) go through one shared
16 x 16-bit multiplier, one product per cycle with registered operands (a single DSP per core
instead of one per product); the whole acceptance takes :data:`ACCEPT_CYCLES` cycles.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vdla import isa
from vdla.regs import Fault

from .layouts import Job, Kind

__all__ = ["Accept", "ACCEPT_CYCLES"]

#: Products, in issue order: (destination, operand a, operand b). A product is available two
#: steps after it is issued, which the order respects.
_STEPS = (
    ("plane", "in_h", "in_w"),
    ("pixels", "out_h", "out_w"),
    ("kk", "kh", "kw"),
    ("ient", "groups", "plane"),
    ("weights", "kk", "ng"),
    ("oent", "n_blk", "pixels"),
    ("went", "n_blk", "weights_sat"),
    ("row_step", "stride", "in_w"),
    ("top_rows", "pad_top", "in_w"),
    ("pent", "n_blk", "cb"),
)
#: Cycles from ``start`` to ``done``: latch, one issue per product, the last product, checks.
ACCEPT_CYCLES = len(_STEPS) + 3


class Accept(wiring.Component):
    """Checks a CONV / MISC and turns it into a :class:`.layouts.Job`.

    Members
    -------
    start : ``In(1)``
        Take ``insn`` (with the current ``setup`` / ``setup_valid``) this cycle.
    insn : ``In(isa.Insn)``
    setup : ``In(isa.SetupFields)``, setup_valid : ``In(1)``
        The frame's SETUP state.
    done : ``Out(1)``
        Pulse, :data:`ACCEPT_CYCLES` cycles after ``start``: ``fault`` and ``job`` are valid
        (``job`` stays valid until the next ``start``).
    fault : ``Out(regs.Fault)``
        ILLEGAL (zero counts, CONV / pooling without SETUP), BUFFER (an extent outside its
        buffer, a LUT's table included) or NONE.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "insn": In(isa.Insn),
            "setup": In(isa.SetupFields),
            "setup_valid": In(1),
            "done": Out(1),
            "fault": Out(Fault),
            "job": Out(Job),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        job, insn, setup = self.job, self.insn, self.setup
        conv, misc = insn.body.conv, insn.body.misc

        busy = Signal()
        step = Signal(range(len(_STEPS) + 2))
        illegal = Signal()
        prod = {name: Signal(32, name=name) for name, _, _ in _STEPS}

        # Latch the instruction as one normalized loop nest.
        is_conv = insn.opcode == isa.Opcode.CONV
        is_misc = insn.opcode == isa.Opcode.MISC
        is_add = misc.func == isa.MiscFunc.ADD
        is_lut = misc.func == isa.MiscFunc.LUT
        is_pool = ~is_add & ~is_lut
        with m.If(self.start):
            m.d.sync += [busy.eq(1), step.eq(0), job.pad_value.eq(setup.pad_value)]
            with m.If(is_conv):
                m.d.sync += [
                    illegal.eq(~self.setup_valid | (conv.out_h == 0) | (conv.out_w == 0)
                               | (conv.n_ob == 0)),
                    job.kind.eq(Kind.CONV), job.dw.eq(setup.dw),
                    job.acc_init.eq(conv.acc_init), job.acc_final.eq(conv.acc_final),
                    job.n_blk.eq(conv.n_ob), job.out_h.eq(conv.out_h), job.out_w.eq(conv.out_w),
                    job.in_h.eq(conv.in_h), job.in_w.eq(conv.in_w),
                    job.kh.eq(setup.kh), job.kw.eq(setup.kw), job.ng.eq(setup.n_icg),
                    job.stride.eq(setup.stride),
                    job.pad_top.eq(conv.pad_top), job.pad_left.eq(conv.pad_left),
                    job.src_a.eq(conv.ibuf_addr), job.wbuf_addr.eq(conv.wbuf_addr),
                    job.pbuf_addr.eq(conv.pbuf_addr), job.obuf_addr.eq(conv.obuf_addr),
                ]
            with m.Else():
                m.d.sync += [
                    illegal.eq(~is_misc | (misc.out_h == 0) | (misc.out_w == 0)
                               | (misc.n_cb == 0) | (is_pool & ~self.setup_valid)),
                    job.func.eq(misc.func), job.dw.eq(1), job.ng.eq(1),
                    job.acc_init.eq(1), job.acc_final.eq(1),
                    job.n_blk.eq(misc.n_cb), job.out_h.eq(misc.out_h), job.out_w.eq(misc.out_w),
                    job.src_a.eq(misc.src_a), job.src_b.eq(misc.src_b),
                    job.pbuf_addr.eq(misc.pbuf_addr), job.obuf_addr.eq(misc.obuf_addr),
                ]
                with m.If(is_add | is_lut):
                    # A 1 x 2 (ADD) or 1 x 1 (LUT) window over an input the size of the
                    # output, never padded.
                    m.d.sync += [
                        job.kind.eq(Kind.LUT), job.in_h.eq(misc.out_h), job.in_w.eq(misc.out_w),
                        job.kh.eq(1), job.kw.eq(Mux(is_add, 2, 1)), job.stride.eq(1),
                        job.pad_top.eq(0), job.pad_left.eq(0),
                    ]
                    with m.If(is_add):
                        m.d.sync += job.kind.eq(Kind.ADD)
                with m.Else():
                    m.d.sync += [
                        job.kind.eq(Kind.POOL), job.in_h.eq(misc.in_h), job.in_w.eq(misc.in_w),
                        job.kh.eq(setup.kh), job.kw.eq(setup.kw), job.stride.eq(setup.stride),
                        job.pad_top.eq(misc.pad_top), job.pad_left.eq(misc.pad_left),
                    ]

        # The shared multiplier: operands registered from the step's sources, product next.
        operands = {
            "in_h": job.in_h, "in_w": job.in_w, "out_h": job.out_h, "out_w": job.out_w,
            "kh": job.kh, "kw": job.kw, "ng": job.ng, "n_blk": job.n_blk,
            "stride": job.stride, "pad_top": job.pad_top, "cb": Const(cfg.cb, 16),
            "groups": Signal(12), "plane": prod["plane"][:16], "pixels": prod["pixels"][:16],
            "kk": prod["kk"][:16], "weights_sat": Signal(16),
        }
        m.d.comb += operands["groups"].eq(job.ng)
        with m.If(job.dw):
            m.d.comb += operands["groups"].eq(job.n_blk)
        weights = prod["weights"]
        m.d.comb += operands["weights_sat"].eq(weights[:16])
        with m.If(weights[16:].any()):
            # Past 16 bits every non-empty extent is beyond any buffer, saturated or not.
            m.d.comb += operands["weights_sat"].eq(0xFFFF)

        op_a, op_b = Signal(16), Signal(16)
        dest = Signal(range(len(_STEPS)))
        issued = Signal()
        m.d.sync += issued.eq(0)
        with m.If(busy):
            m.d.sync += step.eq(step + 1)
            with m.Switch(step):
                for k, (_, a, b) in enumerate(_STEPS):
                    with m.Case(k):
                        m.d.sync += [op_a.eq(operands[a]), op_b.eq(operands[b]), dest.eq(k),
                                     issued.eq(1)]
        with m.If(issued):
            with m.Switch(dest):
                for k, (name, _, _) in enumerate(_STEPS):
                    with m.Case(k):
                        m.d.sync += prod[name].eq(op_a * op_b)

        # Extent checks, once every product is in.
        def beyond(start, entries, depth):
            return start + entries > depth

        kind = job.kind
        bad_ibuf = (beyond(job.src_a, prod["ient"], cfg.ibuf_depth)
                    | ((kind == Kind.ADD) & beyond(job.src_b, prod["ient"], cfg.ibuf_depth)))
        bad_wbuf = (kind == Kind.CONV) & beyond(job.wbuf_addr, prod["went"], cfg.wbuf_depth)
        bad_obuf = beyond(job.obuf_addr, prod["oent"], cfg.obuf_depth)
        bad_pbuf = Mux(kind == Kind.LUT, beyond(job.pbuf_addr, isa.LUT_ENTRIES, cfg.pbuf_depth),
                       job.acc_final & beyond(job.pbuf_addr, prod["pent"], cfg.pbuf_depth))

        m.d.sync += self.done.eq(0)
        with m.If(busy & (step == len(_STEPS) + 1)):
            m.d.sync += [
                busy.eq(0), self.done.eq(1),
                job.plane.eq(prod["plane"]), job.row_step.eq(prod["row_step"]),
                job.blk_weights.eq(weights),
                job.origin.eq(job.src_a - prod["top_rows"] - job.pad_left),
            ]
            with m.If(illegal):
                m.d.sync += self.fault.eq(Fault.ILLEGAL)
            with m.Elif(bad_ibuf | bad_wbuf | bad_obuf | bad_pbuf):
                m.d.sync += self.fault.eq(Fault.BUFFER)
            with m.Else():
                m.d.sync += self.fault.eq(Fault.NONE)
        return m
