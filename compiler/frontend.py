"""ONNX front end: an int8 QDQ model -> the quantized graph IR (:mod:`vdla.compiler.ir`).

A QDQ model (as written by onnxruntime's ``quantize_static``) computes every layer in float
between DequantizeLinear nodes and a QuantizeLinear. The front end takes each QuantizeLinear
as the end of one IR layer and walks its input back through the float operators to the
DequantizeLinear nodes of the layer's int8 operands::

    DQ(x) --> main op --> [BatchNormalization, Add/Sub/Mul/Div by a constant]* --> [Relu, Clip]* --> Q
              (Conv, ConvTranspose, Gemm, MatMul, Add of two activations, MaxPool,
               AveragePool, Global*Pool, ReduceMean over H and W)

Identity, Dropout and reshapes (Flatten, Reshape, Squeeze, Unsqueeze) may appear anywhere on
the way. A chain that only a table computes (Sigmoid, SiLU, ...) is one lookup layer instead
(:mod:`.onnx_lut`); a constant Pad is folded into its consumers' pads or copied
(:mod:`.onnx_pad`); a channel Split or Slice is a 1x1 copy selecting channels
(:mod:`.onnx_split`); a nearest-neighbour Resize by an integer factor is an upsampling layer
(:mod:`.onnx_resize`). The affine operators are folded into the per-channel requantization, the
clamps into its ``lo``/``hi``. A segment without a main op (``DQ -> Relu -> Q`` with new
parameters, or a bare scale change) becomes a requantizing 1x1 max pooling, or a depthwise 1x1
convolution when it scales or shifts channels; one that changes nothing (a reshape between two
identical quantizations) only gives the int8 tensor a second ONNX shape (a *view*).

Each IR input tensor carries its ONNX input's name, each output tensor its ONNX output's name
(a model may have several of each), with the quantization of the QuantizeLinear after the
input / the DequantizeLinear before the output, so a host maps float model I/O to IR tensors
directly. Float work at the model's
edges that the accelerator does not do (an NHWC input's Transpose, a final Softmax) is
recorded on those tensors as host steps (:mod:`.onnx_host`, :mod:`.host_steps`).
"""

import collections
import os

import numpy as np
from onnx import TensorProto

from . import ir
from .errors import CompileError
from .onnx_graph import PASS_THROUGH, RESHAPES, SUPPORTED_OPS, OnnxGraph, load_proto
from .onnx_host import (find_tails, host_only_refusal, input_relayout, ir_shape_of,
                        resolve_tail, viewable)
from .onnx_lower import Affine, Out
from .onnx_lut import add_lookup, needs_table
from .onnx_main import MAIN_OPS, parse_main, requant_layer
from .onnx_pad import add_pad
from .onnx_resize import add_resize
from .onnx_split import SPLIT_OPS, add_split
from .quant import clamp_range

__all__ = ["load_model"]

#: An int8 ONNX tensor as seen by its consumers: IR tensor name and ONNX shape (batch first).
View = collections.namedtuple("View", "ir shape")
_AFFINE_OPS = {"BatchNormalization", "Add", "Sub", "Mul", "Div"}
_CLAMP_OPS = {"Relu", "Clip"}


def load_model(model, name=None):
    """Read an int8 QDQ ONNX model into an :class:`ir.Graph`.

    Parameters
    ----------
    model : str, path-like or onnx.ModelProto
        The QDQ model (batch 1 or a symbolic batch dimension).
    name : str, optional
        Graph name; defaults to the ONNX graph name or the file name.

    Raises
    ------
    UnsupportedError
        An operator, attribute or pattern outside what vdla supports (one-line message).
    CompileError
        Unreadable model, not a QDQ model, or parameters the hardware cannot represent.
    """
    proto = load_proto(model)
    if name is None:
        # A file name says more than the exporter's default graph name ("main_graph").
        stem = None if hasattr(model, "graph") else \
            os.path.splitext(os.path.basename(os.fspath(model)))[0]
        name = stem or proto.graph.name or "model"
    return _Frontend(proto).run(name)


