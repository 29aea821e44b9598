"""PostProcess against vdla.sim.numerics, bit for bit, on random and extreme vectors."""

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from vdla.config import get_config
from vdla.hw.compute import PostProcess
from vdla.sim.numerics import post, post_add

LANES = 4
I32 = (-(1 << 31), (1 << 31) - 1)


def _params(rng, n):
    """Random PostParams with the corners over-represented."""
    def pick(choices, lo, hi):
        return np.where(rng.random(n) < 0.25, rng.choice(choices, n),
                        rng.integers(lo, hi + 1, n, dtype=np.int64))
    return {
        "bias": pick([I32[0], I32[1], 0, -1], *I32),
        "mult_a": pick([0, 1, 65535, 32768], 0, 65535),
        "mult_b": pick([0, 1, 65535], 0, 65535),
        "shift": pick([0, 1, 31, 32, 46, 47, 48, 49, 50, 63], 0, 63),
        "zp_out": rng.integers(-128, 128, n),
        "lo": pick([-128], -128, 0),
        "hi": pick([127, 6, -128], -10, 127),       # sometimes below lo
        "zp_a": rng.integers(-128, 128, n),
        "zp_b": rng.integers(-128, 128, n),
    }


def _vectors(rng, n):
    add = rng.random(n) < 0.4
    a = np.where(rng.random((n, LANES)) < 0.2,
                 rng.choice([I32[0], I32[1], 0, -1], (n, LANES)),
                 rng.integers(*I32, (n, LANES), dtype=np.int64, endpoint=True))
    a = np.where(add[:, None], rng.integers(-128, 128, (n, LANES)), a)
    b = rng.integers(-128, 128, (n, LANES))
    params = [_params(rng, LANES) for _ in range(n)]
    # Shifts that keep results inside the clamp range often enough to be interesting.
    for k, p in enumerate(params):
        if rng.random() < 0.5:
            p["shift"] = rng.integers(12 if add[k] else 36, 50 if not add[k] else 24, LANES)
    return add, a, b, params


def _expected(add, a, b, params):
    out = []
    for k in range(len(add)):
        p = params[k]
        if add[k]:
            y = post_add(a[k], b[k], p["bias"], p["mult_a"], p["mult_b"], p["zp_a"], p["zp_b"],
                         p["shift"], p["zp_out"], p["lo"], p["hi"])
        else:
            y = post(a[k], p["bias"], p["mult_a"], p["shift"], p["zp_out"], p["lo"], p["hi"])
        out.append([int(v) for v in y])
    return out


def _run(add, a, b, params, stall_every=0):
    dut = PostProcess(get_config("small"), LANES)
    got, latencies = [], []
    n = len(add)

    async def bench(ctx):
        sent = cycle = 0
        sent_at = []
        while len(got) < n:
            stall = bool(stall_every) and cycle % stall_every == stall_every - 1
            ctx.set(dut.source.ready, not stall)
            if sent < n:
                p = params[sent]
                ctx.set(dut.sink.valid, 1)
                ctx.set(dut.sink.payload, {
                    "add": int(add[sent]), "a": [int(v) for v in a[sent]],
                    "b": [int(v) for v in b[sent]], "tag": sent,
                    "params": [{name: int(p[name][lane]) for name in p} for lane in range(LANES)],
                })
            else:
                ctx.set(dut.sink.valid, 0)
            took = sent < n and ctx.get(dut.sink.ready)
            out_valid, out_ready = ctx.get(dut.source.valid), not stall
            out = ctx.get(dut.source.payload) if out_valid and out_ready else None
            await ctx.tick()
            cycle += 1
            if took:
                sent_at.append(cycle)
                sent += 1
            if out is not None:
                assert out.tag == len(got)
                got.append([int(v) for v in out.y])
                latencies.append(cycle - sent_at[out.tag])
            assert cycle < 50 * n + 100

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, latencies


def test_post_random_bit_exact():
    rng = np.random.default_rng(1)
    add, a, b, params = _vectors(rng, 300)
    got, latencies = _run(add, a, b, params)
    assert got == _expected(add, a, b, params)
    assert set(latencies) == {PostProcess.latency}


def test_post_saturation_edges_bit_exact():
    """Values of ``2v >> 8k`` on either side of 19 bits (where the coarse shift saturates),
    for every ``k`` that can reach them and any fine shift: v = acc * mult_a, the multiplier
    a power of two that keeps acc in 32 bits and v on a step of it (2**(8k-1))."""
    rng = np.random.default_rng(3)
    add, a, params = [], [], []
    for k in range(4):
        m, step = 1 << max(0, 8 * k - 12), 1 << max(0, 8 * k - 1)
        for edge in (1 << (17 + 8 * k), -(1 << (17 + 8 * k))):
            for offsets in ((-2 * step, -step, -m, 0), (m, step, 2 * step, -1 * m)):
                p = _params(rng, LANES)
                p.update(bias=np.zeros(LANES, np.int64), mult_a=np.full(LANES, m),
                         shift=8 * k + rng.integers(0, 8, LANES), lo=np.full(LANES, -128),
                         hi=np.full(LANES, 127))
                add.append(False)
                a.append([(edge + off) // m for off in offsets])
                params.append(p)
    add, a = np.array(add), np.array(a, np.int64)
    assert np.all((a >= I32[0]) & (a <= I32[1]))
    b = np.zeros_like(a)
    got, _ = _run(add, a, b, params)
    expected = _expected(add, a, b, params)
    assert got == expected
    # Both ends are reached, so the saturation is exercised, not only the values inside.
    flat = [y for row in expected for y in row]
    assert max(flat) == 127 and min(flat) == -128


def test_post_back_pressure():
    rng = np.random.default_rng(2)
    add, a, b, params = _vectors(rng, 60)
    got, _ = _run(add, a, b, params, stall_every=3)
    assert got == _expected(add, a, b, params)


def test_post_lane_count_checked():
    with warnings.catch_warnings():
        # The half-built component is never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match=r"Lane count must be a positive integer, not 0"):
            PostProcess(get_config("small"), 0)
        gc.collect()
