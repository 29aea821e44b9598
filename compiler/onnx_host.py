"""The float work around a QDQ model's input and outputs that the host does.

Exported models (tf2onnx, TFLite converters) take an NHWC input and transpose it to NCHW
before the first QuantizeLinear, and end with a Softmax after the last DequantizeLinear;
an MLP on raw pixels flattens its float input first. None of that is work for the
accelerator, and all of it is cheap for the host, exactly and once per inference:

* **input relayout**: the float model input, through pass-through nodes, Transpose and
  reshapes (and Q/DQ pairs around them), to its first QuantizeLinear. The IR input keeps
  the model input's ONNX shape and records the steps (:mod:`.host_steps`) that bring it to
  the accelerator's ``(C, H, W)`` order;
* **output tail**: from an output's last accelerator tensor (its DequantizeLinear, the
  *anchor*), through Softmax, Transpose, reshapes, pass-through nodes and Q/DQ pairs, to the
  model output. A tail goes to the host when it holds a Softmax or Transpose, or a reshape
  the accelerator cannot express as a view of its tensor; otherwise the front end keeps
  doing it on the accelerator (views and requantizing layers), as before.

The front end (:mod:`.frontend`) calls :func:`input_relayout`, :func:`find_tails` and
:func:`resolve_tail`; every refusal is a one-line :class:`~.errors.CompileError`.
"""

import collections
import dataclasses
import math

from . import host_steps
from .errors import CompileError
from .onnx_graph import PASS_THROUGH, RESHAPES

__all__ = ["HOST_ONLY_OPS", "Relayout", "Tail", "ResolvedTail", "ir_shape_of", "viewable",
           "input_relayout", "find_tails", "resolve_tail", "host_only_refusal"]

#: Float operators the accelerator never computes: the host does them at the model's edges.
HOST_ONLY_OPS = {"Transpose", "Softmax"}
_RELAYOUT_OPS = PASS_THROUGH | RESHAPES | {"Transpose"}
_TAIL_OPS = PASS_THROUGH | RESHAPES | HOST_ONLY_OPS


@dataclasses.dataclass
class Relayout:
    """The model input's way to the accelerator."""
    steps: list             # host steps from the model input's ONNX shape
    quantizers: list        # QuantizeLinear nodes whose int8 output is the IR input
    shape: tuple            # ONNX shape at those nodes
    params: tuple           # their (scale, zero point)
    replaced: list          # QuantizeLinear nodes inside the relayout (done by the host)


@dataclasses.dataclass
class Tail:
    """An output's float tail: the nodes after its anchor DequantizeLinear, in order."""
    output: str
    anchor: object          # the DequantizeLinear of the last accelerator tensor
    nodes: list

    @property
    def quantizers(self):
        return [n for n in self.nodes if n.op_type == "QuantizeLinear"]


#: A tail with shapes known: the anchor's view, the host steps from the anchor's ``(C, H, W)``,
#: the output's ONNX shape, and whether the host must do it (else the accelerator can).
ResolvedTail = collections.namedtuple("ResolvedTail", "view steps shape on_host")


# -- shapes ----------------------------------------------------------------------------------
def ir_shape_of(shape):
    """``(C, H, W)`` of an int8 tensor of ONNX ``shape`` (``(1, C, H, W)`` or ``(1, N)``), or
    None for any other shape."""
    shape = tuple(shape)
    if len(shape) == 4 and shape[0] == 1:
        return shape[1:]
    if len(shape) == 2 and shape[0] == 1:
        return shape[1], 1, 1
    return None


def viewable(shape, ir_shape):
    """Whether ONNX ``shape`` is a view of a ``(C, H, W)`` tensor without moving a byte: the
    tensor itself, or it flattened (C, H, W order)."""
    c, h, w = ir_shape
    shape = tuple(shape)
    return shape in ((1, c * h * w), (1, c, h, w)) or (h == w == 1 and shape == (1, c))


