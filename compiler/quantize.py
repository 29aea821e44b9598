"""Float ONNX + calibration data -> int8 QDQ ONNX, through onnxruntime's own quantizer.

vdla deliberately does not quantize by itself: onnxruntime's ``quantize_static`` produces the
QDQ model, and that same model is the numerical reference the compiled program is checked
against. The settings are the ones the front end expects: QDQ format, int8 activations
(per-tensor scale, asymmetric) and int8 weights (symmetric, per output channel), MinMax
calibration.

The model is first brought to ONNX opset 13 (:data:`QDQ_OPSET`) if it is older: per-channel
QuantizeLinear / DequantizeLinear (their ``axis`` attribute) exist from opset 13 on, and the
quantizer writes them whatever the model's opset says, so an older model would come out as one
ONNX Runtime refuses to load.
"""

import pathlib
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import CompileError
from .onnx_graph import load_proto

__all__ = ["quantize_model", "real_float32", "refuse_quantized", "to_qdq_opset", "QUANTIZED_OPS",
           "QDQ_OPSET"]

#: The first ONNX opset whose QuantizeLinear / DequantizeLinear take an ``axis`` (per-channel
#: scales); older float models are converted to it before quantizing.
QDQ_OPSET = 13

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


def _default_opset(model):
    """The model's version of the default ONNX domain (None when it does not import it)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def to_qdq_opset(model):
    """``model`` converted to :data:`QDQ_OPSET` when its default-domain opset is older.

    ``onnx.version_converter`` rewrites every operator whose semantics changed on the way;
    some of its rewrites (a Softmax over a non-last axis before opset 13) compute a shape
    at run time with ``Shape``, which :func:`_fold_static_shapes` turns back into a constant.
    A model at :data:`QDQ_OPSET` or later is returned as is.

    Raises
    ------
    CompileError
        The converter cannot convert the model (one line).
    """
    opset = _default_opset(model)
    if opset is None or opset >= QDQ_OPSET:
        return model
    from onnx import version_converter
    try:
        converted = version_converter.convert_version(model, QDQ_OPSET)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"cannot convert the model from opset {opset} to {QDQ_OPSET}, "
                           f"which per-channel int8 quantization needs: {first}") from None
    return _fold_static_shapes(converted)


def _fold_static_shapes(model):
    """Replace each ``Shape`` node of a tensor whose shape is fully known by a constant.

    Without this, a model quantized without ``quant_pre_process`` (which folds constants)
    would keep the converter's ``Shape`` nodes, which the front end does not take.
    """
    if not any(node.op_type == "Shape" for node in model.graph.node):
        return model
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return model                    # left as is: the front end names what it refuses
    known = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            known[value.name] = [d.dim_value for d in dims]
    kept = []
    for node in model.graph.node:
        # Opset 13's Shape has no start / end attributes: the whole shape.
        if node.op_type == "Shape" and node.input[0] in known and not node.attribute:
            model.graph.initializer.append(numpy_helper.from_array(
                np.asarray(known[node.input[0]], np.int64), node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def _input_specs(model):
    """``[(name, per-sample shape), ...]`` of the model's inputs (shapes without the batch;
    None for symbolic dims)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 2:
            raise CompileError(f"input {value.name!r} has rank {len(dims)}; expected a batch "
                               f"dimension followed by the sample shape")
        specs.append((value.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                        for d in dims[1:])))
    return specs


def _by_input(calib, specs):
    """``{input name: array}`` from ``calib``: an array for a one-input model, or a mapping
    holding one array per input."""
    names = [name for name, _ in specs]
    if not isinstance(calib, dict):
        if len(names) != 1:
            raise CompileError(f"model has {len(names)} inputs ({', '.join(names)}); give the "
                               f"calibration data as one array per input name (an .npz)")
        return {names[0]: calib}
    missing = [name for name in names if name not in calib]
    extra = sorted(set(calib) - set(names))
    if missing or extra:
        what = (f"no array for input {missing[0]!r}" if missing
                else f"an array {extra[0]!r} that is no model input")
        raise CompileError(f"calibration data has {what} (inputs: {', '.join(names)})")
    return calib


def _samples(calib, shape, name, named=False):
    """Calibration array of input ``name`` -> list of float32 batches of one sample each
    (``named``: the errors name the input, one of several)."""
    calib = real_float32(calib, f"calibration data of input {name!r}" if named
                         else "calibration data")
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


def _feeds(calib, specs):
    """One ``{input name: batch of one}`` per calibration sample, every input's in step."""
    arrays = _by_input(calib, specs)
    per_input = {name: _samples(arrays[name], shape, name, len(specs) > 1)
                 for name, shape in specs}
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        raise CompileError("calibration data holds different numbers of samples per input ("
                           + ", ".join(f"{name} {n}" for name, n in counts.items()) + ")")
    return [dict(zip(per_input, batch)) for batch in zip(*per_input.values())]


def _reader(feeds):
    from onnxruntime.quantization import CalibrationDataReader

    class _OneAtATime(CalibrationDataReader):
        """Feeds the calibration samples to the calibrator one batch-1 input at a time."""

        def __init__(self):
            self._next = iter(feeds)

        def get_next(self):
            return next(self._next, None)

        def rewind(self):
            self._next = iter(feeds)

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
        The float32 model (inputs with the batch dimension first), of any opset: one older than
        :data:`QDQ_OPSET` is converted to it first (:func:`to_qdq_opset`).
    calib : np.ndarray or dict
        Calibration inputs, ``(N, *input_shape[1:])`` (or ``(N, 1, *input_shape[1:])``); for a
        model of several inputs a dict of one such array per input name, the same ``N``.
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
        Unreadable or already quantized model, one the opset converter cannot convert,
        calibration data of the wrong shape or not real finite numbers, or a failure of the
        quantizer.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    model = load_proto(float_path)
    refuse_quantized(model, "model" if isinstance(float_path, onnx.ModelProto)
                     else f"model {float_path}")
    feeds = _feeds(calib, _input_specs(model))
    model = to_qdq_opset(model)
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
                str(source), str(out_path), _reader(feeds),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CompileError(f"onnxruntime quantization failed: {type(exc).__name__}: "
                               f"{first}") from None
    return out_path