class _Frontend:
    def __init__(self, proto):
        self.g = OnnxGraph(proto)
        self.tensors = {}
        self.layers = []
        self.views = {}
        self.inputs = []
        self._layer_names = collections.Counter()
        self.replaced = set()       # QuantizeLinear outputs the host's input relayout replaces
        self.tails = {}             # output name -> onnx_host.Tail
        self._resolved = {}         # output name -> resolve_tail() of its tail
        self.concats = {}           # concatenation tensor -> [part tensors]
        self.retargeted = set()     # tensors quantized at their Concat's output parameters
        self.pad_folds = {}         # Pad output -> onnx_pad.Fold (its pads go to the consumer)

    # -- driver ------------------------------------------------------------------------------
    def run(self, name):
        self._check_ops()
        self._read_inputs()
        self.tails = find_tails(self)
        tail_of = {q.output[0]: tail for tail in self.tails.values() for q in tail.quantizers}
        for node in self.g.nodes:
            if node.op_type == "QuantizeLinear" and node.output[0] not in self.views \
                    and node.output[0] not in self.replaced \
                    and self.g.const(node.input[0]) is None:
                tail = tail_of.get(node.output[0])
                # Nodes are in topological order: the tail's anchor tensor exists by now.
                if tail is None or not self._tail(tail.output).on_host:
                    self._segment(node)
        outputs = self._read_outputs()
        graph = ir.Graph(self.tensors, self.layers, self.inputs, outputs, name,
                         concats=self.concats)
        _prune(graph)
        try:
            graph.validate()
        except ValueError as exc:
            raise CompileError(f"invalid graph after import: {exc}") from None
        return graph

    def _check_ops(self):
        for node in self.g.nodes:
            if node.domain not in ("", "ai.onnx"):
                raise self.g.unsupported(node, f"operator domain {node.domain!r} is not "
                                         f"supported (QDQ models use standard operators only)")
            if node.op_type not in SUPPORTED_OPS:
                raise self.g.unsupported(node, f"operator {node.op_type} is not supported")
        if not any(n.op_type == "QuantizeLinear" for n in self.g.nodes):
            raise CompileError("the model has no QuantizeLinear: it is not an int8 QDQ model; "
                               "quantize it first (vdla.compiler.quantize.quantize_model)")
        self._check_qdq_opset()

    def _check_qdq_opset(self):
        """Refuse per-channel Q/DQ nodes in a model whose opset predates them (13).

        Before opset 13, QuantizeLinear and DequantizeLinear have no ``axis`` and take only
        per-tensor scales: ONNX Runtime refuses such a model, so it is no reference for what
        the compiled program computes.
        """
        opset = self.g.opset
        if opset is None or opset >= 13:
            return
        for node in self.g.nodes:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            scale = self.g.const(node.input[1]) if len(node.input) > 1 else None
            if "axis" in self.g.attrs(node) or (scale is not None and np.size(scale) > 1):
                raise self.g.unsupported(node, f"per-channel quantization needs opset 13, the "
                                         f"model has opset {opset} (ONNX Runtime refuses it); "
                                         f"quantize the float model again with vdla quantize, "
                                         f"which converts it to opset 13 first")

    def unique(self, name):
        self._layer_names[name] += 1
        count = self._layer_names[name]
        return name if count == 1 else f"{name}_{count}"

    # -- model inputs --------------------------------------------------------------------------
    def _read_inputs(self):
        """One IR input tensor per float model input, in the graph's order."""
        inits = {i.name for i in self.g.graph.initializer}
        inputs = [i for i in self.g.graph.input if i.name not in inits]
        if not inputs:
            raise CompileError("the model has no input")
        for value in inputs:
            self._read_input(value)

    def _read_input(self, value):
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise CompileError(f"input {value.name!r} is not float32; vdla expects a float "
                               f"input followed by QuantizeLinear")
        shape = self.g.value_shape(value)
        if shape is None or shape[0] != 1:
            raise CompileError(f"input {value.name!r} has shape "
                               f"{_dims(value)}; expected [1, C, H, W] or [1, N] (batch 1)")
        way = input_relayout(self, value.name, shape)
        ir_shape = ir_shape_of(way.shape)
        if ir_shape is None and not way.steps:
            raise CompileError(f"input {value.name!r} has shape "
                               f"{_dims(value)}; expected [1, C, H, W] or [1, N] (batch 1)")
        if ir_shape is None:
            raise CompileError(f"input {value.name!r} of shape {shape} reaches its "
                               f"QuantizeLinear as {way.shape}; expected [1, C, H, W] or "
                               f"[1, N] (batch 1)")
        for node in way.quantizers:
            self.views[node.output[0]] = View(value.name, way.shape)
        self.replaced.update(node.output[0] for node in way.replaced)
        self.tensors[value.name] = ir.Tensor(value.name, ir_shape, way.params[0], way.params[1],
                                             shape, tuple(way.steps))
        self.inputs.append(value.name)

    # -- one QuantizeLinear: one layer ---------------------------------------------------------
    def _walk(self, float_name, q_node):
        """Float chain ending at ``float_name``: ``(main node or None, bottom view, post ops)``."""
        post = []
        name = float_name
        while True:
            node = self.g.producer.get(name)
            if node is None:
                raise self.g.unsupported(q_node, f"{name!r} is computed in float from the model "
                                         f"input without QuantizeLinear")
            op = node.op_type
            if op == "DequantizeLinear":
                return None, self.dq_view(node), post[::-1]
            if op in PASS_THROUGH or op in RESHAPES or op in _CLAMP_OPS or \
                    op == "BatchNormalization":
                post.append(node)
                name = node.input[0]
            elif op in ("Add", "Sub", "Mul", "Div") and self._const_operand(node) is not None:
                post.append(node)
                name = node.input[1 - self._const_operand(node)]
            elif op in MAIN_OPS:
                return node, None, post[::-1]
            elif op == "Concat":
                raise self.g.unsupported(node, "only QuantizeLinear may follow Concat (no "
                                         "activation or affine operator in between)")
            elif host_only_refusal(self, node) is not None:
                raise host_only_refusal(self, node)
            elif op in _AFFINE_OPS:
                raise self.g.unsupported(node, f"{op} of two activations is not supported")
            else:
                raise self.g.unsupported(node, f"operator {op} cannot produce a quantized "
                                         f"activation here")

    def pass_through(self, node):
        """Identity, or Dropout in inference mode (its mask output unused)."""
        self.g.check_single_output(node)
        training = self.g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "Dropout" and training is not None and bool(np.asarray(training)):
            raise self.g.unsupported(node, "training_mode=True is not supported")

    def _const_operand(self, node):
        consts = [i for i in (0, 1) if self.g.const(node.input[i]) is not None]
        return consts[0] if len(consts) == 1 else None

    def dq_view(self, dq):
        source = dq.input[0]
        if source not in self.views:
            if self.g.const(source) is not None or source in {i.name for i in
                                                              self.g.graph.initializer}:
                raise self.g.unsupported(dq, "a constant is used where an activation is "
                                         "expected")
            raise self.g.unsupported(dq, f"{source!r} is not a quantized activation produced "
                                     f"earlier in the graph")
        view = self.views[source]
        tensor = self.tensors[view.ir]
        if self.g.act_params(dq) != (tensor.scale, tensor.zero_point):
            raise self.g.unsupported(dq, "scale/zero point differ from the QuantizeLinear "
                                     "that produced the tensor")
        return view

    def activation(self, float_name, user):
        """View of the int8 activation behind a main op's float input (through reshapes)."""
        def refuse(node):
            return host_only_refusal(self, node) or self.g.unsupported(
                user, f"input {float_name!r} is not a quantized activation (DequantizeLinear "
                      f"output)")
        return self._view_through(float_name, refuse)

    def _view_through(self, name, refuse):
        """Walk back from float tensor ``name`` over pass-through and reshaping nodes to its
        DequantizeLinear; ``refuse(node)`` makes the error for any other producer (or None)."""
        reshapes = []
        while True:
            node = self.g.producer.get(name)
            if node is None or node.op_type not in PASS_THROUGH | RESHAPES | {"DequantizeLinear"}:
                raise refuse(node)
            if node.op_type == "DequantizeLinear":
                view = self.dq_view(node)
                break
            if node.op_type in RESHAPES:
                reshapes.append(node)
            else:
                self.pass_through(node)
            name = node.input[0]
        shape = view.shape
        for node in reversed(reshapes):
            shape = self._reshaped(node, shape, self.tensors[view.ir].shape)
        return View(view.ir, shape)

    def _reshaped(self, node, shape, ir_shape):
        """Apply a reshaping node to a view; only layout-preserving results are accepted."""
        self.g.check_single_output(node)
        out = self.g.reshaped(node, shape)
        if viewable(out, ir_shape):
            return out
        raise self.g.unsupported(node, f"reshape of {shape} to {out} is not supported "
                                 f"(only flattening to (1, N))")

    def _segment(self, q):
        concat = self.quantized_node(q, "Concat")
        if concat is not None:
            self._concat(q, concat)
            return
        pad = self.quantized_node(q, "Pad")
        if pad is not None:
            add_pad(self, q, pad)
            return
        resize = self.quantized_node(q, "Resize")
        if resize is not None:
            add_resize(self, q, resize)
            return
        for op in SPLIT_OPS:
            part = self.quantized_node(q, op)
            if part is not None:
                add_split(self, q, part)
                return
        lookup = needs_table(self, q)
        if lookup is not None:
            add_lookup(self, q, lookup)
            return
        out_scale, out_zp = self.g.act_params(q)
        main, bottom, post = self._walk(q.input[0], q)
        if main is not None:
            parsed = parse_main(self, main)
            ir_shape, shape = parsed.ir_shape, parsed.shape
        else:
            ir_shape, shape = self.tensors[bottom.ir].shape, bottom.shape
        affine = Affine.identity(ir_shape[0])
        low, high, clamp_node = None, None, None
        for node in post:
            if node.op_type in PASS_THROUGH:
                self.pass_through(node)
            elif node.op_type in RESHAPES:
                shape = self._reshaped(node, shape, ir_shape)
            elif node.op_type in _CLAMP_OPS:
                node_low, node_high = self.clamp(node)
                low, high = _tighter(low, node_low, max), _tighter(high, node_high, min)
                clamp_node = node
            else:
                if clamp_node is not None:
                    raise self.g.unsupported(node, f"follows {clamp_node.op_type} "
                                             f"{self.g.name(clamp_node)!r}; it cannot be folded "
                                             f"into the requantization")
                affine = affine.then(*self._affine(node, shape, ir_shape))
        self.g.check_single_output(q)
        name = q.output[0]
        target = self.concat_target(q)
        if target is not None and target != (out_scale, out_zp):
            # Keep the clamp of the QDQ graph's own QuantizeLinear, then quantize straight to
            # the Concat's output parameters.
            low = _tighter(low, out_scale * (-128 - out_zp), max)
            high = _tighter(high, out_scale * (127 - out_zp), min)
            out_scale, out_zp = target
            self.retargeted.add(name)
        out = Out(out_scale, out_zp, *clamp_range(out_scale, out_zp, low, high))
        if main is None:
            x = self.tensors[bottom.ir]
            if affine.is_identity and (out.lo, out.hi) == (-128, 127) and \
                    (x.scale, x.zero_point) == (out_scale, out_zp):
                self.views[name] = View(bottom.ir, shape)     # a pure reshape: same bytes
                return
            where = next((n for n in post if n.op_type not in RESHAPES | PASS_THROUGH), q)
            layer = requant_layer(self.unique(self.g.name(where)), where.op_type, x, name,
                                  affine, out)
        else:
            layer = parsed.lower(self.unique(self.g.name(main)), name, affine, out)
        self.tensors[name] = ir.Tensor(name, tuple(ir_shape), out_scale, out_zp, shape)
        self.views[name] = View(name, shape)
        self.layers.append(layer)

    # -- Concat: parts written in place ----------------------------------------------------------
    def quantized_node(self, q, op_type):
        """The ``op_type`` node whose output ``q`` quantizes (through Identity / Dropout), or
        None."""
        node = self.g.producer.get(q.input[0])
        while node is not None and node.op_type in PASS_THROUGH:
            self.pass_through(node)
            node = self.g.producer.get(node.input[0])
        return node if node is not None and node.op_type == op_type else None

    def _sole_user(self, name, op_type):
        """The one node consuming ``name`` if it is an ``op_type`` and ``name`` is no model
        output, else None."""
        users = self.g.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in self.g.output_names:
            return None
        return users[0]

    def concat_target(self, q):
        """``(scale, zero point)`` of the Concat output if ``q``'s tensor feeds only that
        Concat (through one DequantizeLinear of ``q``'s own parameters), else None."""
        dq = self._sole_user(q.output[0], "DequantizeLinear")
        if dq is None or self.g.act_params(dq) != self.g.act_params(q):
            return None
        cat = self._sole_user(dq.output[0], "Concat")
        if cat is None or list(cat.input).count(dq.output[0]) != 1:
            return None
        out_q = self._sole_user(cat.output[0], "QuantizeLinear")
        return None if out_q is None else self.g.act_params(out_q)

    def _concat_input(self, cat, name):
        """View of the int8 tensor behind Concat input ``name``."""
        node = self.g.producer.get(name)
        while node is not None and node.op_type in PASS_THROUGH:
            self.pass_through(node)
            node = self.g.producer.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            raise self.g.unsupported(cat, f"input {name!r} is not a quantized activation "
                                     f"(DequantizeLinear output)")
        if node.input[0] in self.retargeted:
            return self.views[node.input[0]]
        return self.dq_view(node)

    def _concat_axis(self, cat, rank):
        self.g.check_attrs(cat, {"axis"})
        axis = self.g.attrs(cat).get("axis")
        if rank != 4 or axis not in (1, -3):
            raise self.g.unsupported(cat, f"only a concatenation of (1, C, H, W) activations "
                                     f"on the channel axis is supported, not axis {axis} of "
                                     f"rank {rank}")

    def _concat(self, q, cat):
        """A Concat and its QuantizeLinear: one tensor made of parts written in place."""
        self.g.check_single_output(cat)
        self.g.check_single_output(q)
        scale, zp = self.g.act_params(q)
        views = [self._concat_input(cat, name) for name in cat.input]
        for view in views:
            self._concat_axis(cat, len(view.shape))
        planes = {self.tensors[v.ir].shape[1:] for v in views}
        if len(planes) != 1:
            raise self.g.unsupported(cat, f"inputs of different planes {sorted(planes)}")
        taken = {p for parts in self.concats.values() for p in parts}
        parts = []
        for index, view in enumerate(views):
            tensor = self.tensors[view.ir]
            if (tensor.scale, tensor.zero_point) == (scale, zp) and view.ir not in taken \
                    and view.ir not in parts and view.ir not in self.inputs \
                    and view.ir not in self.concats:
                parts.append(view.ir)
            else:
                parts.append(self._concat_copy(cat, index, tensor, scale, zp))
        name = q.output[0]
        channels = sum(self.tensors[p].shape[0] for p in parts)
        shape = (1, channels, *next(iter(planes)))
        self.tensors[name] = ir.Tensor(name, (channels, *next(iter(planes))), scale, zp, shape)
        self.views[name] = View(name, shape)
        self.concats[name] = parts

    def _concat_copy(self, cat, index, tensor, scale, zp):
        """A requantizing layer copying ``tensor`` into a new part at the Concat's output
        parameters: what the QDQ graph computes for this input."""
        name = f"{cat.output[0]}_part{index}"
        layer = requant_layer(self.unique(f"{self.g.name(cat)}_part{index}"), "Concat",
                              tensor, name, Affine.identity(tensor.shape[0]), Out(scale, zp))
        self.tensors[name] = ir.Tensor(name, tensor.shape, scale, zp, (1, *tensor.shape))
        self.layers.append(layer)
        return name

    def clamp(self, node):
        """``(low, high)`` real bounds of a Relu or Clip (None where unbounded)."""
        if node.op_type == "Relu":
            return 0.0, None
        self.g.check_attrs(node, {"min", "max"})
        attrs = self.g.attrs(node)
        bounds = []
        for index, key in ((1, "min"), (2, "max")):
            if len(node.input) > index and node.input[index]:
                value = self.g.const(node.input[index])
                if value is None:
                    raise self.g.unsupported(node, f"{key} is not a constant")
                bounds.append(float(np.asarray(value).reshape(-1)[0]))
            else:
                bounds.append(attrs.get(key))
        # Exporters write "no bound" as +-inf or +-FLT_MAX; both leave the int8 range as is.
        return tuple(b if b is not None and abs(b) < 3e38 else None for b in bounds)

    def _affine(self, node, shape, ir_shape):
        """Per-IR-channel ``(a, b)`` of BatchNormalization or an operator with a constant."""
        op = node.op_type
        if op == "BatchNormalization":
            self.g.check_attrs(node, {"epsilon", "momentum", "spatial", "training_mode"})
            attrs = self.g.attrs(node)
            if attrs.get("training_mode", 0):
                raise self.g.unsupported(node, "training_mode=1 is not supported")
            self.g.check_single_output(node)
            params = [self.g.const(n) for n in node.input[1:5]]
            if len(params) != 4 or any(p is None for p in params):
                raise self.g.unsupported(node, "scale, bias, mean and variance must be constants")
            gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
            a = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
            b = beta - mean * a
            bshape = (1, -1) + (1,) * (len(shape) - 2)
            a_full, b_full = a.reshape(bshape), b.reshape(bshape)
        else:
            index = self._const_operand(node)
            c = np.asarray(self.g.const(node.input[index]), np.float64)
            if op == "Add":
                a_full, b_full = np.ones(1), c
            elif op == "Sub":
                a_full, b_full = (np.ones(1), -c) if index == 1 else (-np.ones(1), c)
            elif op == "Mul":
                a_full, b_full = c, np.zeros(1)
            elif index == 1:
                a_full, b_full = 1.0 / c, np.zeros(1)
            else:
                raise self.g.unsupported(node, "division by an activation is not supported")
        return (self._per_channel(node, a_full, shape, ir_shape),
                self._per_channel(node, b_full, shape, ir_shape))

    def _per_channel(self, node, value, shape, ir_shape):
        try:
            full = np.broadcast_to(value, shape)
        except ValueError:
            raise self.g.unsupported(node, f"constant of shape {np.shape(value)} does not "
                                     f"broadcast to the activation {shape}") from None
        full = full.reshape(ir_shape)
        per_channel = full[:, :1, :1]
        if not np.all(full == per_channel):
            raise self.g.unsupported(node, "constant varies within a channel; only per-channel "
                                     "constants can be folded")
        return per_channel.reshape(-1).copy()

    # -- model outputs -------------------------------------------------------------------------
    def _read_outputs(self):
        names, claimed = [], set(self.inputs)
        for value in self.g.graph.output:
            view, steps, shape = self._output_source(value.name)
            declared = self.g.value_shape(value)
            if declared is not None and tuple(declared) != tuple(shape):
                raise CompileError(f"output {value.name!r}: declared shape {declared} differs "
                                   f"from the computed {shape}")
            source = view.ir
            if source in claimed:
                # The same int8 tensor is already the input or another output: give this
                # output its own copy so every ONNX output maps to one IR tensor.
                tensor = self.tensors[source]
                out = Out(tensor.scale, tensor.zero_point)
                self.layers.append(requant_layer(self.unique(f"copy_{value.name}"), "Identity",
                                                 tensor, value.name, Affine.identity(
                                                     tensor.shape[0]), out))
                self.tensors[value.name] = ir.Tensor(value.name, tensor.shape, tensor.scale,
                                                     tensor.zero_point)
            else:
                _rename(self, source, value.name)
            self.tensors[value.name].onnx_shape = tuple(shape)
            self.tensors[value.name].host = tuple(steps)
            claimed.add(value.name)
            names.append(value.name)
        return names

    def _tail(self, output):
        """:func:`resolve_tail` of the tail of ``output``, computed once."""
        if output not in self._resolved:
            self._resolved[output] = resolve_tail(self, self.tails[output])
        return self._resolved[output]

    def _output_source(self, name):
        """``(view, host steps, ONNX shape)`` of graph output ``name``."""
        if name in self.tails and self._tail(name).on_host:
            view, steps, shape, _ = self._tail(name)
            return view, steps, shape
        view = self._output_view(name)
        return view, (), view.shape

    def _output_view(self, name):
        if name in self.views:
            return self.views[name]

        def refuse(node):
            if node is None:
                return CompileError(f"output {name!r} is the float model input itself")
            return self.g.unsupported(node, f"output {name!r} is computed in float after the "
                                      f"last DequantizeLinear; it must be quantized")
        return self._view_through(name, refuse)


