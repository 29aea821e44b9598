"""Channel concatenations whose parts do not start on a channel block, done by copying.

A part written in place must start on a ``CB``-channel block of its concatenation (the DRAM
layout is ``[C/CB][H][W][CB]``). Where one does not, the concatenation is built instead from
layers the hardware has: each part is widened by a 1x1 convolution to all the channels of
the concatenation, itself at its channels and the real value 0 (the zero point) elsewhere,
and the widened parts are summed by ADD layers. Every part already has the
concatenation's scale and zero point, and in each sum one of the two terms is exactly 0, so
with unit multipliers and no shift both layers are exact: the result is bit for bit the
stacked parts.
"""

import dataclasses

import numpy as np

from . import ir

__all__ = ["misaligned", "copy_misaligned_concats"]


def misaligned(graph, name, cb):
    """True if a part of concatenation ``name`` after the first starts off a block."""
    starts = np.cumsum([graph.tensors[p].shape[0] for p in graph.concats[name]])[:-1]
    return bool(np.any(starts % cb))


def _unit_requant(channels, zero_point, bias=None, **add_fields):
    """Multiplier 1 and shift 0: the output is ``zero_point + acc + bias`` exactly."""
    bias = np.zeros(channels, np.int64) if bias is None else bias
    return ir.Requant(bias, np.ones(channels, np.int64), np.zeros(channels, np.int64),
                      zero_point, **add_fields)


def _widen(name, part, first, whole):
    """1x1 convolution putting ``part`` at channels ``first..`` of a tensor like ``whole``."""
    c = part.shape[0]
    weight = np.zeros((whole.shape[0], c, 1, 1), np.int8)
    weight[first + np.arange(c), np.arange(c), 0, 0] = 1
    # acc = x in the part's channels: take its zero point off there, add nothing elsewhere.
    bias = np.zeros(whole.shape[0], np.int64)
    bias[first:first + c] = -part.zero_point
    return ir.Conv(name, part.name, f"{name}_out", weight, 1, (0, 0, 0, 0), part.zero_point,
                   _unit_requant(whole.shape[0], whole.zero_point, bias))


def _sum(name, a, b, output, whole):
    """ADD of two widened parts, each 0 (its zero point) where the other holds values."""
    zp = whole.zero_point
    return ir.Add(name, a, b, output, _unit_requant(whole.shape[0], zp, mult_b=np.ones(
        whole.shape[0], np.int64), zp_a=zp, zp_b=zp))


def _copy_layers(graph, name):
    """``(layers, new tensors)`` computing concatenation ``name`` by widening and adding."""
    whole = graph.tensors[name]
    layers, tensors, first = [], {}, 0
    for index, part in enumerate(graph.concats[name]):
        layer = _widen(f"{name}_widen{index}", graph.tensors[part], first, whole)
        tensors[layer.output] = dataclasses.replace(whole, name=layer.output, onnx_shape=None,
                                                    host=())
        layers.append(layer)
        first += graph.tensors[part].shape[0]
    total = layers[0].output
    for index, layer in enumerate(layers[1:], 1):
        out = name if index == len(layers) - 1 else f"{name}_sum{index}"
        if out != name:
            tensors[out] = dataclasses.replace(whole, name=out, onnx_shape=None, host=())
        layers.append(_sum(f"{name}_add{index}", total, layer.output, out, whole))
        total = out
    return layers, tensors


def copy_misaligned_concats(graph, cb):
    """``graph`` with every concatenation that cannot be written in place computed by copy
    layers instead (a new Graph; ``graph`` itself is unchanged, and returned as is when
    every concatenation is aligned)."""
    names = [n for n in graph.concats if misaligned(graph, n, cb)]
    if not names:
        return graph
    layers, tensors = list(graph.layers), dict(graph.tensors)
    for name in names:
        extra, new = _copy_layers(graph, name)
        parts = set(graph.concats[name])
        # After the last producer of a part, before any reader of the concatenation.
        at = 1 + max(i for i, layer in enumerate(layers) if layer.output in parts)
        layers[at:at] = extra
        tensors.update(new)
    concats = {n: p for n, p in graph.concats.items() if n not in names}
    return dataclasses.replace(graph, layers=layers, tensors=tensors, concats=concats)
