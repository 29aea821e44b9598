"""Float ONNX + calibration data -> int8 QDQ ONNX, through onnxruntime's own quantizer.

vdla deliberately does not quantize by itself: onnxruntime's ``quantize_static`` produces the
QDQ model, and that same model is the numerical reference the compiled program is checked
against. The settings are the ones the front end expects: QDQ format, int8 activations
(per-tensor scale, asymmetric) and int8 weights (symmetric, per output channel), MinMax
calibration.
"""

import pathlib
import tempfile

import numpy as np
import onnx

from .errors import CompileError
from .onnx_graph import load_proto

__all__ = ["quantize_model", "real_float32", "refuse_quantized", "QUANTIZED_OPS"]

#: Operators of a model that is quantized already (QDQ, or ONNX's quantized operators):
#: quantizing it again would calibrate int8 data as if it were float.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                           "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})


def real_float32(array, what):
    """``array`` as float32 when it holds real, finite numbers (any integer or float dtype).

    Model inputs and calibration data are real values: strings, booleans, complex numbers,
    dates and structured records are refused, and so are NaN, infinities and values beyond
    the float32 range (they would quantize to garbage). Raises :class:`CompileError` naming
    ``what``.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise CompileError(f"{what}: dtype {array.dtype} is not a real number type (give "
                           f"integers or floats)")
    with np.errstate(over="ignore", invalid="ignore"):
        values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise CompileError(f"{what}: contains NaN, infinite or out-of-float32-range values")
    return values


def refuse_quantized(model, what="model"):
    """Raise :class:`CompileError` if ``model`` (an ONNX ModelProto) is quantized already."""
    found = sorted({node.op_type for node in model.graph.node} & QUANTIZED_OPS)
    if found:
        raise CompileError(f"{what} is quantized already (it has {', '.join(found)}); "
                           f"give the float model")


def _input_spec(model):
    """Name and per-sample shape (without batch; None for symbolic dims) of the only input."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise CompileError(f"model has {len(inputs)} inputs; exactly one is supported")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) < 2:
        raise CompileError(f"input {inputs[0].name!r} has rank {len(dims)}; expected a batch "
                           f"dimension followed by the sample shape")
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    return inputs[0].name, shape


def _samples(calib, shape, name):
    """Calibration array -> list of float32 batches of one sample each."""
    calib = real_float32(calib, "calibration data")
    if calib.ndim == len(shape) + 2 and calib.shape[1] == 1:
        calib = calib[:, 0]                           # (N, 1, *shape): batch already present
    if calib.ndim != len(shape) + 1 or any(want is not None and want != got
                                           for want, got in zip(shape, calib.shape[1:])):
        raise CompileError(f"calibration data of shape {calib.shape} does not match input "
                           f"{name!r} of per-sample shape {shape}; expected (N, "
                           f"{', '.join('?' if d is None else str(d) for d in shape)})")
    if len(calib) == 0:
        raise CompileError("calibration data is empty")
    return [sample[None] for sample in calib]


def _reader(name, samples):
    from onnxruntime.quantization import CalibrationDataReader

    class _OneAtATime(CalibrationDataReader):
        """Feeds the calibration samples to the calibrator one batch-1 input at a time."""

        def __init__(self):
            self._next = iter(samples)

        def get_next(self):
            sample = next(self._next, None)
            return None if sample is None else {name: sample}

        def rewind(self):
            self._next = iter(samples)

    return _OneAtATime()


def _preprocess(source, path):
    """ONNX shape inference + onnxruntime's graph optimizations (folds BatchNormalization)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    # Symbolic shape inference serves transformer models and needs sympy; CNNs of static
    # shape are fully covered by ONNX's own shape inference.
    quant_pre_process(str(source), str(path), skip_symbolic_shape=True)


def quantize_model(float_path, calib, out_path, per_channel=True, preprocess=True):
    """Quantize a float ONNX model to an int8 QDQ model with onnxruntime.

    Parameters
    ----------
    float_path : str, path-like or onnx.ModelProto
        The float32 model (one input, batch dimension first).
    calib : np.ndarray
        Calibration inputs, ``(N, *input_shape[1:])`` (or ``(N, 1, *input_shape[1:])``).
    out_path : str or path-like
        Where the QDQ model is written.
    per_channel : bool
        Per-output-channel weight scales (the hardware supports them at no cost).
    preprocess : bool
        Run ``quant_pre_process`` first (shape inference, BatchNormalization folding).

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    CompileError
        Unreadable or already quantized model, calibration data of the wrong shape or not real
        finite numbers, or a failure of the quantizer.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    model = load_proto(float_path)
    refuse_quantized(model, "model" if isinstance(float_path, onnx.ModelProto)
                     else f"model {float_path}")
    name, shape = _input_spec(model)
    samples = _samples(calib, shape, name)
    out_path = pathlib.Path(out_path)
    with tempfile.TemporaryDirectory(prefix="vdla-quant-") as tmp:
        source = pathlib.Path(tmp) / "float.onnx"
        onnx.save(model, source)
        if preprocess:
            prepared = pathlib.Path(tmp) / "prepared.onnx"
            try:
                _preprocess(source, prepared)
                source = prepared
            except Exception:
                # The optimizer is a convenience (it folds BatchNormalization); the front end
                # also reads BatchNormalization left as its own quantized operator.
                pass
        try:
            quantize_static(
                str(source), str(out_path), _reader(name, samples),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CompileError(f"onnxruntime quantization failed: {type(exc).__name__}: "
                               f"{first}") from None
    return out_path
