"""Post-processing: requantization of accumulators (or of two int8 operands) to int8.

Bit-exact with :func:`vdla.sim.numerics.post` and :func:`vdla.sim.numerics.post_add`::

    v = wrap32(acc + bias) * mult_a                          (accumulator mode)
    v = (a - zp_a) * mult_a + (b - zp_b) * mult_b + bias     (add mode)
    y = clamp(zp_out + ((v + ((1 << shift) >> 1)) >> shift), lo, hi)

Each lane uses two 17 x 16-bit signed products (one MULT18X18D each on ECP5 unless they are
built from LUTs, see :mod:`.multiplier`): in accumulator mode the low and high halves of the
32-bit ``wrap32(acc + bias)`` times ``mult_a``, in add mode the two operand products. The
rounding shift is done as ``((2v >> shift) + 1) >> 1``, which equals the reference for every
``shift`` in 0..63 without a 64-bit rounding adder, and a shift past the value's width leaves
only its sign, which rounds to 0 as in the reference.
``2v >> shift`` is saturated to 12 bits before the rounding add: a larger magnitude rounds to
at least 1024, which clamps to the same ``lo`` / ``hi`` whatever ``zp_out`` is.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vdla import isa

from .multiplier import ProductPipeline, check_multipliers
from .pe_array import TAG_BITS

__all__ = ["PostProcess"]


class PostProcess(wiring.Component):
    """``lanes`` post-processing lanes in parallel, one beat per cycle.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    lanes : int
        Output lanes per beat.
    multipliers : str
        Implementation of the two products of each lane (:data:`.multiplier.MULTIPLIERS`);
        all have the same latency and results.

    Members
    -------
    sink : ``In(stream.Signature(...))``
        ``{add, a: lanes x int32, b: lanes x int8, params: lanes x isa.PostParams, tag}``;
        ``add`` selects add mode, in which ``a`` holds an int8 value (its low 8 bits are used).
    source : ``Out(stream.Signature(...))``
        ``{y: lanes x int8, tag}``, :attr:`latency` cycles after the beat was taken.
    """

    #: Register stages from the sink to the source (no stall).
    latency = 10

    def __init__(self, config, lanes, multipliers="infer"):
        if not isinstance(lanes, int) or lanes < 1:
            raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")
        self._lanes = lanes
        self._multipliers = check_multipliers(multipliers)
        super().__init__({
            "sink": In(stream.Signature(self.sink_layout(lanes))),
            "source": Out(stream.Signature(data.StructLayout({
                "y": data.ArrayLayout(signed(8), lanes), "tag": unsigned(TAG_BITS)}))),
        })

    @staticmethod
    def sink_layout(lanes):
        return data.StructLayout({
            "add": 1,
            "a": data.ArrayLayout(signed(32), lanes),
            "b": data.ArrayLayout(signed(8), lanes),
            "params": data.ArrayLayout(isa.PostParams, lanes),
            "tag": unsigned(TAG_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        ce = Signal()
        m.d.comb += [ce.eq(~self.source.valid | self.source.ready), self.sink.ready.eq(ce)]

        def reg(value, name, shape=None, reset_less=True):
            # Only ``valid`` is reset: a reset reaching every register of the lanes was one
            # ECP5 core's critical net (16 ns of routing).
            sig = Signal(shape if shape is not None else value.shape(), name=name,
                         reset_less=reset_less)
            with m.If(ce):
                m.d.sync += sig.eq(value)
            return sig

        # valid / tag / mode ride along the 10 stages.
        valid, tag = self.sink.valid, self.sink.payload.tag
        add = self.sink.payload.add
        stages = []
        for k in range(self.latency):
            valid = reg(valid, f"valid_{k}", reset_less=False)
            tag = reg(tag, f"tag_{k}")
            add = reg(add, f"add_{k}")
            stages.append(add)
        m.d.comb += [self.source.valid.eq(valid), self.source.payload.tag.eq(tag)]

        products = ProductPipeline(m, self._multipliers, ce)
        for lane in range(self._lanes):
            y = self._lane(m, reg, stages, lane, products)
            m.d.comb += self.source.payload.y[lane].eq(y)
        return m

    @staticmethod
    def _coarse(m, w, k, lane):
        """``w >> 8k`` saturated to 19 bits (``w`` 51-bit signed, ``k`` 0..7)."""
        shifted = w >> Cat(Const(0, 3), k)
        # Whether the bits above the 19 kept are all sign, for each k that leaves them any.
        fits = [Const(1)] * 8
        for step in range(4):
            top = w[8 * step + 18:]
            fits[step] = top.all() | ~top.any()
        high = Mux(w[-1], Const(-(1 << 18), signed(19)), Const((1 << 18) - 1, signed(19)))
        return Mux(Array(fits)[k], shifted[:19], high)

    def _lane(self, m, reg, add, lane, products):
        """One lane's pipeline; ``add[k]`` is the mode flag registered in stage ``k``;
        ``products`` a :class:`.multiplier.ProductPipeline` advancing with the lanes."""
        def r(value, name, shape=None):
            return reg(value, f"l{lane}_{name}", shape)

        beat = self.sink.payload
        # P0: operand and parameter registers.
        a = r(beat.a[lane], "a")
        b = r(beat.b[lane], "b")
        prm = r(beat.params[lane], "params")

        # P1, P2: the multipliers' two registers (operands and products for "infer" and
        # "dsp"; see :mod:`.multiplier`). A stage of its own for the bias add and the mode mux
        # below was tried: it moved the ECP5 critical path to the parameter cache's bank
        # select and cost one core 6-12 % of its Fmax.
        wrapped = (a + prm.bias)[:32]
        x0 = Mux(add[0], a[:8].as_signed() - prm.zp_a, wrapped[:16])
        x1 = Mux(add[0], b - prm.zp_b, wrapped[16:].as_signed())
        m1 = Mux(add[0], prm.mult_b, prm.mult_a)
        p0 = products.product(x0, prm.mult_a, name=f"l{lane}_p0", shape=signed(34))
        p1 = products.product(x1, m1, name=f"l{lane}_p1", shape=signed(34))
        # Parameters needed later travel with the value, one register per stage.
        late = {"shift": prm.shift, "zp_out": prm.zp_out, "lo": prm.lo, "hi": prm.hi}
        late = {name: r(value, f"{name}_1") for name, value in late.items()}
        bias = r(prm.bias, "bias_1")

        def carry(k):
            return {name: r(value, f"{name}_{k}") for name, value in late.items()}

        bias = r(bias, "bias_2")
        late = carry(2)

        # P3, P4: the sum of the products, one adder per stage.
        u0 = r(Mux(add[2], p0 + bias, p0), "u0", signed(35))
        p1 = r(p1, "p1_3")
        late = carry(3)
        v = r(u0 + Mux(add[3], p1, p1 << 16), "v", signed(50))
        late = carry(4)

        # P5, P6: arithmetic shift of 2v by ``shift``, in steps of 8 and then 1. The coarse
        # step saturates to 19 bits: a value past them is past 12 bits after the fine step
        # too (7 bits at most), so it saturates to the same ends below, and 51-bit shifters
        # become 19-bit ones.
        coarse = r(self._coarse(m, v << 1, late["shift"][3:], lane), "coarse", signed(19))
        late = carry(5)
        fine = r(coarse >> late["shift"][:3], "fine", signed(19))
        late = carry(6)

        # P7: saturate to 12 bits; P8: round (ties up) and add zp_out; P9: clamp.
        top = fine[11:]
        fs = r(Mux(top.all() | ~top.any(), fine[:12].as_signed(),
                   Mux(fine[-1], Const(-2048, signed(12)), Const(2047, signed(12)))),
               "fine_sat", signed(12))
        late = carry(7)
        y0 = r(late["zp_out"] + ((fs + 1) >> 1), "y0", signed(13))
        late = carry(8)
        lo, hi = late["lo"], late["hi"]
        low = Mux(y0 < lo, lo, y0)
        return r(Mux(low > hi, hi, low), "y", signed(8))
