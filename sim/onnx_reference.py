"""ONNX Runtime as the outside numerics reference, one definition for tests, demo and bench.

The reference runs a QDQ model as its graph is written: DequantizeLinear, the float operator,
QuantizeLinear, with ORT's graph optimizations disabled. vdla's golden model and RTL stay
within one output quantization step of it.

With optimizations on, ORT fuses QDQ groups into int8 kernels (QLinearConv and kin). On x86
CPUs without VNNI their u8s8 path adds products in saturating 16-bit lanes, so the result
depends on the CPU (tens of steps off on some of the test graphs). :func:`optimized_session`
is what a user running ORT on their own CPU sees; it is reported as information and never
decides a check.
"""

import pathlib

import numpy as np

__all__ = ["reference_session", "optimized_session", "run_batch", "output_steps"]


def _session(model, level_name):
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level_name)
    source = (model.SerializeToString() if isinstance(model, onnx.ModelProto)
              else str(pathlib.Path(model)))
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def reference_session(model):
    """The reference: ``model`` (a path or an ``onnx.ModelProto``) run as its QDQ graph says."""
    return _session(model, "ORT_DISABLE_ALL")


def optimized_session(model):
    """ORT's default optimized session of ``model``: CPU-dependent, for information only."""
    return _session(model, "ORT_ENABLE_ALL")


def run_batch(session, inputs):
    """First output of ``session`` for each sample of ``inputs`` (one inference each, as the
    accelerator runs them), stacked along a new first axis."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: np.asarray(x)[None]})[0] for x in inputs])


def output_steps(ours, reference, scale):
    """Largest ``|ours - reference|`` in output quantization steps of size ``scale``."""
    ours = np.asarray(ours, np.float64).reshape(len(reference), -1)
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    return float(np.abs(ours - reference).max() / scale)
