"""Hostile input to the vdla command line: refused in one line with exit status 2, never a
traceback and never exit 0.

Every case runs the CLI in-process. The IFP reader's checks and the check of ``vdla run``'s
input array are also driven by hypothesis: header, section-table and metadata fields rewritten
to arbitrary values with every CRC recomputed (so the range checks, not the CRCs, must catch
them), and numpy arrays of arbitrary dtype, shape and values.
"""

import contextlib
import io
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from test_cli import DIGITS, assert_one_line_error, run_cli
from vdla import cli
from vdla.compiler import ifp, static, synthetic
from vdla.compiler.errors import CompileError, IFPError
from vdla.compiler.program import TensorEntry
from vdla.config import get_config

FLOAT_DIGITS = DIGITS.with_name("digits_float.onnx")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The container layout of compiler/ifp.py (docs/ifp.md), rebuilt here independently.
HEADER = struct.Struct("<8sII16sII")      # magic, version, header size, core hash, count, CRC
SECTION = struct.Struct("<IIQQI4x")       # kind, reserved, offset, length, CRC
U32, U64 = (1 << 32) - 1, (1 << 64) - 1


def package(header, rows, body):
    """IFP bytes from header fields (without CRC), section-table rows (without CRC) and the
    bytes after the table; each section CRC is computed over the bytes its row names and the
    header CRC over the header size it claims, as a reader checks them."""
    table = b"".join(SECTION.pack(*row, 0) for row in rows)
    draft = HEADER.pack(*header, 0) + table + body
    table = b"".join(SECTION.pack(*row, zlib.crc32(draft[row[2]:row[2] + row[3]]))
                     for row in rows)
    draft = HEADER.pack(*header, 0) + table + body
    crc = zlib.crc32(draft[:HEADER.size] + draft[HEADER.size:header[2]])
    return HEADER.pack(*header, crc) + table + body


def unpack(data):
    """-> (header fields without CRC, section rows without CRC, bytes after the table)."""
    *header, _ = HEADER.unpack_from(data)
    rows = [list(SECTION.unpack_from(data, HEADER.size + i * SECTION.size))[:4]
            for i in range(header[4])]
    return header, rows, data[header[2]:]


def meta_of(data):
    _, rows, _ = unpack(data)
    offset, length = rows[3][2:4]
    return json.loads(data[offset:offset + length])


def with_meta(data, meta):
    """``data`` with its metadata (the last section) replaced by ``meta``, CRCs redone."""
    header, rows, _ = unpack(data)
    text = json.dumps(meta).encode()
    rows[3][3] = len(text)
    return package(header, rows, data[header[2]:rows[3][2]] + text)


def edited(data, edit):
    meta = meta_of(data)
    edit(meta)
    return with_meta(data, meta)


