"""Writes the small example models the scenarios run next to the digits CNN.

Both are float networks with seeded random weights (:mod:`vdla.compiler.zoo`), quantized to
int8 QDQ by onnxruntime (:func:`vdla.compiler.quantize.quantize_model`) on seeded random
calibration inputs, so a rerun writes the same models. They are small on purpose: on the
``small`` configuration each runs in a few tens of thousands of cycles per inference, so the
RTL runs of the scenarios stay short.

    python scenarios/models/make_models.py      # from the repository root
"""

import pathlib
import sys
import tempfile

import numpy as np
import onnx

from vdla.compiler.quantize import quantize_model
from vdla.compiler.zoo import GraphBuilder

HERE = pathlib.Path(__file__).resolve().parent


def tiny_resnet():
    """Two residual stages (16 and 32 channels) on a 3x16x16 input, 10 classes."""
    g = GraphBuilder("tiny_resnet", (3, 16, 16), seed=11)
    x = g.conv_bn("input", 16, 3, 1)
    y = g.conv_bn(x, 16, 3, 1, act=None, gain=0.5)
    x = g.relu(g.add(y, x))
    y = g.conv_bn(x, 32, 3, 2)
    y = g.conv_bn(y, 32, 3, 1, act=None, gain=0.5)
    x = g.relu(g.add(y, g.conv_bn(x, 32, 1, 2, act=None)))
    x = g.maxpool(x, 2, 2, (0, 0, 0, 0))
    return g.build(g.gemm(g.flatten(g.global_avgpool(x)), 10))


def tiny_mobilenet():
    """Depthwise-separable blocks with ReLU6 on a 3x16x16 input, 10 classes."""
    g = GraphBuilder("tiny_mobilenet", (3, 16, 16), seed=12)
    x = g.conv_bn("input", 16, 3, 2, act="relu6")
    for cout, stride in ((16, 1), (24, 2), (24, 1)):
        cin = g.shapes[x][0]
        y = g.conv_bn(x, cin, 3, stride, groups=cin, act="relu6")
        y = g.conv_bn(y, cout, 1, 1, act=None, gain=0.5)
        x = g.add(y, x) if stride == 1 and cin == cout else y
    x = g.avgpool(x, 2, 2)
    return g.build(g.gemm(g.flatten(x), 10))


def conv_stack():
    """Three 3x3 convolutions of 16 channels on 32x32, then a classifier: each weight byte is
    used for a thousand pixels and each pixel costs 36 cycles of MACs for 4 bus beats, so a
    core needs about a tenth of the DRAM bus: the compute-bound tenant of the
    performance-isolation scenario."""
    g = GraphBuilder("conv_stack", (16, 32, 32), seed=14)
    x = "input"
    for _ in range(3):
        x = g.conv_bn(x, 16, 3, 1)
    return g.build(g.gemm(g.flatten(g.global_avgpool(x)), 10))


def stream_add():
    """One element-wise addition over a 32x32x32 tensor: two bytes read and one written
    per byte of work, so its time is DRAM bandwidth (the performance-isolation load)."""
    g = GraphBuilder("stream_add", (32, 32, 32), seed=13)
    return g.build(g.add("input", "input"))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for make in (tiny_resnet, tiny_mobilenet, conv_stack, stream_add):
            model = make()
            shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
            calib = np.random.default_rng(5).standard_normal([32, *shape[1:]]).astype(np.float32)
            float_path = pathlib.Path(tmp) / f"{make.__name__}.onnx"
            onnx.save(model, float_path)
            out = HERE / f"{make.__name__}_qdq.onnx"
            quantize_model(float_path, calib, out)
            print(f"{out}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
