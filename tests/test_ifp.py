"""The IFP file format: round trip, corruption and mismatch handling."""

import dataclasses
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdla.compiler import ifp, static, synthetic
from vdla.compiler.errors import IFPError
from vdla.config import get_config

SMALL = get_config("small")
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _program():
    b = synthetic.IRBuilder("ifp_model", seed=5)
    x = b.input((5, 9, 7))
    y = b.conv(x, 12, 3)
    y = b.add(y, b.conv(y, 12, 1))
    b.output(b.dense(b.pool(y, "max", 2), 10))
    return static.compile_graph(b.graph(), SMALL)


PROGRAM = _program()
DATA = ifp.dumps(PROGRAM)


def _same(a, b):
    assert a.model == b.model and a.config == b.config and a.core_hash == b.core_hash
    assert a.tensors == b.tensors and a.layers == b.layers
    assert a.inputs == b.inputs and a.outputs == b.outputs
    assert a.segment_size == b.segment_size and bytes(a.weights) == bytes(b.weights)
    assert np.array_equal(a.frames, b.frames) and a.frames.dtype == b.frames.dtype
    assert np.array_equal(a.code, b.code) and a.code.dtype == np.uint64


def test_round_trip(tmp_path):
    _same(PROGRAM, ifp.loads(DATA, SMALL))
    path = tmp_path / "model.ifp"
    ifp.write_ifp(PROGRAM, path)
    _same(PROGRAM, ifp.read_ifp(path, SMALL))
    assert ifp.dumps(ifp.loads(DATA)) == DATA


def test_header_fields():
    magic, version, _, core, count, _ = struct.unpack_from("<8sII16sII", DATA)
    assert magic == b"VDLAIFP\0" and version == ifp.FORMAT_VERSION and count == 4
    assert core.decode() == SMALL.core_hash()


def test_config_mismatch_names_both():
    with pytest.raises(IFPError, match=r"'small'.*'u200'"):
        ifp.loads(DATA, get_config("u200"))


def test_truncated_message(tmp_path):
    path = tmp_path / "model.ifp"
    path.write_bytes(DATA[:-100])
    with pytest.raises(IFPError, match=r"model\.ifp: truncated: section 'meta' ends at byte "
                                       rf"{len(DATA)} of {len(DATA) - 100}"):
        ifp.read_ifp(path)


def test_missing_file(tmp_path):
    with pytest.raises(IFPError, match="cannot read"):
        ifp.read_ifp(tmp_path / "nothing.ifp")


def _rebuild(meta=None, frames=None):
    """A well-formed file (valid CRCs) around altered metadata / frame table."""
    program = dataclasses.replace(PROGRAM, frames=PROGRAM.frames if frames is None else frames)
    data = ifp.dumps(program)
    if meta is None:
        return data
    body = json.loads(data[_meta_offset(data):])
    meta(body)
    return _with_meta(data, json.dumps(body).encode())


def _meta_offset(data):
    off = struct.calcsize("<8sII16sII") + 3 * 32
    return struct.unpack_from("<IIQQI4x", data, off)[2]


def _with_meta(data, meta):
    """``data`` with its metadata section (the last one) replaced and every CRC redone."""
    head = struct.calcsize("<8sII16sII")
    end = head + 4 * 32
    start = _meta_offset(data)
    table = bytearray(data[head:end])
    struct.pack_into("<IIQQI4x", table, 3 * 32, 4, 0, start, len(meta), zlib.crc32(meta))
    magic, version, size, core, count, _ = struct.unpack_from("<8sII16sII", data)
    crc = zlib.crc32(struct.pack("<8sII16sII", magic, version, size, core, count, 0) + table)
    return (struct.pack("<8sII16sII", magic, version, size, core, count, crc) + table
            + data[end:start] + meta)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["tensors"][0].update(offset=m["segment_size"]), "outside"),
    (lambda m: m["tensors"][0].update(shape=[1, 2]), "shape"),
    (lambda m: m["layers"][0].update(deps=[3]), "deps"),
    (lambda m: m["layers"][1].update(output="nowhere"), "unknown kind or tensor"),
    (lambda m: m.update(segment_size=10), "exceeds"),
    (lambda m: m.update(core_hash="0" * 16), "differs"),
    (lambda m: m.pop("layers"), "missing 'layers'"),
    (lambda m: m["tensors"][0].update(scale="big"), "scale"),
    (lambda m: m.update(segment_size=2 ** 40), r"'segment_size' 1099511627776 is outside "
                                               r"1\.\.4294967296"),
    (lambda m: m.update(segment_size=2 ** 63), "'segment_size' 9223372036854775808"),
    (lambda m: m.update(segment_size=True), "'segment_size' is not an integer"),
    (lambda m: m["tensors"][0].update(onnx_shape=None), "'onnx_shape' is not a list"),
    (lambda m: m["tensors"][0].update(onnx_shape=[1, 2, 3, 4]), "'onnx_shape'.*elements"),
    (lambda m: m["tensors"][0].update(scale=0.0), "'scale' 0.0 is not a positive float32"),
    (lambda m: m["tensors"][0].update(scale=1e300), "not a positive float32"),
    (lambda m: m["tensors"][0].update(shape=[2 ** 20, 2 ** 20, 2 ** 20]), "'shape'"),
    (lambda m: m["tensors"][0].update(zero_point=128), r"'zero_point' 128 is outside"),
    (lambda m: m["tensors"][0].update(name="in\nput"), "printable"),
    (lambda m: m.update(inputs=[]), "at least one input"),
    (lambda m: m["layers"][0].update(macs=-1), "'macs' -1 is outside"),
])
def test_metadata_validation(edit, message):
    with pytest.raises(IFPError, match=message):
        ifp.loads(_rebuild(meta=edit))


