"""Host steps: the float work around a model's input and outputs that the host does.

The accelerator reads one int8 ``(C, H, W)`` input tensor and writes int8 output tensors.
Exported models often do a little float work on either side that no accelerator layer
covers: an NHWC input transposed to NCHW (or raw pixels flattened for an MLP) before its first
QuantizeLinear, and a final Softmax, Transpose or reshape after the last DequantizeLinear. The
front end records that work as a list of *steps* on the input or output tensor (the IFP's
``host`` field, docs/ifp.md) and the host applies it (:mod:`vdla.sim.host`):

* input: the float input in its ONNX shape -> the steps -> reshaped (C order) to ``(C, H, W)``
  -> QuantizeLinear;
* output: the int8 ``(C, H, W)`` tensor -> DequantizeLinear -> the steps -> reshaped (C order)
  to the ONNX output shape.

A step is a JSON object, one of::

    {"op": "transpose", "perm": [0, 3, 1, 2]}             numpy.transpose
    {"op": "reshape", "shape": [1, 64]}                   C-order reshape
    {"op": "softmax", "axis": 1}                          ONNX Softmax (opset 13) along one axis
    {"op": "quantize", "scale": 0.0039, "zero_point": -128}
                                                          QuantizeLinear then DequantizeLinear
                                                          (int8; a uint8 pair is the same reals)
"""

import math

import numpy as np

__all__ = ["OPS", "MAX_STEPS", "MAX_RANK", "transpose", "reshape", "softmax", "quantize",
           "check", "apply", "describe"]

#: Each step kind and the fields it has besides ``op``.
OPS = {"transpose": ("perm",), "reshape": ("shape",), "softmax": ("axis",),
       "quantize": ("scale", "zero_point")}
#: Bounds a reader enforces before applying anything (a real model needs a handful of steps).
MAX_STEPS = 64
MAX_RANK = 32
_SCALE_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def transpose(perm):
    """The step permuting the axes of a tensor as ``numpy.transpose(x, perm)``."""
    return {"op": "transpose", "perm": [int(p) for p in perm]}


def reshape(shape):
    """The step reshaping a tensor (C order) to ``shape``."""
    return {"op": "reshape", "shape": [int(d) for d in shape]}


def softmax(axis):
    """The step computing ONNX Softmax (opset 13 semantics) along the non-negative ``axis``."""
    return {"op": "softmax", "axis": int(axis)}


def quantize(scale, zero_point):
    """The step quantizing to int8 and dequantizing again, as a Q/DQ pair of the graph."""
    return {"op": "quantize", "scale": float(scale), "zero_point": int(zero_point)}


# -- validation ------------------------------------------------------------------------------
def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value, what, lo, hi):
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RANK:
        raise ValueError(f"{what} is not a list of 1 to {MAX_RANK} integers")
    if not all(_is_int(v) and lo <= v <= hi for v in value):
        raise ValueError(f"{what} {value} has an entry outside {lo}..{hi}")
    return value


def _elements(shape):
    return math.prod(shape)


def _check_step(step, shape):
    """Validate one step against the tensor ``shape`` it applies to; -> the shape after it."""
    if not isinstance(step, dict) or not isinstance(step.get("op"), str) \
            or step["op"] not in OPS:
        raise ValueError(f"a step is not one of {', '.join(OPS)}")
    op = step["op"]
    if set(step) != {"op", *OPS[op]}:
        raise ValueError(f"a {op} step needs exactly the fields {', '.join(OPS[op])}")
    rank = len(shape)
    if op == "transpose":
        perm = _int_list(step["perm"], "transpose perm", 0, rank - 1)
        if sorted(perm) != list(range(rank)):
            raise ValueError(f"transpose perm {perm} is not a permutation of {rank} axes")
        return tuple(shape[p] for p in perm)
    if op == "reshape":
        out = _int_list(step["shape"], "reshape shape", 1, _elements(shape))
        if _elements(out) != _elements(shape):
            raise ValueError(f"reshape of {tuple(shape)} to {tuple(out)} changes the element "
                             f"count")
        return tuple(out)
    if op == "softmax":
        axis = step["axis"]
        if not _is_int(axis) or not 0 <= axis < rank:
            raise ValueError(f"softmax axis {axis!r} is not an axis of {tuple(shape)}")
        return tuple(shape)
    scale, zero_point = step["scale"], step["zero_point"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or \
            not _SCALE_RANGE[0] <= scale <= _SCALE_RANGE[1]:
        raise ValueError(f"quantize scale {scale!r} is not a positive float32")
    if not _is_int(zero_point) or not -128 <= zero_point <= 127:
        raise ValueError(f"quantize zero point {zero_point!r} is outside -128..127")
    return tuple(shape)


def check(steps, shape):
    """Validate ``steps`` applied to a tensor of ``shape``; return the resulting shape.

    Parameters
    ----------
    steps : object
        What should be a list of steps (anything, e.g. straight from JSON).
    shape : tuple of int
        Shape of the tensor the first step applies to.

    Raises
    ------
    ValueError
        A one-line description of the first malformed step.
    """
    if not isinstance(steps, (list, tuple)) or len(steps) > MAX_STEPS:
        raise ValueError(f"is not a list of at most {MAX_STEPS} steps")
    shape = tuple(shape)
    for step in steps:
        shape = _check_step(step, shape)
    return shape


# -- application -----------------------------------------------------------------------------
def _softmax(x, axis):
    # In float64, rounded once to float32: the closest float32 any float32 implementation
    # (ONNX Runtime's included) can aim at.
    wide = x.astype(np.float64)
    e = np.exp(wide - wide.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _fake_quantize(x, scale, zero_point):
    """ONNX QuantizeLinear (round half to even, saturate to int8), then DequantizeLinear."""
    scale = np.float32(scale)
    q = np.clip(np.rint(x / scale) + zero_point, -128, 127)
    return (q - zero_point).astype(np.float32) * scale


def apply(steps, x):
    """Apply ``steps`` (valid for ``x.shape``, see :func:`check`) to ``x``; float32 result."""
    x = np.asarray(x, np.float32)
    for step in steps:
        op = step["op"]
        if op == "transpose":
            x = np.ascontiguousarray(x.transpose(step["perm"]))
        elif op == "reshape":
            x = x.reshape(step["shape"])
        elif op == "softmax":
            x = _softmax(x, step["axis"])
        else:
            with np.errstate(over="ignore"):        # saturates, as QuantizeLinear does
                x = _fake_quantize(x, step["scale"], step["zero_point"])
    return x


def _describe_step(step):
    op = step["op"]
    if op == "transpose":
        return f"transpose{tuple(step['perm'])}"
    if op == "reshape":
        return f"reshape{tuple(step['shape'])}"
    if op == "softmax":
        return f"softmax(axis={step['axis']})"
    return f"quantize(scale={step['scale']:.6g}, zero_point={step['zero_point']})"


def describe(steps):
    """One line listing ``steps`` in order, e.g. ``reshape(1, 10) -> softmax(axis=1)``."""
    return " -> ".join(_describe_step(step) for step in steps)
