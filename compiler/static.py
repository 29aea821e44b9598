"""The static stage: IR graph -> core-count-independent :class:`~.program.Program`.

Validate the graph, plan the DRAM segment, tile every layer and emit its instruction frames,
then gather the tensor, layer and frame tables, the code and the weight blob. Nothing here
depends on the number of cores: the dynamic stage (:mod:`.link`) assigns frames to cores.
"""

import numpy as np

from vdla import isa

from . import ir
from .codegen import LayerAddrs, layer_frames
from .concat import copy_misaligned_concats
from .errors import CompileError
from .frames import assemble_frame
from .memplan import build_weights, plan_memory
from .program import FRAME_DTYPE, LayerEntry, Program, TensorEntry, words_from_ints

__all__ = ["compile_graph", "check_graph", "layer_macs"]

_MAX_LAYERS = 1 << isa.FIELDS["frame"]["layer"][1]


def _check_requant(layer, channels):
    rq = layer.requant
    for name in ("bias", "mult_a", "mult_b", "shift"):
        if len(getattr(rq, name)) != channels:
            raise CompileError(f"layer {layer.name}: requant.{name} has "
                               f"{len(getattr(rq, name))} entries for {channels} channels")


def check_graph(graph):
    """Raise CompileError (one line) for a graph the compiler cannot take."""
    try:
        graph.validate()
    except ValueError as exc:
        raise CompileError(f"graph {graph.name}: {exc}") from None
    if len(graph.layers) > _MAX_LAYERS:
        raise CompileError(f"graph {graph.name}: {len(graph.layers)} layers exceed the "
                           f"{_MAX_LAYERS} a program can hold")
    names = set()
    for name, t in graph.tensors.items():
        if len(t.shape) != 3 or min(t.shape) < 1:
            raise CompileError(f"tensor {name}: shape {t.shape} is not a (C, H, W) shape")
    for layer in graph.layers:
        if not isinstance(layer, ir.LAYER_KINDS):
            raise CompileError(f"layer {getattr(layer, 'name', layer)!r}: unknown layer type "
                               f"{type(layer).__name__}")
        if layer.name in names:
            raise CompileError(f"layer {layer.name}: name used twice")
        names.add(layer.name)
        if isinstance(layer, ir.Pool) and layer.mode not in ("max", "avg"):
            raise CompileError(f"layer {layer.name}: pooling mode {layer.mode!r}")
        if isinstance(layer, (ir.Lut, ir.Resize)):
            table = np.asarray(layer.table)
            if table.shape != (256,) or table.dtype != np.int8:
                raise CompileError(f"layer {layer.name}: table of {table.dtype} "
                                   f"{table.shape}, not int8 (256,)")
            c, h, w = graph.tensors[layer.input].shape
            k = getattr(layer, "factor", 1)
            if tuple(graph.tensors[layer.output].shape) != (c, h * k, w * k):
                raise CompileError(f"layer {layer.name}: output shape "
                                   f"{graph.tensors[layer.output].shape} is not the input's "
                                   f"{(c, h, w)} scaled by {k}")
            continue
        for part in getattr(layer, "phases", None) or [None]:
            _check_requant(part.conv if part else layer, graph.tensors[layer.output].shape[0])


def layer_macs(layer, graph):
    """Multiply-accumulates of one layer (0 for pooling, Add and lookups)."""
    if layer.kind == "conv":
        k, cg, kh, kw = layer.weight.shape
        _, oh, ow = graph.tensors[layer.output].shape
        return int(k * cg * kh * kw * oh * ow)
    if layer.kind == "dense":
        return int(layer.weight.size)
    if layer.kind == "convt":
        return sum(int(p.conv.weight[0].size * p.conv.weight.shape[0] * p.rows * p.cols)
                   for p in layer.phases)
    return 0


def _tensor_entries(graph, mem):
    out = []
    for name, offset in mem.offsets.items():
        t = graph.tensors[name]
        onnx_shape = tuple(t.onnx_shape) if t.onnx_shape is not None else (1, *t.shape)
        out.append(TensorEntry(name, tuple(int(v) for v in t.shape), float(t.scale),
                               int(t.zero_point), onnx_shape, int(offset), int(mem.sizes[name]),
                               mem.roles[name], tuple(t.host)))
    return out


def compile_graph(graph, config):
    """Compile an IR graph for ``config`` into a :class:`Program`."""
    check_graph(graph)
    graph = copy_misaligned_concats(graph, config.cb)
    check_graph(graph)
    mem = plan_memory(graph, config)
    producer = {layer.output: i for i, layer in enumerate(graph.layers)}
    layers, rows, code = [], [], []
    for li, layer in enumerate(graph.layers):
        inputs = graph.layer_inputs(layer)
        blob = mem.blobs[li]
        addrs = LayerAddrs([mem.offsets[n] for n in inputs], mem.offsets[layer.output],
                           blob.weight_offset, blob.post_offset)
        try:
            _, frames = layer_frames(layer, graph, config, addrs)
            for setup, steps in frames:
                words, cycles = assemble_frame(len(rows), li, setup, steps, config)
                rows.append((li, len(code), len(words), cycles))
                code.extend(words)
        except ValueError as exc:          # a field that does not fit its width
            raise CompileError(f"layer {layer.name}: {exc}") from None
        # A concatenation has no producer: the layer waits for the producers of its parts.
        deps = sorted({producer[s] for n in inputs for s in graph.sources(n) if s in producer})
        layers.append(LayerEntry(layer.name, layer.kind, list(inputs), layer.output, deps,
                                 layer_macs(layer, graph)))
    try:
        weights = build_weights(graph, mem, config)
    except ValueError as exc:
        raise CompileError(f"graph {graph.name}: {exc}") from None
    frames = np.array(rows, FRAME_DTYPE) if rows else np.zeros(0, FRAME_DTYPE)
    return Program(model=graph.name, config=config.name, core_hash=config.core_hash(),
                   tensors=_tensor_entries(graph, mem), layers=layers, frames=frames,
                   code=words_from_ints(code), weights=weights,
                   segment_size=mem.segment_size, inputs=list(graph.inputs),
                   outputs=list(graph.outputs))
