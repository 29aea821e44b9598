"""ProductPipeline: every implementation that amaranth.sim can run is bit-exact with numpy and
keeps the two-register latency under a clock enable ("carry" through Amaranth models of its
ECP5 cells); the DSP and carry-chain instances are checked for their shape here and on the
synthesized netlist in test_synth.py."""

import gc
import warnings

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, UnusedElaboratable, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

import test_hw_postproc
from vdla.config import get_config
from vdla.hw.compute import PostProcess
from vdla.hw.compute.multiplier import MULTIPLIERS, ProductPipeline, check_multipliers

SIMULATED = ("infer", "lut", "carry")


class Products(wiring.Component):
    """``n`` multipliers side by side: ``p[k] = a[k] * b[k]`` through a ProductPipeline;
    ``"carry"`` with models of its cells unless ``cell_models`` is false."""

    def __init__(self, kind, a_shape, b_shape, p_shape, n, cell_models=True):
        self._kind, self._n, self._p_shape = kind, n, p_shape
        self._cell_models = cell_models
        super().__init__({
            "a": In(data.ArrayLayout(a_shape, n)), "b": In(data.ArrayLayout(b_shape, n)),
            "ce": In(1), "p": Out(data.ArrayLayout(p_shape, n)),
        })

    def elaborate(self, platform):
        m = Module()
        pipe = ProductPipeline(m, self._kind, self.ce, cell_models=self._cell_models)
        for k in range(self._n):
            m.d.comb += self.p[k].eq(pipe.product(self.a[k], self.b[k], name=f"m{k}",
                                                  shape=self._p_shape))
        return m


def _run(dut, a, b, ce):
    """Drive ``a[t]``, ``b[t]``, ``ce[t]`` for each cycle ``t``; return ``p`` after each edge."""
    out = []

    async def bench(ctx):
        for t in range(len(ce)):
            ctx.set(dut.a, [int(v) for v in a[t]])
            ctx.set(dut.b, [int(v) for v in b[t]])
            ctx.set(dut.ce, int(ce[t]))
            await ctx.tick()
            out.append([int(v) for v in ctx.get(dut.p)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.int64)


def _expected(a, b, ce, bits):
    """The product of the operands taken at the enabled edge before the last enabled one,
    wrapped to ``bits`` signed."""
    taken, out = [], []
    zero = np.zeros(a.shape[1], dtype=np.int64)
    for t in range(len(ce)):
        if ce[t]:
            taken.append(a[t].astype(np.int64) * b[t].astype(np.int64))
        out.append(taken[-2] if len(taken) >= 2 else zero)
    out = np.array(out, dtype=np.int64)
    return (out + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))


@pytest.mark.parametrize("kind", SIMULATED)
def test_int8_random_and_corners_with_stalls(kind):
    """Random int8 pairs, every pair of the corners (-128 * -128 among them), with the clock
    enable low one cycle in four."""
    rng = np.random.default_rng(0)
    lanes, cycles = 64, 80
    a = rng.integers(-128, 128, (cycles, lanes))
    b = rng.integers(-128, 128, (cycles, lanes))
    corners = np.array([-128, -127, -1, 0, 1, 127])
    a[:6, :36] = np.repeat(corners, 6)
    b[:6, :36] = np.tile(corners, 6)
    ce = rng.random(cycles) >= 0.25
    ce[:8] = [1, 0, 1, 1, 0, 0, 1, 1]
    got = _run(Products(kind, signed(8), signed(8), signed(16), lanes), a, b, ce)
    assert np.array_equal(got, _expected(a, b, ce, 16))


def _values(rng, shape, count):
    """Random values of ``shape``, a third of them its extremes, 0 or 1 (-1 if signed)."""
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)
    v = rng.integers(lo, hi, count, endpoint=True)
    return np.where(rng.random(count) < 0.3, rng.choice([lo, hi, 0, -1 if lo else 1], count), v)


@pytest.mark.parametrize("kind", ["infer", "lut"])
@pytest.mark.parametrize("a_shape, b_shape", [
    (signed(17), unsigned(16)),     # post-processing, accumulator mode (low half)
    (signed(16), unsigned(16)),     # post-processing, accumulator mode (high half)
    (signed(9), unsigned(16)),      # post-processing, add mode
    (unsigned(16), signed(9)),      # operands the other way round
    (signed(5), signed(11)),        # odd row count, negative last row
])
def test_wide_random_and_extremes(kind, a_shape, b_shape):
    rng = np.random.default_rng(a_shape.width * 100 + b_shape.width)
    n, cycles = 8, 120
    a = _values(rng, a_shape, n * cycles).reshape(cycles, n)
    b = _values(rng, b_shape, n * cycles).reshape(cycles, n)
    ce = rng.random(cycles) >= 0.2
    got = _run(Products(kind, a_shape, b_shape, signed(34), n), a, b, ce)
    assert np.array_equal(got, _expected(a, b, ce, 34))


