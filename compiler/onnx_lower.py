"""Integer lowering of the front end: real-valued layer descriptions -> IR Requant parameters.

Every function takes the quantization of its operands (:class:`vdla.compiler.ir.Tensor`), the
per-output-channel real affine map that follows the operator in the float graph
(:class:`Affine`: folded BatchNormalization, constant bias adds, ...), and the quantized
output (:class:`Out`), and returns the hardware-domain integers of :mod:`vdla.compiler.ir`:
the value a layer computes in real numbers is always written as ``u[k] * (acc + bias[k])``
with ``acc`` the raw accumulator, and requantized with ``mult / 2**shift ~= u[k] / s_y``.
A dead channel of a convolution or fully connected layer (:func:`dead_channels`: its output
does not depend on the input) is the exception: zero weights, ``mult / 2**shift = 1 / 1`` and
its constant output, relative to the zero point, in ``bias[k]``.
"""

import dataclasses
import warnings

import numpy as np

from . import ir
from .errors import CompileError, DeadChannelWarning, UnsupportedError
from .quant import MULT_BITS, quantize_multiplier, quantize_multipliers

__all__ = ["Affine", "Out", "linear", "pool", "add", "check_requant", "dead_channels",
           "DEAD_STEPS"]

_INT32 = (-(1 << 31), (1 << 31) - 1)
#: Magnitude of the weight of a per-channel scaling layer (depthwise 1x1): the largest int8
#: value keeps the accumulator unit, and so the rounding of the folded bias, the finest.
AFFINE_WEIGHT = 127
#: An output channel that no int8 input can move by this many output quantization steps is
#: *dead*: its output is the constant its bias gives (weights of about 1e-13 left by a pruned
#: BatchNormalization, or all zero). 2**-10 of a step changes a rounded int8 value only when
#: the constant sits that close to a rounding tie, and then by one step at most.
DEAD_STEPS = 2.0 ** -10
#: How many channel indices a dead-channel warning lists before it only counts them.
_LISTED_CHANNELS = 16


@dataclasses.dataclass
class Affine:
    """Per-channel real map ``y = a * x + b`` (float64 arrays of the output channels)."""
    a: np.ndarray
    b: np.ndarray

    @classmethod
    def identity(cls, channels):
        return cls(np.ones(channels), np.zeros(channels))

    def then(self, a, b):
        """This map followed by ``y = a * x + b``."""
        return Affine(self.a * a, self.b * a + b)

    @property
    def is_identity(self):
        return bool(np.all(self.a == 1.0) and np.all(self.b == 0.0))


@dataclasses.dataclass
class Out:
    """Quantized output of a layer: scale, zero point and the int8 clamp (ReLU, ReLU6)."""
    scale: float
    zero_point: int
    lo: int = -128
    hi: int = 127


def _fail(where, message):
    return CompileError(f"node {where[0]!r} ({where[1]}): {message}")


def _multipliers(where, reals):
    try:
        return quantize_multipliers(reals)
    except ValueError as exc:
        raise _fail(where, str(exc)) from None


def _int(values):
    # np.rint rounds half to even like onnxruntime's QuantizeLinear; float64 holds every
    # int32 exactly.
    return np.rint(np.asarray(values, np.float64)).astype(np.int64)


def check_requant(where, rq):
    """Raise a CompileError naming the node if a field does not fit :class:`isa.PostParams`."""
    limits = {"bias": _INT32, "mult_a": (0, (1 << MULT_BITS) - 1),
              "mult_b": (0, (1 << MULT_BITS) - 1), "shift": (0, 63)}
    for field, (lo, hi) in limits.items():
        values = getattr(rq, field)
        if values.size and (values.min() < lo or values.max() > hi):
            bad = values[(values < lo) | (values > hi)][0]
            raise _fail(where, f"requantization {field} {bad} does not fit the hardware "
                               f"({lo} to {hi})")
    for field in ("zp_out", "lo", "hi", "zp_a", "zp_b"):
        if not -128 <= getattr(rq, field) <= 127:
            raise _fail(where, f"requantization {field} {getattr(rq, field)} is not int8")
    if rq.lo > rq.hi:
        raise _fail(where, f"empty output range [{rq.lo}, {rq.hi}]")
    return rq


def _requant(where, bias, mult, shift, out, **add_fields):
    rq = ir.Requant(bias=bias, mult_a=mult, shift=shift, zp_out=out.zero_point, lo=out.lo,
                    hi=out.hi, **add_fields)
    return check_requant(where, rq)