# --- the CLI cases ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every hostile file of the cases below, and a few good ones, in one directory."""
    d = tmp_path_factory.mktemp("hostile")
    good = d / "digits.ifp"
    assert cli.main(["compile", str(DIGITS), "-o", str(good)]) == 0
    data = good.read_bytes()
    ifps = {
        "seg40": lambda m: m.update(segment_size=2 ** 40),
        "seg63": lambda m: m.update(segment_size=2 ** 63),
        "onnx_null": lambda m: [t.update(onnx_shape=None) for t in m["tensors"]],
        "zero_scale": lambda m: m["tensors"][0].update(scale=0.0),
        "shape_string": lambda m: m["tensors"][0].update(shape="1x8x8"),
    }
    for name, edit in ifps.items():
        (d / f"{name}.ifp").write_bytes(edited(data, edit))

    sample = (1, 1, 8, 8)
    arrays = {
        "x": np.zeros(sample, np.float32),
        "empty": np.zeros((0, *sample[1:]), np.float32),
        "unicode": np.full(sample, "a"),
        "bytes": np.full(sample, b"a"),
        "complex": np.zeros(sample, np.complex64),
        "nan": np.full(sample, np.nan, np.float32),
        "inf": np.full(sample, -np.inf, np.float64),
        "huge": np.full(sample, 1e300),                  # finite, but not as float32
        "bool": np.zeros(sample, bool),
        "datetime": np.zeros(sample, "datetime64[s]"),
        "structured": np.zeros(sample, [("a", "<f4"), ("b", "<f4")]),
        "int8_empty": np.zeros((0, 1, 8, 8), np.int8),
    }
    for name, array in arrays.items():
        np.save(d / f"{name}.npy", array)
    np.save(d / "object.npy", np.array([1, "a"], object), allow_pickle=True)
    np.save(d / "calib_unicode.npy", np.full((4, *sample[1:]), "0.5"))
    np.savez(d / "x.npz", input=arrays["x"])
    np.savez(d / "image.npz", image=arrays["x"])
    (d / "empty_file.npy").write_bytes(b"")
    (d / "bad_zip.npy").write_bytes(b"PK\x03\x04 not a zip archive")
    header = io.BytesIO()       # an .npy header claiming 4 TiB of float32, then 16 bytes
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (2 ** 40,)})
    (d / "claims_4tib.npy").write_bytes(header.getvalue() + bytes(16))
    (d / "out_dir").mkdir()

    def scenario(name, extra, model=DIGITS):
        (d / f"{name}.toml").write_text(f'[[tenant]]\nname = "A"\nmodel = "{model.as_posix()}"'
                                        f'\ncores = 1\n{extra}\n')
    for name in ("complex", "nan", "inf", "bool", "datetime", "structured", "unicode",
                 "int8_empty", "claims_4tib"):
        scenario(f"inputs_{name}", f'inputs = "{(d / f"{name}.npy").as_posix()}"')
    scenario("calib_qdq", f'calib = "{(d / "x.npy").as_posix()}"')
    scenario("calib_ifp", f'calib = "{(d / "x.npy").as_posix()}"', model=good)
    scenario("good", "")
    (d / "latin1.toml").write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    (d / "deep.toml").write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    return d


def run_args(ifp_name="digits.ifp", x="x.npy", output="y.npy"):
    return lambda d: ["run", d / ifp_name, "--input", d / x, "--output", d / output]


def quantize_args(model, calib, output="q.onnx"):
    return lambda d: ["quantize", model, "--calib", d / calib, "-o", d / output]


def sim_args(name):
    return lambda d: ["sim", d / f"{name}.toml"]


def case(name, argv, *fragments, absent=()):
    return pytest.param(argv, fragments, absent, id=name)


