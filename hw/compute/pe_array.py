"""The PE array: ``ICP x OCP`` int8 multipliers reducing into ``OCP`` int32 accumulators.

One beat per cycle: ``ICP`` input channels of one pixel times ``OCP`` rows of a weight block.
Each output lane multiplies, sums its ``ICP`` products in a staged adder tree and adds the sum
to its accumulator, which restarts from ``init`` on a ``first`` beat and is emitted on a
``last`` beat. The pipeline is fixed-latency and stalls as a whole under back-pressure.

Stages (every one a register, for 100+ MHz on ECP5, where an unpipelined array closes at
~68 MHz): operand registers (the multipliers' input registers), product registers (their
output registers), ``ceil(log2(ICP) / 2)`` adder-tree stages of two adder levels each, the
accumulator. Accumulation wraps at 32 bits, exactly as the golden model does.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PEArray", "TAG_BITS", "pe_latency"]

#: Width of the opaque tag carried from a ``last`` beat to its result.
TAG_BITS = 24
#: Adder levels combined between two pipeline registers of the tree.
_LEVELS_PER_STAGE = 2


def _tree_stages(icp):
    levels = (icp - 1).bit_length()
    return -(-levels // _LEVELS_PER_STAGE)


def pe_latency(config):
    """Cycles from taking a ``last`` beat to its result on ``source`` (no stall): operand
    registers, products, adder-tree stages, accumulator."""
    return 3 + _tree_stages(config.icp)


class PEArray(wiring.Component):
    """``ICP x OCP`` multiply-accumulate array.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
        Uses ``icp`` and ``ocp``.

    Members
    -------
    sink : ``In(stream.Signature(...))``
        Beats ``{x: ICP x int8, w: OCP x ICP x int8 (w[o][i]), first, last,
        init: OCP x int32, tag: unsigned(24)}``. ``x`` already holds the pad value where the
        window leaves the tile; ``init`` is read on ``first`` beats only; ``tag`` on ``last``.
    source : ``Out(stream.Signature(...))``
        ``{acc: OCP x int32, tag}``: one result per ``last`` beat, :attr:`latency` cycles after
        it was taken.
    """

    def __init__(self, config):
        self._icp, self._ocp = config.icp, config.ocp
        super().__init__({
            "sink": In(stream.Signature(self.sink_layout(config))),
            "source": Out(stream.Signature(self.source_layout(config))),
        })

    @staticmethod
    def sink_layout(config):
        return data.StructLayout({
            "x": data.ArrayLayout(signed(8), config.icp),
            "w": data.ArrayLayout(data.ArrayLayout(signed(8), config.icp), config.ocp),
            "first": 1,
            "last": 1,
            "init": data.ArrayLayout(signed(32), config.ocp),
            "tag": unsigned(TAG_BITS),
        })

    @staticmethod
    def source_layout(config):
        return data.StructLayout({
            "acc": data.ArrayLayout(signed(32), config.ocp),
            "tag": unsigned(TAG_BITS),
        })

    @property
    def latency(self):
        """Cycles from taking a ``last`` beat to its result on ``source`` (no stall)."""
        return 3 + _tree_stages(self._icp)

    def elaborate(self, platform):
        m = Module()
        icp, ocp = self._icp, self._ocp

        # The whole array advances unless a result waits for a consumer.
        ce = Signal()
        m.d.comb += [ce.eq(~self.source.valid | self.source.ready), self.sink.ready.eq(ce)]

        # Control travels beside the data: one copy per stage, all moving with ``ce``.
        ctrl_layout = data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "tag": unsigned(TAG_BITS),
            "init": data.ArrayLayout(signed(32), ocp),
        })

        def ctrl_stage(prev, name):
            reg = Signal(ctrl_layout, name=name)
            with m.If(ce):
                m.d.sync += reg.eq(prev)
            return reg

        beat = self.sink.payload
        ctrl_in = Signal(ctrl_layout)
        m.d.comb += [ctrl_in.valid.eq(self.sink.valid), ctrl_in.first.eq(beat.first),
                     ctrl_in.last.eq(beat.last), ctrl_in.tag.eq(beat.tag),
                     ctrl_in.init.eq(beat.init)]

        # Stage 0: multiplier input registers.
        x = Signal(data.ArrayLayout(signed(8), icp))
        w = Signal(data.ArrayLayout(data.ArrayLayout(signed(8), icp), ocp))
        with m.If(ce):
            m.d.sync += [x.eq(beat.x), w.eq(beat.w)]
        ctrl = ctrl_stage(ctrl_in, "ctrl_mul_in")

        # Stage 1: multiplier output registers.
        sums = []
        for o in range(ocp):
            lane = []
            for i in range(icp):
                prod = Signal(signed(16), name=f"prod_{o}_{i}")
                with m.If(ce):
                    m.d.sync += prod.eq(x[i] * w[o][i])
                lane.append(prod)
            sums.append(lane)
        ctrl = ctrl_stage(ctrl, "ctrl_prod")

        # Adder tree, two levels per register stage.
        for stage in range(_tree_stages(icp)):
            for o in range(ocp):
                terms = sums[o]
                for _ in range(_LEVELS_PER_STAGE):
                    if len(terms) == 1:
                        break
                    pairs = [terms[k] + terms[k + 1] for k in range(0, len(terms) - 1, 2)]
                    terms = pairs + (terms[-1:] if len(terms) % 2 else [])
                regs = []
                for k, term in enumerate(terms):
                    reg = Signal(term.shape(), name=f"tree{stage}_{o}_{k}")
                    with m.If(ce):
                        m.d.sync += reg.eq(term)
                    regs.append(reg)
                sums[o] = regs
            ctrl = ctrl_stage(ctrl, f"ctrl_tree{stage}")

        # Accumulators: restart from ``init`` on a first beat, emit on a last beat.
        acc = self.source.payload.acc
        with m.If(ce):
            m.d.sync += self.source.valid.eq(ctrl.valid & ctrl.last)
            with m.If(ctrl.valid):
                m.d.sync += self.source.payload.tag.eq(ctrl.tag)
                for o in range(ocp):
                    base = Mux(ctrl.first, ctrl.init[o], acc[o])
                    m.d.sync += acc[o].eq((base + sums[o][0])[:32])
        return m