# -- steps of single nodes -------------------------------------------------------------------
def _relayout_step(front, node, shape):
    """``(step or None, shape after)`` of a pass-through, reshaping or Transpose node."""
    g = front.g
    if node.op_type in PASS_THROUGH:
        front.pass_through(node)
        return None, shape
    g.check_single_output(node)
    if node.op_type == "Transpose":
        g.check_attrs(node, {"perm"})
        perm = [int(p) for p in g.attrs(node).get("perm", range(len(shape) - 1, -1, -1))]
        if sorted(perm) != list(range(len(shape))):
            raise g.unsupported(node, f"perm {perm} is not a permutation of the axes of "
                                f"{tuple(shape)}")
        return host_steps.transpose(perm), tuple(shape[p] for p in perm)
    out = tuple(g.reshaped(node, shape))
    return host_steps.reshape(out), out


def _softmax_steps(front, node, shape):
    """Host steps of a Softmax node on a tensor of ``shape`` (the shape does not change)."""
    g = front.g
    g.check_attrs(node, {"axis"})
    g.check_single_output(node)
    rank = len(shape)
    opset = g.opset or 13
    axis = g.attrs(node).get("axis", -1 if opset >= 13 else 1)
    if not -rank <= axis < rank:
        raise g.unsupported(node, f"axis {axis} is not an axis of {tuple(shape)}")
    axis %= rank
    if opset >= 13:
        return [host_steps.softmax(axis)]
    # Before opset 13, Softmax flattens its input to 2-D at ``axis`` and normalizes each row.
    rows, cols = math.prod(shape[:axis]), math.prod(shape[axis:])
    return [host_steps.reshape((rows, cols)), host_steps.softmax(1),
            host_steps.reshape(shape)]


def host_only_refusal(front, node):
    """The error for a host-only operator found between two accelerator layers (None for
    any other node)."""
    if node is None or node.op_type not in HOST_ONLY_OPS:
        return None
    if node.op_type == "Softmax":
        return front.g.unsupported(node, "Softmax is supported only at the end of the model, "
                                   "where the host computes it; here it feeds another layer")
    return front.g.unsupported(node, "Transpose is supported only between the float model "
                               "input and its QuantizeLinear, or at the end of the model, "
                               "where the host does it; here it is between two layers")


# -- input -----------------------------------------------------------------------------------
def _to_quantizers(front, name, shape):
    """Follow float tensor ``name`` forward through relayout nodes to its QuantizeLinear
    consumers: ``(steps, quantizers, shape, blocker)``; ``blocker`` is the first other
    consumer met (then ``quantizers`` is empty), None if the chain ended without any."""
    g, steps = front.g, []
    while True:
        users = g.consumers.get(name, [])
        if users and all(u.op_type == "QuantizeLinear" for u in users):
            return steps, users, shape, None
        others = [u for u in users if u.op_type != "QuantizeLinear"]
        if len(users) != 1 or users[0].op_type not in _RELAYOUT_OPS:
            return steps, [], shape, (others[0] if others else None)
        step, shape = _relayout_step(front, users[0], shape)
        if step is not None:
            steps.append(step)
        name = users[0].output[0]


def _same_params(front, quantizers):
    params = {front.g.act_params(q) for q in quantizers}
    if len(params) != 1:
        raise front.g.unsupported(quantizers[-1], "the model input is quantized twice with "
                                  "different parameters")
    return params.pop()


def _needs_host(steps, shape):
    """Whether relayout ``steps`` after an int8 tensor of ONNX ``shape`` need the host (the
    accelerator only re-reads a tensor through a flattening view)."""
    ir_shape = ir_shape_of(shape)
    if ir_shape is None:
        return True
    return any(s["op"] == "transpose" or (s["op"] == "reshape" and
                                          not viewable(s["shape"], ir_shape)) for s in steps)


def _requantized_relayout(front, quantizers, shape):
    """A relayout between a Q/DQ pair of equal parameters and the next QuantizeLinear, when
    it needs the host: ``(steps, quantizers, shape)``, else None."""
    g = front.g
    if len(quantizers) != 1 or quantizers[0].output[0] in g.output_names:
        return None
    users = g.consumers.get(quantizers[0].output[0], [])
    if len(users) != 1 or users[0].op_type != "DequantizeLinear" or \
            g.act_params(users[0]) != g.act_params(quantizers[0]):
        return None
    steps, after, out_shape, blocker = _to_quantizers(front, users[0].output[0], shape)
    if blocker is not None or not after or not _needs_host(steps, shape):
        return None
    return steps, after, out_shape