def _with_table_row(data, index, **fields):
    """``data`` with fields of section-table row ``index`` changed and the header CRC redone."""
    head, table_at = struct.Struct("<8sII16sII"), struct.calcsize("<8sII16sII")
    row = dict(zip(("kind", "reserved", "offset", "length", "crc"),
                   struct.unpack_from("<IIQQI4x", data, table_at + 32 * index)))
    row.update(fields)
    out = bytearray(data)
    struct.pack_into("<IIQQI4x", out, table_at + 32 * index, *row.values())
    magic, version, size, core, count, _ = head.unpack_from(out)
    crc = zlib.crc32(head.pack(magic, version, size, core, count, 0) + out[table_at:size])
    head.pack_into(out, 0, magic, version, size, core, count, crc)
    return bytes(out)


def test_section_table_validation():
    with pytest.raises(IFPError, match="reserved field is 7"):
        ifp.loads(_with_table_row(DATA, 0, reserved=7))
    # The weights section read again from the code's bytes (its CRC made to match): sections
    # must tile the file, each right after the previous one.
    code_offset = struct.unpack_from("<IIQQI4x", DATA, 40)[2]
    weights = struct.unpack_from("<IIQQI4x", DATA, 72)
    chunk = DATA[code_offset:code_offset + weights[3]]
    with pytest.raises(IFPError, match="not right after the previous one"):
        ifp.loads(_with_table_row(DATA, 1, offset=code_offset, crc=zlib.crc32(chunk)))


def test_frame_table_validation():
    frames = PROGRAM.frames.copy()
    frames["count"][0] += 1
    with pytest.raises(IFPError, match="frame table"):
        ifp.loads(_rebuild(frames=frames))
    frames = PROGRAM.frames.copy()
    frames["layer"][0] = len(PROGRAM.layers)
    with pytest.raises(IFPError, match="frame table"):
        ifp.loads(_rebuild(frames=frames))


def test_not_json():
    with pytest.raises(IFPError, match="JSON"):
        ifp.loads(_with_meta(DATA, b"{not json"))
    with pytest.raises(IFPError, match="non-finite"):
        ifp.loads(_with_meta(DATA, b'{"a": NaN}'))


@FUZZ
@given(st.integers(0, len(DATA) - 1))
def test_fuzz_truncation(cut):
    with pytest.raises(IFPError):
        ifp.loads(DATA[:cut])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(DATA) - 1), st.integers(1, 255)),
                min_size=1, max_size=4))
def test_fuzz_byte_flips(flips):
    data = bytearray(DATA)
    for pos, xor in flips:
        data[pos] ^= xor
    if bytes(data) == DATA:
        return
    with pytest.raises(IFPError):
        ifp.loads(bytes(data))


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_garbage(junk, with_magic):
    data = (b"VDLAIFP\0" + junk) if with_magic else junk
    with pytest.raises(IFPError):
        ifp.loads(data)


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                         max_size=4),
                    max_leaves=12))
def test_fuzz_metadata(junk):
    # Well-formed container with hostile JSON: still only IFPError.
    body = json.loads(DATA[_meta_offset(DATA):])
    if isinstance(junk, dict):
        body.update(junk)
    else:
        body[sorted(body)[zlib.crc32(repr(junk).encode()) % len(body)]] = junk
    try:
        ifp.loads(_with_meta(DATA, json.dumps(body).encode()))
    except IFPError:
        pass
