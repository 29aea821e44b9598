"""PEArray: int8 dot products accumulated with int32 wrap-around, against numpy, with each
multiplier implementation amaranth.sim can run (the DSP one: test_synth.py)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from vdla.config import get_config
from vdla.hw.compute import PEArray
from vdla.sim.numerics import wrap32


def _groups(rng, config, count, max_beats=5):
    """Random accumulation groups: (beats of (x, w), init), some with extreme values so the
    accumulators wrap."""
    groups = []
    for k in range(count):
        n = int(rng.integers(1, max_beats + 1))
        extreme = k % 4 == 3
        lo, hi = (-128, -127) if extreme else (-128, 128)
        x = rng.integers(lo, hi, (n, config.icp))
        w = rng.integers(lo, hi, (n, config.ocp, config.icp))
        init = rng.integers(-(1 << 31), 1 << 31, config.ocp, dtype=np.int64)
        if extreme:
            init[:] = (1 << 31) - 1
        groups.append((x, w, init))
    return groups


def _expected(groups):
    out = []
    for x, w, init in groups:
        acc = init.astype(np.int64) + np.einsum("ni,noi->o", x.astype(np.int64), w)
        out.append([int(v) for v in wrap32(acc)])
    return out


def _run(config, groups, gap_every=0, multipliers="infer"):
    """Results and latencies; the producer offers nothing one cycle in ``gap_every``. The
    array never stalls: ``sink.ready`` and ``source.ready`` do not exist."""
    dut = PEArray(config, multipliers)
    beats = []
    for tag, (x, w, init) in enumerate(groups):
        for j in range(len(x)):
            beats.append({"x": [int(v) for v in x[j]], "w": [[int(v) for v in row] for row in w[j]],
                          "first": j == 0, "last": j == len(x) - 1,
                          "init": [int(v) for v in init] if j == 0 else [0] * config.ocp,
                          "tag": tag})
    got, sent_at, latencies = [], {}, []

    async def bench(ctx):
        sent = cycle = 0
        while len(got) < len(groups):
            gap = bool(gap_every) and cycle % gap_every == gap_every - 1
            offer = sent < len(beats) and not gap
            ctx.set(dut.sink.valid, offer)
            if offer:
                ctx.set(dut.sink.payload, beats[sent])
            out = ctx.get(dut.source.payload) if ctx.get(dut.source.valid) else None
            await ctx.tick()
            cycle += 1
            if offer:
                if beats[sent]["last"]:
                    sent_at[beats[sent]["tag"]] = cycle
                sent += 1
            if out is not None:
                assert out.tag == len(got)
                got.append([int(v) for v in out.acc])
                latencies.append(cycle - sent_at[out.tag])
            assert cycle < 2 * len(beats) + 100

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return dut, got, latencies


@pytest.mark.parametrize("multipliers", ["infer", "lut"])
@pytest.mark.parametrize("ocp", [8, 2])
def test_pe_array_matches_numpy(ocp, multipliers):
    config = get_config("small").replace(icp=8, ocp=ocp)
    groups = _groups(np.random.default_rng(ocp), config, 40)
    dut, got, latencies = _run(config, groups, multipliers=multipliers)
    assert got == _expected(groups)
    assert set(latencies) == {dut.latency}


@pytest.mark.parametrize("multipliers", ["infer", "lut"])
def test_pe_array_gaps(multipliers):
    config = get_config("small").replace(icp=16, ocp=4)
    groups = _groups(np.random.default_rng(7), config, 30)
    dut, got, latencies = _run(config, groups, gap_every=5, multipliers=multipliers)
    assert got == _expected(groups)
    assert set(latencies) == {dut.latency}


@pytest.mark.parametrize("multipliers", ["infer", "lut"])
def test_pe_array_one_beat_results(multipliers):
    """A result every beat, beats every cycle: the array sustains one result per cycle."""
    config = get_config("small").replace(icp=8, ocp=2)
    groups = _groups(np.random.default_rng(3), config, 60, max_beats=1)
    dut, got, latencies = _run(config, groups, multipliers=multipliers)
    assert got == _expected(groups)
    assert set(latencies) == {dut.latency}