def linear(where, x, weight, w_scale, bias_real, affine, out, bias_units=None):
    """Convolution / fully connected layer -> ``(int8 weight, Requant)``.

    Parameters
    ----------
    where : (str, str)
        Node name and op type, for messages.
    x : ir.Tensor
        Quantized input (its zero point is the pad value, so padding adds nothing real).
    weight : np.ndarray
        Integer weights ``(K, ...)`` with the zero point already removed.
    w_scale : np.ndarray
        Weight scale per output channel ``(K,)``.
    bias_real : np.ndarray
        Real bias ``(K,)``.
    affine : Affine
        Map applied to the layer's real output before quantization.
    out : Out
        Output quantization.
    bias_units : np.ndarray, optional
        The bias already in accumulator units (the exact int32 of a QDQ bias); used as is.

    Warns
    -----
    DeadChannelWarning
        Once per layer with dead channels (:func:`dead_channels`), naming them: each is
        compiled as the constant ONNX QuantizeLinear makes of its real bias.
    """
    k = weight.shape[0]
    u = x.scale * np.asarray(w_scale, np.float64)
    if bias_units is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            bias_units = np.where(u > 0, bias_real / np.where(u > 0, u, 1.0), 0.0)
    a, b = affine.a, affine.b
    w = np.asarray(weight).reshape(k, -1)
    # A dead channel's requantization need not fit: its real scale can be ~1e-20 and its bias
    # in those units beyond int32. It gets zero weights and the constant in the bias instead.
    dead = dead_channels(x, w, u * np.abs(a), out.scale)
    sign = np.where(a < 0, -1, 1)
    if np.any(sign < 0) or np.any(dead):
        # The multiplier is unsigned, so a negative factor moves into the weights; -(-128)
        # does not exist in int8 and saturates to 127 (one LSB on one weight).
        w = np.clip(w.astype(np.int16) * sign[:, None].astype(np.int16), -128, 127)
        w[dead] = 0
    w = w.astype(np.int8)
    u_eff = np.where(dead, 1.0, u * np.abs(a))
    with np.errstate(over="ignore", invalid="ignore"):     # a dead channel's units, dropped
        units = np.where(dead, 0.0, sign * bias_units + b / u_eff)
    bias = _int(units) - x.zero_point * w.sum(axis=1, dtype=np.int64)
    mult, shift = _multipliers(where, np.where(dead, 0.0, u_eff / out.scale))
    if np.any(dead):
        _warn_dead(where, dead)
        # acc is 0, so y = zp_out + (bias * 1 >> 0): the bias carries the constant exactly.
        bias[dead] = _quantized_constant(a * bias_real + b, out)[dead] - out.zero_point
        mult[dead], shift[dead] = 1, 0
    return w.reshape(weight.shape), _requant(where, bias, mult, shift, out)


def dead_channels(x, weight, unit, out_scale):
    """Mask of the output channels no int8 input moves by :data:`DEAD_STEPS` output steps.

    Parameters
    ----------
    x : ir.Tensor
        The layer's quantized input.
    weight : np.ndarray
        Integer weights ``(K, N)``.
    unit : np.ndarray
        Real value of one accumulator unit per channel ``(K,)`` (the folded affine factor
        included); 0 for a channel whose real output ignores the input.
    out_scale : float
        Output quantization step.
    """
    # |x_q - zp| reaches 127 - zp or zp + 128, whichever is larger, on every tap at once.
    reach = max(127 - x.zero_point, x.zero_point + 128)
    swing = np.asarray(unit, np.float64) * reach * np.abs(np.asarray(weight, np.int64)).sum(
        axis=1) / out_scale
    return swing < DEAD_STEPS


def _quantized_constant(real, out):
    """ONNX QuantizeLinear of the reals ``real`` as ONNX Runtime computes it (float32
    division, round half to even, saturation), within the clamp of ``out`` (Relu, Clip)."""
    q = np.rint(np.asarray(real, np.float32) / np.float32(out.scale)) + out.zero_point
    return np.clip(q, out.lo, out.hi).astype(np.int64)


def _warn_dead(where, dead):
    """One :class:`DeadChannelWarning` naming the layer and its dead channels."""
    index = np.flatnonzero(dead)
    listed = ", ".join(str(i) for i in index[:_LISTED_CHANNELS])
    if len(index) > _LISTED_CHANNELS:
        listed += f", ... ({len(index)} in all)"
    one = len(index) == 1
    warnings.warn(DeadChannelWarning(
        f"node {where[0]!r} ({where[1]}): output channel{'' if one else 's'} {listed} (of "
        f"{len(dead)}) {'does' if one else 'do'} not depend on the input (weights of about "
        f"zero): compiled as {'a constant' if one else 'constants'}"), stacklevel=3)


def pool(where, x, mode, window, affine, out):
    """Max pooling (``acc`` = raw maximum) or average pooling (``acc`` = raw window sum)."""
    if np.any(affine.a <= 0):
        raise UnsupportedError(where[0], where[1], "a non-positive scale after pooling cannot "
                               "be folded into the requantization")
    if mode == "max":
        u, base = x.scale, -x.zero_point
    else:
        u, base = x.scale / window, -window * x.zero_point
    u_eff = u * affine.a
    bias = base + _int(affine.b / u_eff)
    mult, shift = _multipliers(where, u_eff / out.scale)
    return _requant(where, bias, mult, shift, out)


def add(where, xa, xb, affine, out):
    """Element-wise addition of two quantized tensors, one common shift per channel.

    The larger of the two multipliers is normalized into ``[2**15, 2**16)`` and the smaller
    one shares its shift, so both keep as many bits as the hardware field allows.
    """
    if np.any(affine.a <= 0):
        raise UnsupportedError(where[0], where[1], "a non-positive scale after Add cannot be "
                               "folded into the requantization")
    ra = affine.a * xa.scale / out.scale
    rb = affine.a * xb.scale / out.scale
    mult_a, mult_b, shift = [], [], []
    for real_a, real_b in zip(ra, rb):
        try:
            m, s = quantize_multiplier(max(real_a, real_b))
        except ValueError as exc:
            raise _fail(where, str(exc)) from None
        other = int(round(min(real_a, real_b) * 2.0 ** s))
        mult_a.append(m if real_a >= real_b else other)
        mult_b.append(other if real_a >= real_b else m)
        shift.append(s)
    shift = np.array(shift, np.int64)
    bias = _int(affine.b / out.scale * np.exp2(shift))
    return _requant(where, bias, np.array(mult_a), shift, out, mult_b=np.array(mult_b),
                    zp_a=xa.zero_point, zp_b=xb.zero_point)
