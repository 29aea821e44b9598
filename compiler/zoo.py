"""Float ONNX models with seeded random weights: classic CNNs and the blocks they are made of.

The networks reproduce the layer structure of the published models (ResNet-18/50, VGG-16,
MobileNetV2) so that tiling, scheduling and performance studies see realistic shapes; the
weights are random (He initialization, BatchNormalization statistics near unit variance) so
that activations stay in a sane range through the whole depth and the int8 quantization
behaves as it would on a trained net. Every model has one input ``input`` of shape
``[1, 3, size, size]`` and one output ``output`` of shape ``[1, classes]``, float32, opset 13.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OPSET", "GraphBuilder", "resnet8", "resnet18", "resnet50", "vgg16", "mobilenetv2"]

#: Opset of the generated models (Clip takes min/max as inputs from opset 11 on).
OPSET = 13


def _out_size(size, kernel, stride, pad_begin, pad_end):
    return (size + pad_begin + pad_end - kernel) // stride + 1


class GraphBuilder:
    """Builds a float32 ONNX graph one layer at a time and tracks the (C, H, W) shapes.

    Parameters
    ----------
    name : str
        Graph name.
    input_shape : tuple
        Shape of the input without the batch dimension: ``(C, H, W)`` or ``(N,)``.
    seed : int
        Seed of the weight generator; the same calls with the same seed give the same model.
    input_name : str
        Name of the graph input.
    batch : int or str
        Batch dimension of the input and output (a string makes it symbolic).
    """

    def __init__(self, name="model", input_shape=(3, 32, 32), seed=0, input_name="input",
                 batch=1):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.input_name = input_name
        self.batch = batch
        self.shapes = {input_name: tuple(input_shape)}
        self._counts = {}

    # -- naming and constants ----------------------------------------------------------------
    def unique(self, prefix):
        """A fresh name ``prefix_<n>``."""
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, prefix, array, dtype=np.float32):
        """Add an initializer and return its name."""
        name = self.unique(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def node(self, op_type, inputs, out_shape, prefix=None, **attrs):
        """Add a node with one output of ``out_shape`` (no batch) and return the output name."""
        name = self.unique(prefix or op_type.lower())
        out = name + "_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        self.shapes[out] = tuple(out_shape)
        return out

    # -- layers ------------------------------------------------------------------------------
    def conv(self, x, cout, kernel=3, stride=1, pads=None, groups=1, bias=True, auto_pad=None,
             dilation=1, gain=1.0):
        """Convolution with He-initialized weights; ``pads`` defaults to ``kernel // 2``;
        ``stride`` is one number or ``(sh, sw)``."""
        c, h, w = self.shapes[x]
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        fan_in = c // groups * kh * kw
        weight = self.rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), (cout, c // groups, kh, kw))
        inputs = [x, self.const("w", weight)]
        if bias:
            inputs.append(self.const("b", self.rng.normal(0.0, 0.05, cout)))
        attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
        ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
        if dilation != 1:
            attrs["dilations"] = [dilation, dilation]
        if groups != 1:
            attrs["group"] = groups
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            attrs["auto_pad"] = auto_pad
            oh, ow = -(-h // sh), -(-w // sw)
        elif auto_pad == "VALID":
            attrs["auto_pad"] = auto_pad
            oh, ow = _out_size(h, ekh, sh, 0, 0), _out_size(w, ekw, sw, 0, 0)
        else:
            if pads is None:
                pads = (ekh // 2, ekw // 2, ekh // 2, ekw // 2)
            attrs["pads"] = list(pads)
            oh = _out_size(h, ekh, sh, pads[0], pads[2])
            ow = _out_size(w, ekw, sw, pads[1], pads[3])
        return self.node("Conv", inputs, (cout, oh, ow), **attrs)

    def batchnorm(self, x, gain=1.0, eps=1e-5):
        """Inference BatchNormalization with random statistics (output ~ ``gain`` std)."""
        c = self.shapes[x][0]
        gamma = gain * self.rng.uniform(0.6, 1.2, c)
        beta = self.rng.normal(0.0, 0.1, c)
        mean = self.rng.normal(0.0, 0.1, c)
        var = self.rng.uniform(1.0, 2.0, c)
        inputs = [x] + [self.const(p, v) for p, v in
                        (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        return self.node("BatchNormalization", inputs, self.shapes[x], prefix="bn", epsilon=eps)

    def relu(self, x):
        return self.node("Relu", [x], self.shapes[x])

    def clip(self, x, low=0.0, high=6.0):
        """Clip with min/max as constant inputs (ReLU6 by default)."""
        return self.node("Clip", [x, self.const("min", low), self.const("max", high)],
                         self.shapes[x])

    def activation(self, x, act):
        """``act`` in ``None``, ``"relu"``, ``"relu6"``."""
        if act is None:
            return x
        return self.relu(x) if act == "relu" else self.clip(x)

    def _pool(self, op_type, x, kernel, stride, pads, **attrs):
        c, h, w = self.shapes[x]
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
        pads = tuple(pads) if pads is not None else (0, 0, 0, 0)
        oh = _out_size(h, kh, stride, pads[0], pads[2])
        ow = _out_size(w, kw, stride, pads[1], pads[3])
        if attrs.get("ceil_mode"):
            oh = -(-(h + pads[0] + pads[2] - kh) // stride) + 1
            ow = -(-(w + pads[1] + pads[3] - kw) // stride) + 1
        return self.node(op_type, [x], (c, oh, ow), kernel_shape=[kh, kw],
                         strides=[stride, stride], pads=list(pads), **attrs)

    def maxpool(self, x, kernel=3, stride=2, pads=(1, 1, 1, 1), ceil_mode=0):
        return self._pool("MaxPool", x, kernel, stride, pads, ceil_mode=ceil_mode)

    def avgpool(self, x, kernel=2, stride=2, pads=(0, 0, 0, 0), count_include_pad=0,
                ceil_mode=0):
        return self._pool("AveragePool", x, kernel, stride, pads, ceil_mode=ceil_mode,
                          count_include_pad=count_include_pad)

    def global_avgpool(self, x):
        c = self.shapes[x][0]
        return self.node("GlobalAveragePool", [x], (c, 1, 1), prefix="gap")

    def add(self, a, b):
        return self.node("Add", [a, b], self.shapes[a])

    def flatten(self, x):
        return self.node("Flatten", [x], (int(np.prod(self.shapes[x])),), axis=1)

    def reshape(self, x, shape):
        """Reshape to ``shape`` (including the batch dimension)."""
        target = self.const("shape", np.asarray(shape, np.int64), np.int64)
        size = int(np.prod(self.shapes[x]))
        out = [size // -int(np.prod(shape)) if d == -1 else d for d in shape]
        return self.node("Reshape", [x, target], tuple(out[1:]))

    def gemm(self, x, n, trans_b=1, gain=1.0):
        """Fully connected layer as Gemm (weights ``[n, in]`` when ``trans_b``)."""
        k = self.shapes[x][0]
        weight = self.rng.normal(0.0, gain * np.sqrt(2.0 / k), (n, k))
        w = self.const("fc_w", weight if trans_b else weight.T)
        b = self.const("fc_b", self.rng.normal(0.0, 0.05, n))
        return self.node("Gemm", [x, w, b], (n,), transB=trans_b)

    def matmul(self, x, n, bias=True, gain=1.0):
        """Fully connected layer as MatMul (+ Add of a bias)."""
        k = self.shapes[x][0]
        w = self.const("mm_w", self.rng.normal(0.0, gain * np.sqrt(2.0 / k), (k, n)))
        y = self.node("MatMul", [x, w], (n,))
        if bias:
            y = self.node("Add", [y, self.const("mm_b", self.rng.normal(0.0, 0.05, n))], (n,))
        return y

    def conv_bn(self, x, cout, kernel=3, stride=1, groups=1, act="relu", gain=1.0):
        """Convolution without bias + BatchNormalization + activation (the usual CNN unit)."""
        y = self.conv(x, cout, kernel, stride, groups=groups, bias=False)
        return self.activation(self.batchnorm(y, gain), act)

    # -- result --------------------------------------------------------------------------------
    def build(self, output, output_name="output", opset=None):
        """Rename ``output`` to ``output_name`` and return the checked ModelProto (of ``opset``,
        default :data:`OPSET`; HardSwish needs 14)."""
        shape = self.shapes[output]
        for node in self.nodes:
            for i, name in enumerate(node.output):
                if name == output:
                    node.output[i] = output_name
        x_shape = [self.batch, *self.shapes[self.input_name]]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [self.batch, *shape])],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset or OPSET)],
                                  producer_name="vdla.zoo")
        model.ir_version = 8        # readable by every onnxruntime the project supports
        onnx.checker.check_model(model)
        return model


# -- classic networks --------------------------------------------------------------------------
def _classifier(g, x, classes):
    return g.gemm(g.flatten(g.global_avgpool(x)), classes)


def _basic_block(g, x, cout, stride):
    y = g.conv_bn(x, cout, 3, stride)
    y = g.conv_bn(y, cout, 3, 1, act=None, gain=0.5)     # small residual branch keeps depth sane
    short = x if stride == 1 and g.shapes[x][0] == cout else g.conv_bn(x, cout, 1, stride, act=None)
    return g.relu(g.add(y, short))


def _bottleneck(g, x, width, stride):
    cout = 4 * width
    y = g.conv_bn(x, width, 1, 1)
    y = g.conv_bn(y, width, 3, stride)
    y = g.conv_bn(y, cout, 1, 1, act=None, gain=0.5)
    short = x if stride == 1 and g.shapes[x][0] == cout else g.conv_bn(x, cout, 1, stride, act=None)
    return g.relu(g.add(y, short))


def _resnet(name, block, counts, widths, size, classes, seed, stem=None):
    g = GraphBuilder(name, (3, size, size), seed)
    if stem is None:
        x = g.conv_bn("input", 64, 7, 2)
        x = g.maxpool(x, 3, 2, (1, 1, 1, 1))
    else:
        x = g.conv_bn("input", stem, 3, 1)
    for stage, (count, width) in enumerate(zip(counts, widths)):
        for i in range(count):
            x = block(g, x, width, 2 if i == 0 and stage > 0 else 1)
    return g.build(_classifier(g, x, classes))


def resnet18(size=224, classes=1000, seed=0):
    """ResNet-18 (basic blocks 2-2-2-2) as a float ONNX model."""
    return _resnet("resnet18", _basic_block, (2, 2, 2, 2), (64, 128, 256, 512), size, classes,
                   seed)


def resnet8(size=32, classes=10, seed=0):
    """ResNet-8 for small images (CIFAR style: a 3x3 stem of 16 channels, one basic block per
    stage of 16, 32 and 64 channels); small enough to simulate in RTL in seconds."""
    return _resnet("resnet8", _basic_block, (1, 1, 1), (16, 32, 64), size, classes, seed,
                   stem=16)


def resnet50(size=224, classes=1000, seed=0):
    """ResNet-50 (bottleneck blocks 3-4-6-3) as a float ONNX model."""
    return _resnet("resnet50", _bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), size, classes,
                   seed)


def vgg16(size=224, classes=1000, seed=0, batchnorm=False):
    """VGG-16 (13 convolutions, 3 fully connected layers); ``batchnorm`` gives VGG-16-BN."""
    g = GraphBuilder("vgg16" + ("_bn" if batchnorm else ""), (3, size, size), seed)
    x = "input"
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512, "M"):
        if item == "M":
            x = g.maxpool(x, 2, 2, (0, 0, 0, 0))
        elif batchnorm:
            x = g.conv_bn(x, item, 3, 1)
        else:
            x = g.relu(g.conv(x, item, 3, 1))
    x = g.flatten(x)
    x = g.relu(g.gemm(x, 4096))
    x = g.relu(g.gemm(x, 4096))
    return g.build(g.gemm(x, classes))


def _inverted_residual(g, x, cout, stride, expand):
    cin = g.shapes[x][0]
    y = x
    if expand != 1:
        y = g.conv_bn(y, cin * expand, 1, 1, act="relu6")
    y = g.conv_bn(y, cin * expand, 3, stride, groups=cin * expand, act="relu6")
    y = g.conv_bn(y, cout, 1, 1, act=None, gain=0.5)
    return g.add(y, x) if stride == 1 and cin == cout else y


def mobilenetv2(size=224, classes=1000, seed=0):
    """MobileNetV2 (width 1.0): inverted residuals with depthwise 3x3 convolutions, ReLU6."""
    g = GraphBuilder("mobilenetv2", (3, size, size), seed)
    x = g.conv_bn("input", 32, 3, 2, act="relu6")
    for expand, cout, count, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                        (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                        (6, 320, 1, 1)):
        for i in range(count):
            x = _inverted_residual(g, x, cout, stride if i == 0 else 1, expand)
    x = g.conv_bn(x, 1280, 1, 1, act="relu6")
    return g.build(_classifier(g, x, classes))
