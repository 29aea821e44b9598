"""Synthetic IR graphs with random weights, for tests and benchmarks without ONNX.

:class:`IRBuilder` makes Conv / Dense / Pool / Add layers with random int8 weights and
requantization chosen from the accumulator's spread, so outputs use the int8 range instead of
saturating. :func:`resnet50` and :func:`vgg16` build the familiar shapes.
"""

import numpy as np

from . import ir
from .quant import quantize_multipliers

__all__ = ["IRBuilder", "resnet50", "vgg16", "random_input"]


class IRBuilder:
    """Builds an :class:`ir.Graph` layer by layer; every method returns the new tensor's name."""

    def __init__(self, name="synthetic", seed=0):
        self.rng = np.random.default_rng(seed)
        self.tensors, self.layers, self.inputs, self.outputs = {}, [], [], []
        self.name = name

    def _tensor(self, name, shape, zero_point=None):
        zp = int(self.rng.integers(-20, 21)) if zero_point is None else zero_point
        self.tensors[name] = ir.Tensor(name, tuple(int(v) for v in shape),
                                       float(self.rng.uniform(0.01, 0.1)), zp)
        return name

    def _name(self, kind):
        return f"{kind}{len(self.layers)}"

    def input(self, shape, name="input"):
        self.inputs.append(self._tensor(name, shape))
        return name

    def output(self, name):
        self.outputs.append(name)
        return name

    def shape(self, name):
        return self.tensors[name].shape

    def _requant(self, k, spread, relu):
        """Requant mapping an accumulator of std ``spread`` onto roughly +-40 codes."""
        real = 40.0 / max(float(spread), 1.0) * self.rng.uniform(0.7, 1.3, k)
        mult, shift = quantize_multipliers(real)
        bias = self.rng.integers(-int(spread) // 2 - 1, int(spread) // 2 + 2, k)
        zp = int(self.rng.integers(-10, 11))
        lo = zp if relu else -128
        return ir.Requant(bias=bias, mult_a=mult, shift=shift, zp_out=zp, lo=lo, hi=127)

    def conv(self, x, k, kernel=3, stride=1, pads=None, depthwise=False, relu=True):
        c, h, w = self.shape(x)
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else tuple(kernel)
        if pads is None:
            pads = (kh // 2, kw // 2, (kh - 1) // 2, (kw - 1) // 2)
        groups = c if depthwise else 1
        k = c if depthwise else k
        cg = c // groups
        weight = self.rng.integers(-127, 128, (k, cg, kh, kw)).astype(np.int8)
        oh = (h + pads[0] + pads[2] - kh) // stride + 1
        ow = (w + pads[1] + pads[3] - kw) // stride + 1
        name = self._name("conv")
        y = self._tensor(f"{name}_out", (k, oh, ow))
        spread = 73.0 * 25.0 * np.sqrt(cg * kh * kw)
        self.layers.append(ir.Conv(name, x, y, weight, stride, tuple(pads),
                                   self.tensors[x].zero_point, self._requant(k, spread, relu),
                                   groups))
        return y

    def dense(self, x, k, relu=False):
        n = int(np.prod(self.shape(x)))
        weight = self.rng.integers(-127, 128, (k, n)).astype(np.int8)
        name = self._name("dense")
        y = self._tensor(f"{name}_out", (k, 1, 1))
        spread = 73.0 * 25.0 * np.sqrt(n)
        self.layers.append(ir.Dense(name, x, y, weight, self._requant(k, spread, relu)))
        return y

    def pool(self, x, mode="max", kernel=2, stride=None, pads=(0, 0, 0, 0)):
        c, h, w = self.shape(x)
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else tuple(kernel)
        stride = stride or kh
        oh = (h + pads[0] + pads[2] - kh) // stride + 1
        ow = (w + pads[1] + pads[3] - kw) // stride + 1
        name = self._name("pool")
        zp_in = self.tensors[x].zero_point
        y = self._tensor(f"{name}_out", (c, oh, ow), zero_point=zp_in if mode == "max" else None)
        if mode == "max":
            rq = ir.Requant(bias=np.zeros(c), mult_a=np.ones(c), shift=np.zeros(c),
                            zp_out=0, lo=-128, hi=127)
            pad_value = -128
        else:
            # Average: sum of the window times 1/(kh*kw), around the input zero point.
            mult, shift = quantize_multipliers(np.full(c, 1.0 / (kh * kw)))
            rq = ir.Requant(bias=np.full(c, -zp_in * kh * kw), mult_a=mult, shift=shift,
                            zp_out=self.tensors[y].zero_point)
            pad_value = zp_in
        self.layers.append(ir.Pool(name, x, y, mode, (kh, kw), stride, tuple(pads), pad_value,
                                   rq))
        return y

    def global_avgpool(self, x):
        _, h, w = self.shape(x)
        return self.pool(x, "avg", (h, w), 1)

    def add(self, a, b, relu=True):
        c = self.shape(a)[0]
        name = self._name("add")
        y = self._tensor(f"{name}_out", self.shape(a))
        mult, shift = quantize_multipliers(self.rng.uniform(0.3, 0.9, c))
        mult_b = np.array([int(round(m * f)) for m, f in
                           zip(mult, self.rng.uniform(0.5, 1.0, c))], np.int64)
        zp = self.tensors[y].zero_point
        rq = ir.Requant(bias=np.zeros(c), mult_a=mult, shift=shift, zp_out=zp,
                        lo=zp if relu else -128, hi=127, mult_b=mult_b,
                        zp_a=self.tensors[a].zero_point, zp_b=self.tensors[b].zero_point)
        self.layers.append(ir.Add(name, a, b, y, rq))
        return y

    def graph(self):
        g = ir.Graph(dict(self.tensors), list(self.layers), list(self.inputs),
                     list(self.outputs) or [self.layers[-1].output], self.name)
        g.validate()
        return g


def resnet50(size=224, classes=1000, seed=0):
    """ResNet-50 v1.5 shapes: 53 convolutions, max pooling, 16 residual adds, avg pool, FC."""
    b = IRBuilder("resnet50", seed)
    x = b.input((3, size, size))
    x = b.conv(x, 64, 7, 2)
    x = b.pool(x, "max", 3, 2, (1, 1, 1, 1))
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            y = b.conv(x, width, 1)
            y = b.conv(y, width, 3, stride)
            y = b.conv(y, width * 4, 1, relu=False)
            short = b.conv(x, width * 4, 1, stride, relu=False) if i == 0 else x
            x = b.add(y, short)
    x = b.global_avgpool(x)
    b.output(b.dense(x, classes))
    return b.graph()


def vgg16(size=224, classes=1000, seed=0):
    """VGG-16 shapes: 13 3x3 convolutions, 5 max poolings, 3 fully connected layers."""
    b = IRBuilder("vgg16", seed)
    x = b.input((3, size, size))
    for width, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(n):
            x = b.conv(x, width, 3)
        x = b.pool(x, "max", 2, 2)
    x = b.dense(x, 4096, relu=True)
    x = b.dense(x, 4096, relu=True)
    b.output(b.dense(x, classes))
    return b.graph()


def random_input(graph, seed=0):
    """Random int8 inputs ``{name: (C, H, W)}`` for ``graph``."""
    rng = np.random.default_rng(seed)
    return {n: rng.integers(-128, 128, graph.tensors[n].shape).astype(np.int8)
            for n in graph.inputs}