@pytest.mark.parametrize("bits", [4, 6])
def test_carry_exhaustive(bits):
    """Every pair of small operands: each sign case of the carry chain's bit placement."""
    lanes = 64
    values = np.arange(-(1 << (bits - 1)), 1 << (bits - 1))
    a = np.repeat(values, len(values)).reshape(-1, lanes)
    b = np.tile(values, len(values)).reshape(-1, lanes)
    ce = np.ones(len(a), dtype=bool)
    got = _run(Products("carry", signed(bits), signed(bits), signed(2 * bits), lanes), a, b, ce)
    assert np.array_equal(got, _expected(a, b, ce, 2 * bits))


@pytest.mark.parametrize("bits, p_bits", [(10, 20), (12, 20), (8, 12), (8, 20)])
def test_carry_other_widths(bits, p_bits):
    """Wider operands (a deeper tree after the first register), and products wrapped or
    sign-extended to the result's shape."""
    rng = np.random.default_rng(bits * 100 + p_bits)
    n, cycles = 8, 60
    a = _values(rng, signed(bits), n * cycles).reshape(cycles, n)
    b = _values(rng, signed(bits), n * cycles).reshape(cycles, n)
    ce = rng.random(cycles) >= 0.2
    got = _run(Products("carry", signed(bits), signed(bits), signed(p_bits), n), a, b, ce)
    assert np.array_equal(got, _expected(a, b, ce, p_bits))


def test_carry_instances():
    """Without cell models, "carry" is CCU2C cells and registers: 37 cells per 8x8 product
    (two chains of 40 and 34 halves), no adder for Yosys to map."""
    text = rtlil.convert(Products("carry", signed(8), signed(8), signed(16), 2,
                                  cell_models=False))
    assert text.count("cell \\CCU2C") == 2 * 37
    assert text.count('parameter \\INJECT1_0 "NO"') == 2 * 37
    assert text.count('parameter \\INJECT1_1 "NO"') == 2 * 37
    assert "$mul" not in text and "$add" not in text
    text = rtlil.convert(Products("carry", signed(8), signed(8), signed(16), 2))
    assert "CCU2C" not in text


@pytest.mark.parametrize("a_shape, b_shape", [
    (signed(17), unsigned(16)), (signed(8), signed(9)), (unsigned(8), unsigned(8)),
    (signed(7), signed(7)), (signed(2), signed(2)),
])
def test_carry_shapes_checked(a_shape, b_shape):
    with warnings.catch_warnings():
        # The modules of the failed elaboration are never used.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r'^The "carry" multiplier m0 takes two signed '
                                             r"operands of one even width of at least 4 bits, "
                                             r"not "):
            rtlil.convert(Products("carry", a_shape, b_shape, signed(34), 1))
        gc.collect()


def test_carry_refused_by_postproc():
    """Post-processing's 17 x 16-bit products are not for "carry": said when it elaborates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r'^The "carry" multiplier l0_p0 takes two signed '):
            rtlil.convert(PostProcess(get_config("small"), 2, "carry"))
        gc.collect()


@pytest.mark.parametrize("kind", ["lut"])
def test_postproc_bit_exact(kind, monkeypatch):
    """PostProcess with another multiplier implementation: the same numbers, the same
    latency, under back-pressure too."""
    monkeypatch.setattr(test_hw_postproc, "PostProcess",
                        lambda config, lanes: PostProcess(config, lanes, kind))
    rng = np.random.default_rng(11)
    add, a, b, params = test_hw_postproc._vectors(rng, 200)
    got, latencies = test_hw_postproc._run(add, a, b, params)
    assert got == test_hw_postproc._expected(add, a, b, params)
    assert set(latencies) == {PostProcess.latency}
    add, a, b, params = test_hw_postproc._vectors(rng, 60)
    got, _ = test_hw_postproc._run(add, a, b, params, stall_every=3)
    assert got == test_hw_postproc._expected(add, a, b, params)


def test_dsp_instance():
    """The DSP variant instantiates one registered MULT18X18D per product."""
    text = rtlil.convert(Products("dsp", signed(8), signed(8), signed(16), 2))
    assert text.count("cell \\MULT18X18D") == 2
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        assert f'parameter \\REG_{reg}_CLK "CLK0"' in text
        assert f'parameter \\REG_{reg}_CE "CE0"' in text
    assert 'parameter \\REG_PIPELINE_CLK "NONE"' in text


def test_dsp_operand_width_checked():
    with pytest.raises(ValueError, match=r"does not fit an 18-bit signed multiplier"):
        rtlil.convert(Products("dsp", unsigned(18), signed(8), signed(26), 1))


def test_kind_checked():
    assert MULTIPLIERS[0] == "infer"
    with pytest.raises(ValueError, match=r"^Multiplier implementation must be one of 'infer', "
                                         r"'dsp', 'lut', 'carry', not 'fast'$"):
        check_multipliers("fast")
    with warnings.catch_warnings():
        # The half-built component is never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r"not 'fast'"):
            PostProcess(get_config("small"), 2, "fast")
        gc.collect()
