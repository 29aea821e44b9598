"""Quantized graph IR: what the ONNX front end produces and the tiler and golden model consume.

All integers are already in the hardware's domain, so the layer reference
(:mod:`vdla.sim.reference`) and the instruction stream compute bit-identical results:

* activations are int8 with a per-tensor scale and zero point, batch 1, shape ``(C, H, W)``;
* a window position outside the input reads ``pad_value`` (the input zero point for
  convolution and average pooling, -128 for max pooling), exactly as the PE array does;
* the accumulator is the plain int32 sum of products (Conv/Dense), the window maximum (max
  pooling) or sum (average pooling), and ``Requant.bias`` already contains the zero-point
  corrections (e.g. ``bias_onnx - zp_x * sum(w)``);
* :class:`Requant` mirrors :class:`vdla.isa.PostParams` field for field;
* a lookup layer (:class:`Lut`) holds the int8 output of each of the 256 int8 inputs;
* a nearest-neighbour upsampling (:class:`Resize`) is a lookup of the input pixel
  ``(y // factor, x // factor)`` for output pixel ``(y, x)``;
* a stride-2 transposed convolution (:class:`ConvTranspose`) is four stride-1 convolutions
  (its phases), whose outputs interleave: phase ``(a, b)`` computes output pixels
  ``(2 * i + a, 2 * j + b)``; a Conv with unequal strides is two such phases;
* a channel concatenation is no layer: ``Graph.concats`` names its parts, tensors of one
  scale and zero point that their producers write straight into channel offsets of it.
"""

import dataclasses

import numpy as np

__all__ = ["Tensor", "Requant", "Conv", "Dense", "Pool", "Add", "Lut", "Resize", "Phase",
           "ConvTranspose", "Graph", "LAYER_KINDS"]


@dataclasses.dataclass
class Tensor:
    """An int8 activation. ``onnx_shape`` is its shape in the ONNX graph (for model I/O);
    ``host`` the steps of :mod:`vdla.compiler.host_steps` the host applies between the float
    model input or output and this tensor (a model input or output only)."""
    name: str
    shape: tuple            # (C, H, W)
    scale: float
    zero_point: int
    onnx_shape: tuple = None
    host: tuple = ()

    @property
    def channels(self):
        return self.shape[0]


@dataclasses.dataclass
class Requant:
    """Per-output-channel post-processing; see :class:`vdla.isa.PostParams` for the formula."""
    bias: np.ndarray        # int64 (K,), must fit int32
    mult_a: np.ndarray      # int64 (K,), 0 <= m < 2**16
    shift: np.ndarray       # int64 (K,), 0 <= s < 64
    zp_out: int
    lo: int = -128
    hi: int = 127
    mult_b: np.ndarray = None   # ADD only
    zp_a: int = 0               # ADD only
    zp_b: int = 0               # ADD only

    def __post_init__(self):
        k = len(self.bias)
        if self.mult_b is None:
            self.mult_b = np.zeros(k, np.int64)
        for name in ("bias", "mult_a", "mult_b", "shift"):
            setattr(self, name, np.asarray(getattr(self, name), np.int64).reshape(k))


@dataclasses.dataclass
class Conv:
    """2-D convolution; ``groups`` is 1 or, for depthwise, equal to the input channels."""
    name: str
    input: str
    output: str
    weight: np.ndarray      # int8 (K, C // groups, kh, kw)
    stride: int
    pads: tuple             # (top, left, bottom, right)
    pad_value: int
    requant: Requant
    groups: int = 1
    kind = "conv"

    @property
    def kernel(self):
        return self.weight.shape[2:]

    @property
    def depthwise(self):
        return self.groups > 1


@dataclasses.dataclass
class Dense:
    """Fully connected layer over the whole input tensor flattened in ONNX (C, H, W) order."""
    name: str
    input: str
    output: str
    weight: np.ndarray      # int8 (K, C*H*W)
    requant: Requant
    kind = "dense"


@dataclasses.dataclass
class Pool:
    """Max or average pooling (global average pooling is a window of the whole input)."""
    name: str
    input: str
    output: str
    mode: str               # "max" or "avg"
    kernel: tuple           # (kh, kw)
    stride: int
    pads: tuple             # (top, left, bottom, right)
    pad_value: int
    requant: Requant
    kind = "pool"


@dataclasses.dataclass
class Add:
    """Element-wise addition of two tensors of one shape, each with its own scale."""
    name: str
    a: str
    b: str
    output: str
    requant: Requant        # mult_a/mult_b/zp_a/zp_b set, bias usually 0
    kind = "add"


