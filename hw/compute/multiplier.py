"""Multipliers of the PE array and post-processing, one implementation per FPGA resource.

Every implementation is the same two-register product pipeline: operands presented while
``ce`` is high at one clock edge give their product after the next edge at which ``ce`` is
high, so an implementation can be swapped without changing a cycle of the surrounding
pipeline. The implementations differ only in what the two registers hold:

``"infer"``
    Operand registers, then ``a * b`` into a product register. Yosys maps the product to a
    combinational DSP (MULT18X18D on ECP5) with registers in the fabric, and the routing into
    and out of the DSP limits the clock (77 MHz for one ECP5 core). Used by simulation.
``"dsp"``
    An ECP5 ``MULT18X18D`` whose own input and output registers (clock ``CLK0``, enable
    ``CE0``) are the two registers: no fabric routing in the multiply cycle. Operands must fit
    18-bit signed. An ``Instance``: it cannot run in ``amaranth.sim``.
``"lut"``
    Partial products (the multiplicand AND-ed with each multiplier bit) summed by a binary
    tree of adders, for cores that get no DSPs. The first register holds the tree after its
    first level, which is computed from the unregistered operands (a single short carry
    chain), so that the rest of the tree fits in the product cycle. (Registering the operands
    instead and summing the whole tree in the product cycle closed an 8x8 array at 80 MHz
    on ECP5, against 89-106 MHz for this arrangement.)
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Mux, Shape, Signal, signed

__all__ = ["MULTIPLIERS", "check_multipliers", "ProductPipeline"]

#: Names of the implementations, the first being the default.
MULTIPLIERS = ("infer", "dsp", "lut")

#: Operand width of the ECP5 multiplier block (signed).
_DSP_BITS = 18


def check_multipliers(kind):
    """Return ``kind`` if it names an implementation, else raise :class:`ValueError`."""
    if kind not in MULTIPLIERS:
        raise ValueError(f"Multiplier implementation must be one of "
                         f"{', '.join(repr(k) for k in MULTIPLIERS)}, not {kind!r}")
    return kind


def _signed_bits(shape):
    """Bits of the smallest signed shape that holds every value of ``shape``."""
    return shape.width + (0 if shape.signed else 1)


class ProductPipeline:
    """Builds two-register product pipelines in one module, all advancing with ``ce``.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    kind : str
        One of :data:`MULTIPLIERS`.
    ce : Value
        Clock enable of both registers (the surrounding pipeline's advance signal).
    domain : str
        Clock domain of the registers.
    """

    def __init__(self, m, kind, ce, *, domain="sync"):
        self._m, self._kind, self._ce, self._domain = m, check_multipliers(kind), ce, domain
        self._operand_regs = {}     # id(value) -> (value, register): shared operand registers

    def product(self, a, b, *, name, shape):
        """Return a signal of ``shape`` holding ``a * b`` (wrapped to ``shape``) two enabled
        edges after ``a`` and ``b`` were presented.

        With ``"infer"``, operands passed as the same Python object share one register (the
        PE array's activation feeds a whole column of multipliers).
        """
        shape = Shape.cast(shape)
        if self._kind == "dsp":
            for value in (a, b):
                if _signed_bits(value.shape()) > _DSP_BITS:
                    raise ValueError(f"Operand {value!r} of {name} does not fit an 18-bit "
                                     f"signed multiplier")
            return self._dsp(a, b, name, shape)
        if self._kind == "lut":
            return self._lut(a, b, name, shape)
        return self._reg(self._operand(a, f"{name}_a") * self._operand(b, f"{name}_b"),
                         name, shape)

    def _reg(self, value, name, shape=None):
        # No reset: whether a product means anything travels beside it, and the DSP's own
        # registers have none either.
        reg = Signal(shape if shape is not None else value.shape(), name=name, reset_less=True)
        with self._m.If(self._ce):
            self._m.d[self._domain] += reg.eq(value)
        return reg

    def _operand(self, value, name):
        key = id(value)
        if key not in self._operand_regs:
            self._operand_regs[key] = (value, self._reg(value, name))
        return self._operand_regs[key][1]

    def _dsp(self, a, b, name, shape):
        # Sign (or zero) extension to the block's 18-bit signed operands; SIGNEDA/B = 1.
        ext_a, ext_b = Signal(signed(_DSP_BITS), name=f"{name}_a"), Signal(signed(_DSP_BITS),
                                                                          name=f"{name}_b")
        p = Signal(signed(2 * _DSP_BITS), name=f"{name}_p")
        out = Signal(shape, name=name)
        self._m.d.comb += [ext_a.eq(a), ext_b.eq(b), out.eq(p[:shape.width])]
        ports = {f"i_A{k}": ext_a[k] for k in range(_DSP_BITS)}
        ports.update({f"i_B{k}": ext_b[k] for k in range(_DSP_BITS)})
        ports.update({f"i_C{k}": Const(0) for k in range(_DSP_BITS)})
        ports.update({f"o_P{k}": p[k] for k in range(2 * _DSP_BITS)})
        params = {"p_GSR": "DISABLED", "p_RESETMODE": "SYNC",
                  "p_REG_PIPELINE_CLK": "NONE", "p_REG_INPUTC_CLK": "NONE"}
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):
            params.update({f"p_REG_{reg}_CLK": "CLK0", f"p_REG_{reg}_CE": "CE0",
                           f"p_REG_{reg}_RST": "RST0"})
        self._m.submodules[f"{name}_dsp"] = Instance(
            "MULT18X18D", **params, **ports,
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            i_CLK0=ClockSignal(self._domain), i_CE0=self._ce, i_RST0=Const(0),
            **{f"i_{pin}": Const(0) for pin in ("CLK1", "CLK2", "CLK3", "CE1", "CE2", "CE3",
                                                "RST1", "RST2", "RST3")})
        return out

    def _lut(self, a, b, name, shape):
        # Rows come from the narrower operand's bits: fewer rows, fewer adders.
        if len(b) > len(a):
            a, b = b, a
        a = a.as_signed() if a.shape().signed else Cat(a, Const(0, 1)).as_signed()
        b_signed = b.shape().signed
        # Terms are (value, weight): the row of bit j is worth ``a * 2**j``; the sign bit's row
        # of a signed multiplier is subtracted.
        terms = []
        for j in range(len(b)):
            row = Mux(b[j], a, 0)
            terms.append((row, j, b_signed and j == len(b) - 1))
        terms = [(self._reg(value, f"{name}_t{k}"), weight, neg)
                 for k, (value, weight, neg) in enumerate(self._lut_level(terms))]
        while len(terms) > 1:
            terms = self._lut_level(terms)
        value, weight, neg = terms[0]
        return self._reg((-value if neg else value) << weight, name, shape)

    @staticmethod
    def _lut_level(terms):
        """One level of the adder tree: neighbours summed in pairs. A term's low bits below
        its neighbour's weight pass around the adder, which keeps the carry chains short."""
        out = []
        for k in range(0, len(terms) - 1, 2):
            # Only the last term can be negative, so ``lo`` never is.
            (lo, w_lo, _), (hi, w_hi, neg_hi) = terms[k], terms[k + 1]
            d = w_hi - w_lo
            upper = (lo >> d) - hi if neg_hi else (lo >> d) + hi
            out.append((Cat(lo[:d], upper).as_signed(), w_lo, False))
        if len(terms) % 2:
            out.append(terms[-1])
        return out