CASES = [
    # IFP fields out of range or of the wrong type (CRC-valid files)
    case("ifp-segment-2^40", lambda d: ["info", d / "seg40.ifp"], "seg40.ifp",
         "'segment_size' 1099511627776 is outside 1..4294967296"),
    case("ifp-segment-2^63", run_args("seg63.ifp"), "'segment_size' 9223372036854775808"),
    case("ifp-onnx-shape-null-info", lambda d: ["info", d / "onnx_null.ifp"],
         "'onnx_shape' is not a list"),
    case("ifp-onnx-shape-null-run", run_args("onnx_null.ifp"), "'onnx_shape' is not a list"),
    case("ifp-zero-scale", lambda d: ["info", d / "zero_scale.ifp"],
         "'scale' 0.0 is not a positive float32"),
    case("ifp-shape-string", lambda d: ["disasm", d / "shape_string.ifp"], "'shape'"),
    # run --input
    case("run-empty-batch", run_args(x="empty.npy"), "empty.npy", "empty batch"),
    case("run-unicode", run_args(x="unicode.npy"), "dtype <U1 is not a real number type"),
    case("run-bytes", run_args(x="bytes.npy"), "dtype |S1 is not a real number type"),
    case("run-object", run_args(x="object.npy"), "object.npy: not a readable .npy array"),
    case("run-complex", run_args(x="complex.npy"), "dtype complex64"),
    case("run-nan", run_args(x="nan.npy"), "nan.npy", "NaN, infinite"),
    case("run-inf", run_args(x="inf.npy"), "inf.npy", "NaN, infinite"),
    case("run-beyond-float32", run_args(x="huge.npy"), "out-of-float32-range"),
    case("run-bool", run_args(x="bool.npy"), "dtype bool"),
    case("run-datetime", run_args(x="datetime.npy"), "dtype datetime64[s]"),
    case("run-structured", run_args(x="structured.npy"), "dtype [('a', '<f4'), ('b', '<f4')]"),
    case("run-npz-without-the-input", run_args(x="image.npz"),
         "image.npz: no array for the model input 'input'"),
    case("run-empty-file", run_args(x="empty_file.npy"), "not a readable .npy array"),
    case("run-bad-zip", run_args(x="bad_zip.npy"), "not a readable .npy array"),
    case("run-header-claims-4tib", run_args(x="claims_4tib.npy"), "not a readable .npy array"),
    case("run-output-is-a-directory", run_args(output="out_dir"), "out_dir: is a directory",
         absent=["out_dir.npy"]),
    case("run-output-in-missing-directory", run_args(output="none/y.npy"),
         "no such directory", absent=["none"]),
    # quantize
    case("quantize-calib-unicode", quantize_args(FLOAT_DIGITS, "calib_unicode.npy"),
         "calibration data: dtype <U3"),
    case("quantize-calib-bytes", quantize_args(FLOAT_DIGITS, "bytes.npy"),
         "calibration data: dtype |S1"),
    case("quantize-calib-npz-without-the-input", quantize_args(FLOAT_DIGITS, "image.npz"),
         "calibration data has no array for input 'input'", absent=["q.onnx"]),
    case("quantize-qdq-model", quantize_args(DIGITS, "x.npy"), "digits_qdq.onnx is quantized "
         "already (it has DequantizeLinear, QuantizeLinear)", absent=["q.onnx"]),
    case("quantize-output-in-missing-directory",
         quantize_args(FLOAT_DIGITS, "x.npy", "none/q.onnx"), "no such directory"),
    # sim
    case("sim-not-utf8", sim_args("latin1"), "latin1.toml: not UTF-8 text (byte 0xe9"),
    case("sim-nested-too-deeply", sim_args("deep"), "nested too deeply"),
    *[case(f"sim-inputs-{name}", sim_args(f"inputs_{name}"), "tenant[0] (A).inputs", fragment)
      for name, fragment in [("complex", "dtype complex64"), ("nan", "NaN, infinite"),
                             ("inf", "NaN, infinite"), ("bool", "dtype bool"),
                             ("datetime", "dtype datetime64[s]"),
                             ("structured", "dtype [('a'"), ("unicode", "dtype <U1"),
                             ("int8_empty", "N >= 1"), ("claims_4tib", "not a readable")]],
    case("sim-calib-beside-qdq", sim_args("calib_qdq"), "tenant[0] (A).calib",
         "quantized already"),
    case("sim-calib-beside-ifp", sim_args("calib_ifp"), "tenant[0] (A).calib",
         "compiled already"),
    case("sim-report-in-missing-directory",
         lambda d: ["sim", d / "good.toml", "--report", d / "none" / "r.json"],
         "no such directory", absent=["none"]),
    # link, and the other commands' outputs, refuse a missing directory alike
    case("link-output-in-missing-directory",
         lambda d: ["link", d / "digits.ifp", "-o", d / "none" / "image"],
         "none/image: no such directory", absent=["none"]),
    case("compile-output-in-missing-directory",
         lambda d: ["compile", DIGITS, "-o", d / "none" / "m.ifp"], "no such directory"),
    case("compile-output-is-a-directory", lambda d: ["compile", DIGITS, "-o", d / "out_dir"],
         "is a directory"),
]