@dataclasses.dataclass
class Lut:
    """Element-wise int8 function of one tensor: ``y = table[x + 128]`` (MISC LUT)."""
    name: str
    input: str
    output: str
    table: np.ndarray       # int8 (256,)
    kind = "lut"


@dataclasses.dataclass
class Resize:
    """Nearest-neighbour upsampling by an integer ``factor`` in H and W, each value through
    ``table`` (its requantization): ``y[c, i, j] = table[x[c, i // factor, j // factor] + 128]``.
    """
    name: str
    input: str
    output: str
    factor: int
    table: np.ndarray       # int8 (256,)
    kind = "resize"


@dataclasses.dataclass
class Phase:
    """One phase of a :class:`ConvTranspose`: ``conv`` (input that of the layer, its
    ``output`` unused) computes the ``rows`` x ``cols`` output pixels
    ``(sy * i + a, sx * j + b)``, ``(sy, sx) = step``. Its bottom / right pads may produce
    more rows / columns than that; the extra ones are not kept."""
    a: int
    b: int
    rows: int
    cols: int
    conv: Conv
    step: tuple = (2, 2)


@dataclasses.dataclass
class ConvTranspose:
    """Stride-2 transposed convolution as four :class:`Phase` convolutions of ``input``,
    each with its own sub-kernel and requantization (the zero-point correction differs).
    A Conv with strides (1, 2) or (2, 1) is the same kind of layer: two stride-2 phases,
    interleaved along the stride-1 axis (step 2 there, 1 along the other)."""
    name: str
    input: str
    output: str
    phases: list            # [Phase], covering every (a, b) below their step once
    kind = "convt"


LAYER_KINDS = (Conv, Dense, Pool, Add, Lut, Resize, ConvTranspose)


def _inputs(layer):
    return [layer.a, layer.b] if isinstance(layer, Add) else [layer.input]


@dataclasses.dataclass
class Graph:
    """Layers in a topological order over named tensors; one or more inputs and outputs."""
    tensors: dict
    layers: list
    inputs: list
    outputs: list
    name: str = "model"
    concats: dict = dataclasses.field(default_factory=dict)   # tensor -> [part tensors]

    @staticmethod
    def layer_inputs(layer):
        return _inputs(layer)

    def sources(self, tensor_name):
        """The tensors whose writes make ``tensor_name``: its parts for a concatenation."""
        return list(self.concats.get(tensor_name, [tensor_name]))

    def concat_of(self, part_name):
        """``(concat tensor, first channel)`` holding part ``part_name``, or None."""
        for name, parts in self.concats.items():
            channel = 0
            for part in parts:
                if part == part_name:
                    return name, channel
                channel += self.tensors[part].shape[0]
        return None

    def producer(self, tensor_name):
        for layer in self.layers:
            if layer.output == tensor_name:
                return layer
        return None

    def validate(self):
        """Check names, shapes and topological order; raise ValueError on the first problem."""
        self._validate_concats()
        ready = set(self.inputs)
        for layer in self.layers:
            for name in [s for n in _inputs(layer) for s in self.sources(n)]:
                if name not in ready:
                    raise ValueError(f"layer {layer.name}: input {name} is not produced earlier")
            if layer.output in ready:
                raise ValueError(f"layer {layer.name}: output {layer.output} written twice")
            if layer.output not in self.tensors:
                raise ValueError(f"layer {layer.name}: unknown output {layer.output}")
            ready.add(layer.output)
        for name in self.outputs:
            if not set(self.sources(name)) <= ready:
                raise ValueError(f"graph output {name} is never produced")

    def _validate_concats(self):
        """Each part a layer output of the concatenation's quantization, in one concat once."""
        seen = set()
        for name, parts in self.concats.items():
            whole = self.tensors.get(name)
            if whole is None or not parts or self.producer(name) is not None:
                raise ValueError(f"concatenation {name} is not a tensor with parts")
            for part in parts:
                t = self.tensors.get(part)
                if t is None or part in seen or part in self.inputs or part in self.outputs \
                        or part in self.concats:
                    raise ValueError(f"concatenation {name}: part {part} is unknown, a model "
                                     f"input or output, a concatenation or used twice")
                if (t.scale, t.zero_point, t.shape[1:]) != \
                        (whole.scale, whole.zero_point, whole.shape[1:]):
                    raise ValueError(f"concatenation {name}: part {part} differs in "
                                     f"quantization or plane size")
                seen.add(part)
            if sum(self.tensors[p].shape[0] for p in parts) != whole.shape[0]:
                raise ValueError(f"concatenation {name}: parts do not add up to its channels")
