"""The layer reference against direct loop implementations of the IR semantics."""

import numpy as np
from hypothesis import given, settings, strategies as st

from vdla.compiler import ir
from vdla.sim import numerics
from vdla.sim.reference import run_layer


def _requant(rng, k):
    return ir.Requant(bias=rng.integers(-5000, 5000, k), mult_a=rng.integers(1 << 15, 1 << 16, k),
                      shift=rng.integers(14, 24, k), zp_out=int(rng.integers(-20, 20)),
                      lo=-128, hi=int(rng.integers(0, 128)))


def _post_loop(acc, rq, k):
    v = int(numerics.wrap32(acc + int(rq.bias[k]))) * int(rq.mult_a[k])
    s = int(rq.shift[k])
    y = rq.zp_out + ((v + ((1 << s) >> 1)) >> s)
    return min(max(y, rq.lo), rq.hi)


def _padded_value(x, c, y, xx, pad_value):
    _, h, w = x.shape
    return int(x[c, y, xx]) if 0 <= y < h and 0 <= xx < w else pad_value


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 6), st.integers(1, 7), st.integers(1, 7),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), st.booleans(), st.integers(0, 9999))
def test_conv_matches_loops(c, k, h, w, kernel, stride, pad, depthwise, seed):
    rng = np.random.default_rng(seed)
    if depthwise:
        k = c
    if h + 2 * pad < kernel or w + 2 * pad < kernel:
        return
    weight = rng.integers(-128, 128, (k, 1 if depthwise else c, kernel, kernel)).astype(np.int8)
    rq = _requant(rng, k)
    pad_value = int(rng.integers(-128, 128))
    layer = ir.Conv("c", "x", "y", weight, stride, (pad, pad, pad, pad), pad_value, rq,
                    groups=c if depthwise else 1)
    x = rng.integers(-128, 128, (c, h, w)).astype(np.int8)
    got = run_layer(layer, {"x": x})
    oh = (h + 2 * pad - kernel) // stride + 1
    ow = (w + 2 * pad - kernel) // stride + 1
    assert got.shape == (k, oh, ow)
    for o in range(k):
        for oy in range(oh):
            for ox in range(ow):
                acc = 0
                for ci in ([o] if depthwise else range(c)):
                    for ky in range(kernel):
                        for kx in range(kernel):
                            v = _padded_value(x, ci, oy * stride + ky - pad, ox * stride + kx - pad,
                                              pad_value)
                            acc += v * int(weight[o, 0 if depthwise else ci, ky, kx])
                assert got[o, oy, ox] == _post_loop(acc, rq, o)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["max", "avg"]), st.integers(1, 5), st.integers(2, 6), st.integers(2, 6),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 9999))
def test_pool_matches_loops(mode, c, h, w, kernel, stride, seed):
    rng = np.random.default_rng(seed)
    if kernel > min(h, w):
        return
    rq = _requant(rng, c)
    pad_value = -128 if mode == "max" else 3
    layer = ir.Pool("p", "x", "y", mode, (kernel, kernel), stride, (0, 0, 0, 0), pad_value, rq)
    x = rng.integers(-128, 128, (c, h, w)).astype(np.int8)
    got = run_layer(layer, {"x": x})
    for ch in range(c):
        for oy in range(got.shape[1]):
            for ox in range(got.shape[2]):
                window = x[ch, oy * stride:oy * stride + kernel, ox * stride:ox * stride + kernel]
                acc = int(window.max()) if mode == "max" else int(window.astype(int).sum())
                assert got[ch, oy, ox] == _post_loop(acc, rq, ch)


def test_add_and_dense_match_loops():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (3, 2, 2)).astype(np.int8)
    b = rng.integers(-128, 128, (3, 2, 2)).astype(np.int8)
    rq = ir.Requant(bias=np.zeros(3), mult_a=[20000] * 3, mult_b=[50000] * 3, shift=[16] * 3,
                    zp_out=4, zp_a=-3, zp_b=7, lo=-100, hi=100)
    got = run_layer(ir.Add("a", "a", "b", "y", rq), {"a": a, "b": b})
    for idx in np.ndindex(a.shape):
        v = (int(a[idx]) + 3) * 20000 + (int(b[idx]) - 7) * 50000
        assert got[idx] == min(max(4 + ((v + (1 << 15)) >> 16), -100), 100)
    weight = rng.integers(-128, 128, (5, 12)).astype(np.int8)
    rq = _requant(rng, 5)
    got = run_layer(ir.Dense("d", "a", "y", weight, rq), {"a": a})
    flat = a.reshape(-1).astype(int)
    for o in range(5):
        assert got[o, 0, 0] == _post_loop(int(weight[o].astype(int) @ flat), rq, o)


def test_accumulator_wraps_like_int32():
    assert numerics.wrap32(np.int64(2**31)) == -2**31
    assert numerics.wrap32(np.int64(-2**31 - 1)) == 2**31 - 1