@pytest.mark.parametrize("argv, fragments, absent", CASES)
def test_hostile_input_is_a_one_line_error(files, capsys, argv, fragments, absent):
    status, out, err = run_cli(capsys, *argv(files))
    assert_one_line_error(status, err, *fragments)
    assert err.startswith(f"vdla {argv(files)[0]}: error: ")
    assert out == "" and "Traceback" not in out
    for name in absent:
        assert not (files / name).exists(), name


def test_run_writes_the_file_named(files, capsys):
    # --output is the file written: no ".npy" appended (np.save on a name would add it).
    status, _, err = run_cli(capsys, *run_args(output="y.out")(files))
    assert status == 0, err
    assert np.load(files / "y.out").shape == (1, 10) and not (files / "y.out.npy").exists()


# --- hypothesis: IFP header and metadata fields ---------------------------------------------

def _small_program():
    b = synthetic.IRBuilder("hostile", seed=7)
    x = b.input((3, 6, 5))
    y = b.conv(x, 8, 3)
    b.output(b.dense(b.pool(y, "max", 2), 4))
    return static.compile_graph(b.graph(), get_config("small"))


SMALL_IFP = ifp.dumps(_small_program())
SMALL_META = meta_of(SMALL_IFP)

# Values where range checks live: edges of the IFP's integer fields and of the segment.
EDGES = [0, 1, 2, 3, 4, 5, 7, 8, 40, 168, len(SMALL_IFP) - 1, len(SMALL_IFP),
         len(SMALL_IFP) + 1, (1 << 31) - 1, 1 << 31, U32, 1 << 32, (1 << 32) + 1, 1 << 40,
         (1 << 63) - 1, 1 << 63, U64]


def _ints(top):
    return st.one_of(st.sampled_from([v for v in EDGES if v <= top]), st.integers(0, top))


HEADER_FIELDS = {          # index in the header, strategy
    "magic": (0, st.one_of(st.just(ifp.MAGIC), st.binary(min_size=8, max_size=8))),
    "version": (1, _ints(U32)),
    "header size": (2, _ints(U32)),
    "core hash": (3, st.one_of(st.binary(min_size=16, max_size=16),
                               st.text("0123456789abcdefABCDEF \x00", min_size=16,
                                       max_size=16).map(str.encode))),
    "section count": (4, _ints(U32)),
}
ROW_FIELDS = {"kind": (0, _ints(U32)), "reserved": (1, _ints(U32)),
              "offset": (2, _ints(U64)), "length": (3, _ints(U64))}

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.sampled_from(EDGES + [-1, -(1 << 63), 10 ** 30]),
              st.integers(), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)


def _meta_places():
    """Every field of the metadata: top-level keys, and each key of each tensor and layer."""
    places = [(key,) for key in SMALL_META]
    for group in ("tensors", "layers"):
        places += [(group, i, key) for i, entry in enumerate(SMALL_META[group])
                   for key in entry]
    return places


DELETE = object()


def _rewrite(meta, place, value):
    target = meta
    for step in place[:-1]:
        target = target[step]
    if value is DELETE:
        del target[place[-1]]
    else:
        target[place[-1]] = value


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _load_or_refuse(data, tmp_path):
    """The reader loads ``data`` or raises IFPError; what it loads the CLI handles."""
    try:
        program = ifp.loads(data)
    except IFPError as error:
        assert "\n" not in str(error)
        event("refused: " + " ".join(str(error).split(": ")[1].split()[:2]))
        return
    event("loaded")
    assert 1 <= program.segment_size <= ifp.MAX_SEGMENT_BYTES
    for t in program.tensors:
        assert t.offset + t.size <= program.segment_size
        assert np.prod(t.onnx_shape, dtype=object) == np.prod(t.shape, dtype=object)
    path = tmp_path / "fuzzed.ifp"
    path.write_bytes(data)
    for argv in (["info", path], ["link", path, "--cores", 2, "-o", tmp_path / "image"]):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = cli.main([str(a) for a in argv])
        assert status in (0, 2) and len(err.getvalue().splitlines()) <= 1, err.getvalue()


