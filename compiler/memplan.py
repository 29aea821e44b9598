"""DRAM segment plan: the weight blob at offset 0, then the activations.

Per layer the blob holds the weight blocks in the standard layouts of :mod:`.layout`
(``[K/CB][kh][kw][C/CB]`` blocks, diagonal blocks for depthwise, a 1x1 convolution over one
pixel for Dense), in which any chunk of ``n_ob`` output x ``n_icg`` input blocks the tiler
loads is one 3-D strided region, followed by the PBUF entries of its output channels (of a
lookup layer, its 256-byte table).
Activations follow: model inputs and outputs each in a dedicated region (the host reads and
writes them between inferences), intermediates reusing space by liveness with first fit.

A channel concatenation is placed as one tensor, live from the first write of a part to the
last read of it or of any part; each part is a view of it at ``first channel / CB`` planes of
blocks, so the part's producer writes straight into it and nothing copies. That needs every
part to start on a channel block; the static stage computes any other concatenation by copy
layers first (:mod:`.concat`), and this plan refuses one left over.
"""

import dataclasses

import numpy as np

from vdla import isa

from . import layout
from .errors import CompileError
from .layout import blocks

__all__ = ["LayerBlob", "MemoryPlan", "tensor_bytes", "plan_memory", "weight_blocks",
           "phase_offsets",
           "build_weights", "ALIGN"]

#: Alignment of every region (a DRAM burst boundary; LOAD/SAVE need only 8 bytes).
ALIGN = 64


