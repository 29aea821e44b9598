"""Layer-level quantized reference: runs an IR graph on int8 NCHW tensors, bit-exact.

This is the specification the instruction stream must reproduce: it knows nothing of tiles,
buffers or layouts, only the integer semantics of :mod:`vdla.compiler.ir` and the
post-processing of :mod:`vdla.sim.numerics`.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vdla.compiler import ir

from .numerics import post, post_add, wrap32

__all__ = ["run_graph", "run_layer", "windows"]


def windows(x, kernel, stride, pads, pad_value):
    """``(C, H, W)`` -> ``(C, OH, OW, kh, kw)`` windows of the padded input."""
    top, left, bottom, right = pads
    padded = np.pad(np.asarray(x, np.int64), ((0, 0), (top, bottom), (left, right)),
                    constant_values=pad_value)
    view = sliding_window_view(padded, tuple(kernel), axis=(1, 2))
    return view[:, ::stride, ::stride]


def _per_channel(requant):
    col = (slice(None), None, None)
    return requant.bias[col], requant.mult_a[col], requant.shift[col]


def _finish(acc, requant):
    bias, mult, shift = _per_channel(requant)
    return post(acc, bias, mult, shift, requant.zp_out, requant.lo, requant.hi)


def _exact_sum(a, b, subscripts):
    # float64 holds every int8*int8 sum of up to 2**37 terms exactly; wrap like the int32 adder.
    return wrap32(np.rint(np.einsum(subscripts, a.astype(np.float64), b.astype(np.float64),
                                    optimize=True)).astype(np.int64))


def _conv(layer, x):
    win = windows(x, layer.kernel, layer.stride, layer.pads, layer.pad_value)
    if layer.depthwise:
        acc = _exact_sum(win, layer.weight[:, 0], "chwij,cij->chw")
    else:
        acc = _exact_sum(win, layer.weight, "chwij,kcij->khw")
    return _finish(acc, layer.requant)


def _dense(layer, x):
    acc = _exact_sum(layer.weight, np.asarray(x).reshape(-1), "kn,n->k")
    return _finish(acc[:, None, None], layer.requant)


def _pool(layer, x):
    win = windows(x, layer.kernel, layer.stride, layer.pads, layer.pad_value)
    acc = win.max(axis=(3, 4)) if layer.mode == "max" else win.sum(axis=(3, 4))
    return _finish(acc, layer.requant)


def _add(layer, a, b):
    rq = layer.requant
    col = (slice(None), None, None)
    return post_add(a, b, rq.bias[col], rq.mult_a[col], rq.mult_b[col], rq.zp_a, rq.zp_b,
                    rq.shift[col], rq.zp_out, rq.lo, rq.hi)


def _conv_transpose(layer, x):
    """Each phase's convolution placed at its interleaved pixels (``y[:, a::sy, b::sx]``)."""
    k = layer.phases[0].conv.weight.shape[0]
    oh = sum(p.rows for p in layer.phases if p.b == 0)
    ow = sum(p.cols for p in layer.phases if p.a == 0)
    y = np.zeros((k, oh, ow), np.int8)
    for p in layer.phases:
        sy, sx = p.step
        y[:, p.a::sy, p.b::sx] = _conv(p.conv, x)[:, :p.rows, :p.cols]
    return y


def run_layer(layer, tensors):
    """Compute one layer's int8 output from ``tensors`` (name -> int8 (C, H, W))."""
    if isinstance(layer, ir.Add):
        return _add(layer, tensors[layer.a], tensors[layer.b])
    x = tensors[layer.input]
    if isinstance(layer, ir.Conv):
        return _conv(layer, x)
    if isinstance(layer, ir.Dense):
        return _dense(layer, x)
    if isinstance(layer, ir.Pool):
        return _pool(layer, x)
    if isinstance(layer, ir.Lut):
        return np.asarray(layer.table, np.int8)[np.asarray(x, np.int64) + 128]
    if isinstance(layer, ir.Resize):
        k = layer.factor
        up = np.repeat(np.repeat(np.asarray(x, np.int64), k, axis=1), k, axis=2)
        return np.asarray(layer.table, np.int8)[up + 128]
    if isinstance(layer, ir.ConvTranspose):
        return _conv_transpose(layer, x)
    raise TypeError(f"unknown layer type {type(layer).__name__}")


def run_graph(graph, inputs):
    """Run ``graph`` on ``inputs`` (name -> int8 (C, H, W)); return every tensor by name."""
    tensors = {}
    for name in graph.inputs:
        x = np.asarray(inputs[name])
        expected = tuple(graph.tensors[name].shape)
        if x.shape != expected or x.dtype != np.int8:
            raise ValueError(f"input {name}: expected int8 {expected}, got {x.dtype} {x.shape}")
        tensors[name] = x
    for layer in graph.layers:
        y = run_layer(layer, tensors)
        expected = tuple(graph.tensors[layer.output].shape)
        if y.shape != expected:
            raise ValueError(f"layer {layer.name}: computed shape {y.shape}, IR says {expected}")
        tensors[layer.output] = y
        _join_concats(graph, tensors)
    return tensors


def _join_concats(graph, tensors):
    """Add every concatenation whose parts all exist: the parts stacked on the channel axis
    (in DRAM their producers wrote them there in place)."""
    for name, parts in graph.concats.items():
        if name not in tensors and all(p in tensors for p in parts):
            tensors[name] = np.concatenate([tensors[p] for p in parts], axis=0)