def _refuse_consumer(front, input_name, blocker, relaid):
    if blocker is None:
        return CompileError(f"input {input_name!r} is not quantized (no QuantizeLinear)")
    if blocker.op_type in _RELAYOUT_OPS:
        return front.g.unsupported(blocker, f"relayouts the float model input {input_name!r}, "
                                   f"which has other consumers; a relayout before "
                                   f"QuantizeLinear must be its only one")
    after = " after the host's relayout" if relaid else ""
    return front.g.unsupported(blocker, f"consumes the float model input {input_name!r}"
                               f"{after}; only QuantizeLinear may, after at most a Transpose, "
                               f"Reshape or Flatten that the host does")


def input_relayout(front, name, shape):
    """The way of the float model input ``name`` (ONNX ``shape``) to the accelerator.

    Raises
    ------
    CompileError
        The input is not quantized, or something else than a relayout and QuantizeLinear
        consumes it.
    """
    steps, quantizers, at, blocker = _to_quantizers(front, name, shape)
    if not quantizers:
        raise _refuse_consumer(front, name, blocker, bool(steps))
    params, replaced = _same_params(front, quantizers), []
    while True:
        more = _requantized_relayout(front, quantizers, at)
        if more is None:
            return Relayout(steps, quantizers, at, params, replaced)
        steps = steps + [host_steps.quantize(*params)] + more[0]
        replaced += quantizers
        quantizers, at = more[1], more[2]
        params = _same_params(front, quantizers)


# -- output tails ----------------------------------------------------------------------------
def _only_use(g, name):
    return len(g.consumers.get(name, [])) == 1 and name not in g.output_names


def _tail(g, output):
    """The float tail of graph output ``output`` back to its anchor, or None without one."""
    nodes, name = [], output
    while True:
        node = g.producer.get(name)
        if node is None or (name != output and not _only_use(g, name)):
            return None
        if node.op_type in _TAIL_OPS:
            nodes.append(node)
            name = node.input[0]
            continue
        if node.op_type != "DequantizeLinear":
            return None
        q = g.producer.get(node.input[0])
        source = g.producer.get(q.input[0]) if q is not None and \
            q.op_type == "QuantizeLinear" else None
        if source is None or source.op_type not in _TAIL_OPS or \
                not _only_use(g, q.output[0]):
            return Tail(output, node, nodes[::-1]) if nodes else None
        nodes += [node, q]
        name = q.input[0]


def find_tails(front):
    """``{output name: Tail}`` of every graph output with a float tail (structure only:
    :func:`resolve_tail` decides, once the anchor's tensor is known, who does it)."""
    tails = {}
    for value in front.g.graph.output:
        tail = _tail(front.g, value.name)
        if tail is not None:
            tails[value.name] = tail
    return tails


def resolve_tail(front, tail):
    """The :data:`ResolvedTail` of ``tail``; its steps start from the anchor tensor's
    ``(C, H, W)`` (with a reshape to the anchor's ONNX shape)."""
    g = front.g
    view = front.dq_view(tail.anchor)
    ir_shape = front.tensors[view.ir].shape
    shape, steps, host, params = tuple(view.shape), [host_steps.reshape(view.shape)], False, None
    for node in tail.nodes:
        op = node.op_type
        if op == "QuantizeLinear":
            params = g.act_params(node)
            steps.append(host_steps.quantize(*params))
        elif op == "DequantizeLinear":
            if g.act_params(node) != params:
                raise g.unsupported(node, "scale/zero point differ from the QuantizeLinear "
                                    "before it")
        elif op == "Softmax":
            steps += _softmax_steps(front, node, shape)
            host = True
        else:
            step, shape = _relayout_step(front, node, shape)
            steps += [step] if step is not None else []
            host = host or op == "Transpose" or (op in RESHAPES and
                                                 not viewable(shape, ir_shape))
    return ResolvedTail(view, steps, shape, host)