def _align(n):
    return -(-n // ALIGN) * ALIGN


@dataclasses.dataclass
class LayerBlob:
    """Where a layer's constants sit in the segment (bytes)."""
    weight_offset: int
    weight_size: int
    post_offset: int
    post_size: int


@dataclasses.dataclass
class MemoryPlan:
    weights_size: int               # bytes of the blob (segment offset 0)
    blobs: list                     # [LayerBlob] per layer
    offsets: dict                   # tensor name -> byte offset
    sizes: dict                     # tensor name -> bytes (64-byte aligned)
    roles: dict                     # tensor name -> "input" / "output" / "activation"
    segment_size: int


def tensor_bytes(shape, cb):
    """Bytes of a ``(C, H, W)`` activation in the blocked layout, 64-byte aligned."""
    c, h, w = shape
    return _align(blocks(c, cb) * cb * h * w)


def _weight_size(layer, graph, cb):
    """(weight bytes, PBUF bytes) of one layer."""
    out_c = graph.tensors[layer.output].shape[0]
    if layer.kind in ("lut", "resize"):
        return 0, isa.LUT_ENTRIES * isa.POST_BYTES
    post = blocks(out_c, cb) * cb * isa.POST_BYTES
    if layer.kind == "conv":
        k, _, kh, kw = layer.weight.shape
        in_blocks = 1 if layer.depthwise else blocks(graph.tensors[layer.input].shape[0], cb)
        return blocks(k, cb) * kh * kw * in_blocks * cb * cb, post
    if layer.kind == "dense":
        c, h, w = graph.tensors[layer.input].shape
        return blocks(out_c, cb) * blocks(c, cb) * h * w * cb * cb, post
    if layer.kind == "convt":
        # Each phase's weights and parameters one after the other (see phase_offsets).
        return sum(_weight_size(p.conv, graph, cb)[0] for p in layer.phases), len(layer.phases) * post
    return 0, post


def phase_offsets(layer, graph, cb):
    """``[(weight offset, PBUF offset)]`` in bytes of each phase of a ConvTranspose, relative
    to the layer's weight and parameter regions."""
    out, w, p = [], 0, 0
    for phase in layer.phases:
        out.append((w, p))
        w_size, p_size = _weight_size(phase.conv, graph, cb)
        w, p = w + w_size, p + p_size
    return out


def weight_blocks(layer, graph, cb):
    """The layer's weights in their DRAM layout as int8 bytes (empty for Pool / Add)."""
    if layer.kind == "conv":
        if layer.depthwise:
            return layout.dw_weight_blocks(layer.weight, cb).reshape(-1)
        return layout.conv_weight_blocks(layer.weight, cb).reshape(-1)
    if layer.kind == "dense":
        in_shape = graph.tensors[layer.input].shape
        matrix = layout.dense_weight_matrix(layer.weight, in_shape, cb)
        return layout.conv_weight_blocks(matrix[:, :, None, None], cb).reshape(-1)
    if layer.kind == "convt":
        return np.concatenate([weight_blocks(p.conv, graph, cb) for p in layer.phases])
    return np.zeros(0, np.int8)


def _homes(graph):
    """part tensor -> the concatenation holding it."""
    return {part: name for name, parts in graph.concats.items() for part in parts}


def _lifetimes(graph):
    """tensor -> (first layer index writing it, last layer index reading it); a
    concatenation stands for its parts, which get no entry of their own."""
    home = _homes(graph)
    life = {name: (-1, -1) for name in graph.inputs}
    for i, layer in enumerate(graph.layers):
        out = home.get(layer.output, layer.output)
        life[out] = (min(life.get(out, (i, i))[0], i), i)
        for name in graph.layer_inputs(layer):
            name = home.get(name, name)
            first, _ = life[name]
            life[name] = (first, i)
    return life


def part_offsets(graph, cb):
    """part tensor -> byte offset within its concatenation (one whole number of blocks).

    Raises
    ------
    CompileError
        A part that does not start on a ``cb``-channel block.
    """
    out = {}
    for name, parts in graph.concats.items():
        channel = 0
        for part in parts:
            c, h, w = graph.tensors[part].shape
            if channel % cb:
                raise CompileError(
                    f"concatenation {name!r}: part {part!r} starts at channel {channel}, not "
                    f"a multiple of the core's {cb}-channel block, so its producer cannot "
                    f"write it in place; give the parts before it multiples of {cb} channels")
            out[part] = channel * h * w
            channel += c
    return out


def plan_memory(graph, config):
    """Place weights and activations of ``graph`` in one DRAM segment."""
    cb = config.cb
    blobs, cursor = [], 0
    for layer in graph.layers:
        w_size, p_size = _weight_size(layer, graph, cb)
        blobs.append(LayerBlob(cursor, w_size, _align(cursor + w_size), p_size))
        cursor = _align(cursor + w_size) + _align(p_size)
    weights_size = cursor

    within = part_offsets(graph, cb)        # refuses a misaligned concatenation first
    life = _lifetimes(graph)
    sizes = {name: tensor_bytes(graph.tensors[name].shape, cb) for name in life}
    roles, offsets = {}, {}
    for name in life:
        roles[name] = ("input" if name in graph.inputs else
                       "output" if name in graph.outputs else "activation")
    for name in life:                       # dedicated regions: inputs, then outputs
        if roles[name] != "activation":
            offsets[name] = cursor
            cursor += sizes[name]
    arena = cursor
    placed = []                             # (offset, end, first, last)
    for name in life:
        if roles[name] != "activation":
            continue
        first, last = life[name]
        busy = sorted((o, e) for o, e, f, l in placed if not (l < first or last < f))
        offset = arena
        for o, e in busy:
            if offset + sizes[name] <= o:
                break
            offset = max(offset, e)
        offsets[name] = offset
        placed.append((offset, offset + sizes[name], first, last))
        cursor = max(cursor, offset + sizes[name])
    home = _homes(graph)
    for part, offset in within.items():
        c, h, w = graph.tensors[part].shape
        offsets[part] = offsets[home[part]] + offset
        sizes[part] = blocks(c, cb) * cb * h * w
        roles[part] = "activation"
    return MemoryPlan(weights_size, blobs, offsets, sizes, roles, _align(cursor))


def build_weights(graph, plan, config):
    """The weight blob (bytes) of ``plan``: weight blocks and PBUF entries per layer."""
    blob = np.zeros(plan.weights_size, np.uint8)
    for layer, place in zip(graph.layers, plan.blobs):
        w = weight_blocks(layer, graph, config.cb).view(np.uint8)
        if w.size != place.weight_size:
            raise AssertionError(f"layer {layer.name}: weight blob size mismatch")
        blob[place.weight_offset:place.weight_offset + w.size] = w
        padded = blocks(graph.tensors[layer.output].shape[0], config.cb) * config.cb
        if layer.kind in ("lut", "resize"):
            post = np.asarray(layer.table, np.int8).view(np.uint8)
        elif layer.kind == "convt":
            post = np.concatenate([layout.post_params(p.conv.requant, padded).reshape(-1)
                                   for p in layer.phases])
        else:
            post = layout.post_params(layer.requant, padded).reshape(-1)
        blob[place.post_offset:place.post_offset + post.size] = post
    return blob.tobytes()
