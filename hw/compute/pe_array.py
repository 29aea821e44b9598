"""The PE array: ``ICP x OCP`` int8 multipliers reducing into ``OCP`` int32 accumulators.

One beat per cycle: ``ICP`` input channels of one pixel times ``OCP`` rows of a weight block.
Each output lane multiplies, sums its ``ICP`` products in a staged adder tree and adds the sum
to its accumulator, which restarts from ``init`` on a ``first`` beat and is emitted on a
``last`` beat. The array never stalls: a stall would need an enable fanning out to every
register and DSP of the array, which cost ~12 ns of routing on ECP5. The compute unit issues
beats only when it has room for their results (:mod:`.unit`).

Stages (every one a register, for 100+ MHz on ECP5, where an unpipelined array closes at
~68 MHz): the multipliers' two registers (operands and products, or whatever the chosen
implementation of :mod:`.multiplier` keeps there), ``ceil(log2(ICP) / 2)`` adder-tree stages
of up to two adder levels each, the accumulator. Accumulation wraps at 32 bits, exactly as
the golden model does.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .multiplier import ProductPipeline, check_multipliers

__all__ = ["PEArray", "TAG_BITS", "pe_latency"]

#: Width of the opaque tag carried from a ``last`` beat to its result.
TAG_BITS = 24
#: Adder levels combined between two pipeline registers of the tree.
_LEVELS_PER_STAGE = 2


def _tree_stages(icp):
    levels = (icp - 1).bit_length()
    return -(-levels // _LEVELS_PER_STAGE)


def _stage_levels(icp):
    """Adder levels of each tree stage; a stage short of levels comes first, because the
    products arrive from the multipliers over long routes (from the DSP columns on ECP5)."""
    levels = (icp - 1).bit_length()
    stages = _tree_stages(icp)
    return [levels - _LEVELS_PER_STAGE * (stages - 1)] + [_LEVELS_PER_STAGE] * (stages - 1) \
        if stages else []


def pe_latency(config):
    """Cycles from taking a ``last`` beat to its result on ``source``: operand
    registers, products, adder-tree stages, accumulator."""
    return 3 + _tree_stages(config.icp)


class PEArray(wiring.Component):
    """``ICP x OCP`` multiply-accumulate array.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
        Uses ``icp`` and ``ocp``.
    multipliers : str
        Implementation of the multipliers (:data:`.multiplier.MULTIPLIERS`); all have the
        same latency and results.

    Members
    -------
    sink : ``In(stream.Signature(..., always_ready=True))``
        Beats ``{x: ICP x int8, w: OCP x ICP x int8 (w[o][i]), first, last,
        init: OCP x int32, tag: unsigned(24)}``. ``x`` already holds the pad value where the
        window leaves the tile; ``init`` is read on ``first`` beats only; ``tag`` on ``last``.
    source : ``Out(stream.Signature(..., always_ready=True))``
        ``{acc: OCP x int32, tag}``: one result per ``last`` beat, :attr:`latency` cycles after
        it was taken; the consumer must take it then.
    """

    def __init__(self, config, multipliers="infer"):
        self._config = config
        self._icp, self._ocp = config.icp, config.ocp
        self._multipliers = check_multipliers(multipliers)
        super().__init__({
            "sink": In(stream.Signature(self.sink_layout(config), always_ready=True)),
            "source": Out(stream.Signature(self.source_layout(config), always_ready=True)),
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
        """Cycles from taking a ``last`` beat to its result on ``source``."""
        return pe_latency(self._config)

    def elaborate(self, platform):
        m = Module()
        icp, ocp = self._icp, self._ocp

        # Control travels beside the data, one register per stage. Only ``valid`` is reset:
        # data registers without a reset keep the reset net's fanout (and LUTs) small.
        ctrl_layout = data.StructLayout({
            "first": 1, "last": 1, "tag": unsigned(TAG_BITS),
            "init": data.ArrayLayout(signed(32), ocp),
        })

        def ctrl_stage(prev, name):
            """``(fields, valid)`` of the next stage from those of ``prev``."""
            reg = Signal(ctrl_layout, name=name, reset_less=True)
            valid = Signal(name=f"{name}_valid")
            m.d.sync += [reg.eq(prev[0]), valid.eq(prev[1])]
            return reg, valid

        beat = self.sink.payload
        ctrl_in = Signal(ctrl_layout)
        m.d.comb += [ctrl_in.first.eq(beat.first), ctrl_in.last.eq(beat.last),
                     ctrl_in.tag.eq(beat.tag), ctrl_in.init.eq(beat.init)]

        # Stages 0 and 1: the multipliers' two registers (operands and products for "infer"
        # and "dsp"; see :mod:`.multiplier`). ``xs[i]`` is one object so that "infer" keeps one
        # operand register per input channel.
        products = ProductPipeline(m, self._multipliers, Const(1))
        xs = [beat.x[i] for i in range(icp)]
        sums = [[products.product(xs[i], beat.w[o][i], name=f"prod_{o}_{i}", shape=signed(16))
                 for i in range(icp)] for o in range(ocp)]
        ctrl = ctrl_stage((ctrl_in, self.sink.valid), "ctrl_mul_in")
        ctrl = ctrl_stage(ctrl, "ctrl_prod")

        # Adder tree, up to two levels per register stage.
        for stage, levels in enumerate(_stage_levels(icp)):
            for o in range(ocp):
                terms = sums[o]
                for _ in range(levels):
                    pairs = [terms[k] + terms[k + 1] for k in range(0, len(terms) - 1, 2)]
                    terms = pairs + (terms[-1:] if len(terms) % 2 else [])
                regs = []
                for k, term in enumerate(terms):
                    reg = Signal(term.shape(), name=f"tree{stage}_{o}_{k}", reset_less=True)
                    m.d.sync += reg.eq(term)
                    regs.append(reg)
                sums[o] = regs
            ctrl = ctrl_stage(ctrl, f"ctrl_tree{stage}")

        # Accumulators: restart from ``init`` on a first beat; a last beat's sum is a result.
        ctrl, valid = ctrl
        acc = Signal(data.ArrayLayout(signed(32), ocp), reset_less=True)
        total = Signal.like(acc)
        for o in range(ocp):
            base = Mux(ctrl.first, ctrl.init[o], acc[o])
            m.d.comb += total[o].eq((base + sums[o][0])[:32])
        made = valid & ctrl.last
        with m.If(valid):
            m.d.sync += acc.eq(total)
        m.d.sync += self.source.valid.eq(made)
        with m.If(made):
            m.d.sync += [self.source.payload.acc.eq(total), self.source.payload.tag.eq(ctrl.tag)]
        return m