@FUZZ
@given(st.data())
def test_ifp_header_and_section_fields_are_range_checked(scratch, data):
    header, rows, body = unpack(SMALL_IFP)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        if data.draw(st.booleans(), label="header"):
            index, values = HEADER_FIELDS[data.draw(st.sampled_from(sorted(HEADER_FIELDS)))]
            header[index] = data.draw(values)
        else:
            row = rows[data.draw(st.integers(0, len(rows) - 1), label="section")]
            index, values = ROW_FIELDS[data.draw(st.sampled_from(sorted(ROW_FIELDS)))]
            row[index] = data.draw(values)
    _load_or_refuse(package(header, rows, body), scratch)


@FUZZ
@given(st.sampled_from(_meta_places()), st.one_of(st.just(DELETE), JSON_VALUES))
def test_ifp_metadata_fields_are_range_and_type_checked(scratch, place, value):
    meta = json.loads(json.dumps(SMALL_META))
    _rewrite(meta, place, value)
    _load_or_refuse(with_meta(SMALL_IFP, meta), scratch)


def test_the_fuzz_starts_from_a_valid_package():
    # package / unpack rebuild the writer's bytes exactly, and a metadata rewrite that changes
    # nothing still loads: what the fuzz refuses, its edits caused.
    assert package(*unpack(SMALL_IFP)) == SMALL_IFP
    ifp.loads(with_meta(SMALL_IFP, SMALL_META))


# --- hypothesis: the run input array -------------------------------------------------------

SAMPLE = (2, 3)
MODEL_INPUT = TensorEntry("x", (2, 3, 1), 0.05, 3, (1, *SAMPLE), 0, 64, "input")

DTYPES = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=4),
                   hnp.unicode_string_dtypes(max_len=4),
                   hnp.array_dtypes(max_size=3, allow_subarrays=True),
                   hnp.nested_dtypes(max_leaves=4, max_itemsize=16),
                   st.just(np.dtype(np.longdouble)))
REAL_DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                        hnp.floating_dtypes(), st.just(np.dtype(np.longdouble)))
FITTING_SHAPES = st.one_of(st.just(SAMPLE), st.integers(0, 3).map(lambda n: (n, *SAMPLE)))
SHAPES = st.one_of(FITTING_SHAPES,
                   hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
ARRAYS = st.one_of(hnp.arrays(REAL_DTYPES, FITTING_SHAPES),     # mostly accepted
                   hnp.arrays(DTYPES, SHAPES),
                   hnp.arrays(np.dtype(object), SHAPES, elements=st.integers(-3, 3)))


def _acceptable(x):
    """What the input check must accept: real numbers, finite as float32, N >= 1 samples of
    the model's per-sample shape (or one sample without the batch dimension)."""
    if x.dtype.kind not in "iuf":
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bool(np.isfinite(x.astype(np.float32)).all())
    fits = x.shape == SAMPLE or (x.ndim == 1 + len(SAMPLE) and x.shape[1:] == SAMPLE
                                 and len(x) > 0)
    return finite and fits


@settings(max_examples=250, deadline=None)
@given(ARRAYS)
def test_run_input_check_accepts_real_finite_batches_and_refuses_the_rest(x):
    try:
        batch = cli._input_batch(x, MODEL_INPUT, "x.npy")
    except (cli.UserError, CompileError) as error:
        message = str(error)
        assert message.startswith("x.npy: ") and "\n" not in message
        assert not _acceptable(x), message
        event("refused")
        return
    event("accepted")
    assert _acceptable(x)
    assert batch.dtype == np.float32 and batch.shape[1:] == SAMPLE and len(batch) >= 1
    assert np.isfinite(batch).all()
    assert np.array_equal(batch, x.astype(np.float32).reshape(batch.shape))
