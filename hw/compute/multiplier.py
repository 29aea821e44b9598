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
``"carry"``
    For two signed operands of one even width (the PE array's int8 x int8): partial products
    summed on the ECP5 carry chain (``CCU2C`` cells), each AND computed by the LUT4 in front
    of the adder bit that takes it, which Yosys never does (it gives each AND a LUT of its
    own). The first register holds the rows summed in pairs, two partial products per adder
    bit (one carry chain from the operands), the second the product (two more levels of a
    tree of adders). An 8x8 product takes 82 LUT4s, against 166 for ``"lut"`` and 188 and
    315 for ``a * b`` through Yosys's booth pass and through ``synth_ecp5 -nodsp``; an 8x8
    array closed at 112 MHz. (Adding the rows one after another takes 68, but each row is
    a hop through the fabric of about 2.5 ns: 62 MHz.) ``CCU2C`` instances cannot run in
    ``amaranth.sim``: ``ProductPipeline(..., cell_models=True)`` builds Amaranth models of
    them instead.
"""

from amaranth.hdl import (Cat, ClockSignal, Const, Instance, Module, Mux, Shape, Signal, Value,
                          signed)

__all__ = ["MULTIPLIERS", "check_multipliers", "ProductPipeline"]

#: Names of the implementations, the first being the default.
MULTIPLIERS = ("infer", "dsp", "lut", "carry")

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
    cell_models : bool
        Build the ECP5 cells of ``"carry"`` from Amaranth models of them rather than as
        instances, so that ``amaranth.sim`` can run them.
    """

    def __init__(self, m, kind, ce, *, domain="sync", cell_models=False):
        self._m, self._kind, self._ce, self._domain = m, check_multipliers(kind), ce, domain
        self._cell_models = cell_models
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
        if self._kind == "carry":
            return self._carry(a, b, name, shape)
        # keep: without it ``synth_ice40 -dsp`` folds a neighbouring product register into
        # one SB_MAC16's accumulator and drops multipliers (an 8 x 1 array got 4 SB_MAC16 for
        # 8 products and wrong sums; tests/test_synth.py simulates that netlist).
        return self._reg(self._operand(a, f"{name}_a") * self._operand(b, f"{name}_b"),
                         name, shape, keep=True)

    def _reg(self, value, name, shape=None, keep=False):
        # No reset: whether a product means anything travels beside it, and the DSP's own
        # registers have none either.
        reg = Signal(shape if shape is not None else value.shape(), name=name, reset_less=True,
                     attrs={"keep": 1} if keep else {})
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

    def _carry(self, a, b, name, shape):
        n = len(a)
        if a.shape() != signed(n) or b.shape() != signed(n) or n < 4 or n % 2:
            raise ValueError(f"The \"carry\" multiplier {name} takes two signed operands of one "
                             f"even width of at least 4 bits, not {a.shape()!r} and "
                             f"{b.shape()!r}")
        # Row j of partial products is ``a & b[j]``, an n-bit signed number worth 2**j; the sign
        # row is subtracted, and ``-(a & s) == (~a & s) + s`` for the sign bit ``s = b[n-1]``.
        # An n-bit signed number is its low bits plus its sign bit inverted, minus 2**(n-1):
        # so every bit adds as an unsigned one and the rows' offsets make a constant, 2**(2n-1)
        # + 2**(n-1) modulo 2**2n. The lone ``s`` at weight n-1 joins the sign row's bit 0
        # there: ``(~a[0] & s) + s == (a[0] & s) + 2 * (~a[0] & s)``.
        def row(j):
            if j < n - 1:
                fns = [_AND] * (n - 1) + [_NAND]
            else:
                fns = [_AND] + [_ANDN] * (n - 2) + [_ORN]
            return {i + j: ((a[i], b[j]), fn) for i, fn in enumerate(fns)}

        # The rows in pairs before the first register: a single hop from the operands, which
        # come from far (an activation feeds a column of multipliers). The extra bits go where
        # a pair has one bit: (~a[0] & s) beside row 1's top bit; 2**(n-1), as twice 2**(n-2),
        # beside the last pair's bottom bit and as its carry in; 2**(2n-1) on its carry out.
        chains = _CarryChains(2 * n, name)
        pairs = []
        for j in range(0, n - 2, 2):
            pairs.append(chains.add(row(j), row(j + 1),
                                    extra={n: ((a[0], b[n - 1]), _ANDN)} if j == 0 else {}))
        pairs.append(chains.add(row(n - 2), row(n - 1), extra={n - 2: _ONE, 2 * n - 1: _ONE},
                                cin=_ONE))
        # Then a tree of two-input sums of the registered pairs.
        nums = [self._reg_bits(pair, f"{name}_s{k}") for k, pair in enumerate(pairs)]
        chains.new_chain()
        while len(nums) > 1:
            nums = [chains.add(*nums[k:k + 2]) if k + 1 < len(nums) else nums[k]
                    for k in range(0, len(nums), 2)]
        for k, chain in enumerate(chains.chains):
            self._chain(chain, f"{name}_ch{k}")
        return self._reg(Cat(nums[0][w] for w in range(2 * n)).as_signed(), name, shape)

    def _reg_bits(self, bits, name):
        """Register a ``{weight: Value}`` number."""
        low = min(bits)
        reg = self._reg(Cat(bits[w] for w in range(low, max(bits) + 1)), name)
        return {w: reg[w - low] for w in bits}

    def _chain(self, chain, name):
        """The CCU2C cells of one :class:`_CarryChains` chain (or models of them)."""
        halves = [(*(_adder_half(*terms) if terms else _carry_half(g)), s)
                  for terms, g, s in chain]
        if len(halves) % 2:
            halves.append((*_carry_half(_ZERO), None))
        if self._cell_models:
            # A module per chain: amaranth.sim evaluates a module's logic as a whole whenever
            # a signal it reads changes, and a chain's carry ripples through dozens of them.
            self._m.submodules[name] = model = Module()
            carry = Const(0)
            for k, (pins, init, s) in enumerate(halves):
                carry = _half_model(model, pins, init, s, carry, f"{name}_c{k}")
            return
        carry = Const(0)
        for k in range(0, len(halves), 2):
            (pins0, init0, s0), (pins1, init1, s1) = halves[k:k + 2]
            cout = Signal(name=f"{name}_c{k // 2}")
            ports = {f"i_{pin}{h}": v for h, pins in enumerate((pins0, pins1))
                     for pin, v in zip("ABCD", pins)}
            ports.update({f"o_S{h}": v for h, v in enumerate((s0, s1)) if v is not None})
            self._m.submodules[f"{name}_cc{k // 2}"] = Instance(
                "CCU2C", p_INIT0=Const(init0, 16), p_INIT1=Const(init1, 16),
                p_INJECT1_0="NO", p_INJECT1_1="NO", i_CIN=carry, o_COUT=cout, **ports)
            carry = cout


def _half_model(m, pins, init, s, cin, name):
    """One CCU2C half as Yosys's cells_sim models it (``INJECT1 = "NO"``); returns its carry
    out."""
    lut = Const(init, 16).bit_select(Cat(*pins), 1)
    gen = Const(init & 0xF, 4).bit_select(Cat(*pins[:2]), 1)
    cout = Signal(name=name)
    if s is not None:
        m.d.comb += s.eq(lut ^ cin)
    m.d.comb += cout.eq(Mux(lut, cin, gen))
    return cout


# Bits of the "carry" multiplier are terms ``(inputs, fn)``: ``fn`` of as many bits as inputs.
def _AND(p, q):
    return p & q


def _NAND(p, q):
    return 1 ^ (p & q)


def _ANDN(p, q):
    return (1 ^ p) & q


def _ORN(p, q):
    return p | (1 ^ q)


def _ID(p):
    return p


_ZERO = ((), lambda: 0)
# A pin tied high, read as itself: 0 in the entries the carry generate shares (C = D = 0).
_ONE = ((Const(1),), _ID)


def _term(bit):
    """A bit of a number as a term: a Value is read as itself."""
    return ((bit,), _ID) if isinstance(bit, Value) else bit


def _pins(ab, cd):
    """A, B, C, D of a half: the terms' inputs, unused pins tied high (free on ECP5)."""
    return (*ab, *[Const(1)] * (2 - len(ab)), *cd, *[Const(1)] * (2 - len(cd)))


def _adder_half(x, y=_ZERO):
    """``(pins, INIT)`` of a CCU2C half adding the terms ``x`` and ``y`` to its carry in.

    A half sums ``P ^ CIN`` and carries ``CIN`` if ``P`` else ``G``, ``P`` being the LUT4 of
    INIT and ``G`` a LUT2 of ``INIT[3:0]`` on A and B (Yosys's model, with ``INJECT1 = "NO"``).
    With ``P = x ^ y`` the carry where ``P`` is 0 is ``x``: so ``x`` goes on A and B, ``y`` on
    C and D, and ``y`` must be 0 where C = D = 0, the LUT4 entries that are ``INIT[3:0]``.
    """
    if y[1](*[0] * len(y[0])):
        x, y = y, x
    assert not y[1](*[0] * len(y[0])), "no order of the inputs gives this half its carry"
    init = 0
    for index in range(16):
        bits = [(index >> k) & 1 for k in range(4)]
        init |= (x[1](*bits[:len(x[0])]) ^ y[1](*bits[2:2 + len(y[0])])) << index
    return _pins(x[0], y[0]), init


def _carry_half(g):
    """``(pins, INIT)`` of a CCU2C half whose sum is its carry in and whose carry out is the
    term ``g``: the LUT4 is 0 where C and D are high, ``G`` the LUT2 of ``INIT[3:0]``."""
    init = 0
    for index in range(4):
        init |= g[1](*[(index >> k) & 1 for k in range(len(g[0]))]) << index
    return _pins(g[0], ()), init


class _CarryChains:
    """Sums of numbers laid out on carry chains, for the "carry" multiplier.

    A number is ``{weight: bit}``, a bit being a term or a Value. Each :meth:`add` is a run of
    CCU2C halves, one per weight, and runs follow each other on one chain until
    :meth:`new_chain`: nextpnr gives every chain a feed-in and a feed-out cell (4 LUT4s), as a
    chain cannot start or end in the fabric otherwise. Between runs, a half whose LUT4 is 0
    puts out the carry of one run as its top bit and starts the carry of the next from its
    ``G``. :attr:`chains` lists each chain's halves as ``[terms, G, sum]``: the terms added,
    or none for a LUT4-0 half.
    """

    def __init__(self, width, name):
        self._width, self._name = width, name
        self.chains = [[]]
        self._open = None       # the last run's LUT4-0 half, whose G the next run takes

    def new_chain(self):
        self.chains.append([])
        self._open = None

    def add(self, x, y, *, extra=None, cin=_ZERO):
        """Sum of the numbers ``x`` and ``y``, the terms ``extra`` (at weights where only one
        of them has a bit) and ``cin`` at the lowest weight of the run, as ``{weight: Value}``
        up to the product's width. Value bits of one number below the other's pass around."""
        extra = extra or {}
        out = {}
        low, high = (x, y) if min(x) <= min(y) else (y, x)
        start = min(low)
        while start < min(high) and start not in extra and isinstance(low[start], Value):
            out[start] = low[start]
            start += 1
        chain = self.chains[-1]
        if self._open is not None:
            self._open[1] = cin
        elif chain:
            # The last run ended at the top weight: a LUT4-0 half stops its carry.
            chain.append([(), cin, None])
        else:
            assert cin is _ZERO, "the first run of a chain takes no carry in"
        top = max(max(x), max(y), max(extra, default=0))
        for w in range(start, top + 1):
            terms = [_term(bit) for bit in (x.get(w), y.get(w), extra.get(w)) if bit is not None]
            assert len(terms) <= 2, f"three bits at weight {w}"
            out[w] = Signal(name=f"{self._name}_w{w}")
            chain.append([terms or [_ZERO], None, out[w]])
        self._open = None
        if top + 1 < self._width:
            out[top + 1] = Signal(name=f"{self._name}_w{top + 1}")
            self._open = [(), _ZERO, out[top + 1]]
            chain.append(self._open)
        return out
