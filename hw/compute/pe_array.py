"""The PE array: ``ICP x OCP`` int8 multipliers reducing into ``OCP`` int32 accumulators.

One beat per cycle: ``ICP`` input channels of one pixel times ``OCP`` rows of a weight block.
Each output lane multiplies, sums its ``ICP`` products in a staged adder tree and adds the sum
to its accumulator, which restarts from ``init`` on a ``first`` beat and is emitted on a
``last`` beat. Its handshake is that of a fixed-latency pipeline stalling as a whole under
back-pressure; inside, only a bit per stage stalls and the data path runs freely into a small
result queue (see :meth:`PEArray.elaborate`).

Stages (every one a register, for 100+ MHz on ECP5, where an unpipelined array closes at
~68 MHz): the multipliers' two registers (operands and products, or whatever the chosen
implementation of :mod:`.multiplier` keeps there), ``ceil(log2(ICP) / 2)`` adder-tree stages
of up to two adder levels each, the accumulator. Accumulation wraps at 32 bits, exactly as
the golden model does.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
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
    """Cycles from taking a ``last`` beat to its result on ``source`` (no stall): operand
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
    sink : ``In(stream.Signature(...))``
        Beats ``{x: ICP x int8, w: OCP x ICP x int8 (w[o][i]), first, last,
        init: OCP x int32, tag: unsigned(24)}``. ``x`` already holds the pad value where the
        window leaves the tile; ``init`` is read on ``first`` beats only; ``tag`` on ``last``.
    source : ``Out(stream.Signature(...))``
        ``{acc: OCP x int32, tag}``: one result per ``last`` beat, :attr:`latency` cycles after
        it was taken.
    """

    def __init__(self, config, multipliers="infer"):
        self._config = config
        self._icp, self._ocp = config.icp, config.ocp
        self._multipliers = check_multipliers(multipliers)
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

        # Handshake of a pipeline that stalls as a whole: a beat is taken, and every beat in
        # flight moves, unless a result waits for a consumer.
        ce = Signal()
        m.d.comb += [ce.eq(~self.source.valid | self.source.ready), self.sink.ready.eq(ce)]
        taken = self.sink.valid & ce

        # Only that handshake stalls: one bit per stage says where a stalling pipeline would
        # hold a last beat, and its end is ``source.valid``. The data path below never stalls
        # (no enable fanning out to every register and DSP of the array, which cost ~12 ns of
        # routing on ECP5) and parks its results in a queue until ``source`` would show them.
        # The data path is never behind, so the result is in ``head`` when ``source.valid``
        # rises, and at most ``latency + 1`` results wait.
        lasts = taken & self.sink.payload.last
        for k in range(self.latency - 1):
            stage = Signal(name=f"last_{k}")
            with m.If(ce):
                m.d.sync += stage.eq(lasts)
            lasts = stage
        with m.If(ce):
            m.d.sync += self.source.valid.eq(lasts)

        # Results are numbered in order: ``produced`` counts those made, ``loaded`` those
        # moved into ``head``, the output register. Result ``k`` is made into ``total`` (below),
        # held in ``result`` for a cycle and written to slot ``k`` of a small LUT RAM (whose
        # write data is far from the adders). ``head`` takes the oldest result not yet shown,
        # from whichever of the three holds it, when it is empty or being taken.
        m.submodules.results = results = Memory(
            shape=self.source_layout(self._config), depth=1 << (self.latency + 1).bit_length(),
            init=[])
        push, read = results.write_port(), results.read_port(domain="comb")
        count_bits = len(push.addr) + 1
        produced, loaded = Signal(count_bits), Signal(count_bits)
        result = Signal(self.source_layout(self._config), reset_less=True)
        head = Signal(self.source_layout(self._config), reset_less=True)
        head_valid = Signal()
        made = Signal()             # a result is made this cycle (into ``total``)
        made_now = Signal(self.source_layout(self._config))
        m.d.comb += [push.addr.eq(produced - 1), push.data.eq(result), read.addr.eq(loaded),
                     self.source.payload.eq(head)]
        with m.If(made):
            m.d.sync += produced.eq(produced + 1)
        # ``produced - loaded``, kept in a register of its own so that the head's selects
        # come straight from flip-flops.
        behind, take, load = Signal(count_bits), Signal(), Signal()
        m.d.comb += [take.eq(~head_valid | (self.source.valid & self.source.ready)),
                     load.eq(take & (behind.any() | made))]
        m.d.sync += behind.eq(behind + made - load)
        with m.If(take):
            m.d.sync += head_valid.eq(load)
        with m.If(load):
            m.d.sync += loaded.eq(loaded + 1)
            with m.If(behind >= 2):
                m.d.sync += head.eq(read.data)
            with m.Elif(behind == 1):
                m.d.sync += head.eq(result)
            with m.Else():
                m.d.sync += head.eq(made_now)

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
        ctrl = ctrl_stage((ctrl_in, taken), "ctrl_mul_in")
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
        m.d.comb += [made.eq(valid & ctrl.last), made_now.acc.eq(total),
                     made_now.tag.eq(ctrl.tag)]
        m.d.sync += push.en.eq(made)
        with m.If(valid):
            m.d.sync += acc.eq(total)
        with m.If(made):
            m.d.sync += result.eq(made_now)
        return m