def _tighter(current, new, pick):
    """Combine two optional bounds with ``pick`` (max for lower bounds, min for upper)."""
    if new is None:
        return current
    return new if current is None else pick(current, new)


def _dims(value):
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value.type.tensor_type.shape.dim]


def _rename(front, old, new):
    """Rename IR tensor ``old`` to ``new`` everywhere (tensors, layers, views)."""
    if old == new:
        return
    tensor = front.tensors.pop(old)
    tensor.name = new
    front.tensors[new] = tensor
    # A ConvTranspose's phase convolutions name the layer's tensors too.
    for layer in front.layers + [p.conv for x in front.layers for p in getattr(x, "phases", [])]:
        for field in ("input", "output", "a", "b"):
            if getattr(layer, field, None) == old:
                setattr(layer, field, new)
    for key, view in front.views.items():
        if view.ir == old:
            front.views[key] = View(new, view.shape)
    if old in front.concats:
        front.concats[new] = front.concats.pop(old)
    for parts in front.concats.values():
        parts[:] = [new if p == old else p for p in parts]


def _prune(graph):
    """Drop layers and tensors that no graph output depends on."""
    needed = {s for name in graph.outputs for s in graph.sources(name)} | set(graph.outputs)
    kept = []
    for layer in reversed(graph.layers):
        if layer.output in needed:
            kept.append(layer)
            for name in ir.Graph.layer_inputs(layer):
                needed.update([name, *graph.sources(name)])
    graph.layers = kept[::-1]
    graph.concats = {name: parts for name, parts in graph.concats.items() if name in needed}
    graph.tensors = {name: t for name, t in graph.tensors.items()
                     if name in needed or name in graph.inputs}
