"""The Instruction Frame Package (IFP): a compiled program as one self-checking file.

Layout (little-endian, see docs/ifp.md): a fixed header (magic ``VDLAIFP\\0``, format
version, the core hash the program targets, section count, CRC32 of header and section
table), the section table (kind, offset, length, CRC32 per section), then the sections back to
back: code ``(n, 2) <u8``, weight blob, frame table (:data:`~.program.FRAME_DTYPE` raw) and JSON
metadata. Every byte of a valid file is covered by a CRC and the file ends exactly after the
last section, so any corruption is detected.

:func:`loads` validates everything and raises :class:`~.errors.IFPError` with a one-line
message, never another exception, whatever the bytes.
"""

import json
import math
import struct
import zlib

import numpy as np

from vdla import isa

from .errors import IFPError
from .program import FRAME_DTYPE, LayerEntry, Program, TensorEntry

__all__ = ["MAGIC", "FORMAT_VERSION", "dumps", "loads", "write_ifp", "read_ifp"]

MAGIC = b"VDLAIFP\0"
FORMAT_VERSION = 1
# magic, version, header bytes, core hash (16 ASCII hex digits), section count, header CRC
_HEADER = struct.Struct("<8sII16sII")
_SECTION = struct.Struct("<IIQQI4x")      # kind, reserved, offset, length, crc32
_KINDS = {1: "code", 2: "weights", 3: "frames", 4: "meta"}
_ORDER = ("code", "weights", "frames", "meta")
_ROLES = ("input", "output", "activation")
_LAYER_KINDS = ("conv", "dense", "pool", "add")
_OPCODE = isa.FIELDS["head"]["opcode"]
_FRAME_INDEX = isa.FIELDS["frame"]["frame"]
_FRAME_LAYER = isa.FIELDS["frame"]["layer"]


def _meta(program):
    tensors = [{"name": t.name, "shape": [int(v) for v in t.shape], "scale": float(t.scale),
                "zero_point": int(t.zero_point),
                "onnx_shape": None if t.onnx_shape is None else [int(v) for v in t.onnx_shape],
                "offset": int(t.offset), "size": int(t.size), "role": t.role}
               for t in program.tensors]
    layers = [{"name": l.name, "kind": l.kind, "inputs": list(l.inputs), "output": l.output,
               "deps": [int(d) for d in l.deps], "macs": int(l.macs)} for l in program.layers]
    return {"model": program.model, "config": program.config, "core_hash": program.core_hash,
            "segment_size": int(program.segment_size), "inputs": list(program.inputs),
            "outputs": list(program.outputs), "tensors": tensors, "layers": layers}


def dumps(program):
    """Serialize a :class:`Program` to IFP bytes."""
    code = np.ascontiguousarray(program.code, np.uint64).reshape(-1, 2).astype("<u8")
    frames = np.ascontiguousarray(program.frames, FRAME_DTYPE)
    body = {"code": code.tobytes(), "weights": bytes(program.weights),
            "frames": frames.tobytes(),
            "meta": json.dumps(_meta(program), sort_keys=True, allow_nan=False).encode()}
    kind_of = {name: kind for kind, name in _KINDS.items()}
    head_size = _HEADER.size + _SECTION.size * len(_ORDER)
    table, offset = b"", head_size
    for name in _ORDER:
        data = body[name]
        table += _SECTION.pack(kind_of[name], 0, offset, len(data), zlib.crc32(data))
        offset += len(data)
    core = program.core_hash.encode("ascii")
    if len(core) != 16:
        raise IFPError(f"core hash {program.core_hash!r} is not 16 characters")
    crc = zlib.crc32(_HEADER.pack(MAGIC, FORMAT_VERSION, head_size, core, len(_ORDER), 0)
                     + table)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, head_size, core, len(_ORDER), crc)
    return head + table + b"".join(body[name] for name in _ORDER)


def write_ifp(program, path):
    """Write ``program`` to ``path``."""
    with open(path, "wb") as f:
        f.write(dumps(program))


def read_ifp(path, config=None):
    """Read and validate an IFP file (see :func:`loads`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise IFPError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return loads(data, config, name=str(path))


class _Reader:
    """Validation of one byte string; every failure is an IFPError prefixed by ``name``."""

    def __init__(self, data, name):
        self.data, self.name = data, name

    def fail(self, what):
        raise IFPError(f"{self.name}: {what}")

    def header(self):
        data = self.data
        if len(data) < _HEADER.size:
            self.fail(f"truncated: {len(data)} bytes, a header needs {_HEADER.size}")
        magic, version, head_size, core, count, crc = _HEADER.unpack_from(data)
        if magic != MAGIC:
            self.fail("not an instruction frame package (bad magic)")
        if version != FORMAT_VERSION:
            self.fail(f"format version {version} is not supported (this reader: "
                      f"{FORMAT_VERSION})")
        if not 0 < count <= 64 or head_size != _HEADER.size + _SECTION.size * count:
            self.fail(f"corrupted header: {count} sections in {head_size} header bytes")
        if len(data) < head_size:
            self.fail(f"truncated: section table ends at byte {head_size} of {len(data)}")
        zeroed = _HEADER.pack(magic, version, head_size, core, count, 0)
        if zlib.crc32(zeroed + data[_HEADER.size:head_size]) != crc:
            self.fail("corrupted header (CRC mismatch)")
        try:
            self.core_hash = core.decode("ascii")
        except UnicodeDecodeError:
            self.fail("corrupted header: core hash is not ASCII")
        sections = {}
        for i in range(count):
            kind, _, offset, length, crc = _SECTION.unpack_from(data, _HEADER.size
                                                                + i * _SECTION.size)
            name = _KINDS.get(kind)
            if name is None:
                self.fail(f"unknown section kind {kind}")
            if name in sections:
                self.fail(f"section '{name}' appears twice")
            if offset < head_size or offset + length > len(data):
                self.fail(f"truncated: section '{name}' ends at byte {offset + length} of "
                          f"{len(data)}")
            chunk = data[offset:offset + length]
            if zlib.crc32(chunk) != crc:
                self.fail(f"section '{name}' is corrupted (CRC mismatch)")
            sections[name] = (offset, chunk)
        for name in _ORDER:
            if name not in sections:
                self.fail(f"section '{name}' is missing")
        end = max(off + len(chunk) for off, chunk in sections.values())
        if end != len(data):
            self.fail(f"{len(data) - end} trailing bytes after the last section")
        return {name: chunk for name, (_, chunk) in sections.items()}

    # JSON type checks -------------------------------------------------------------------
    def get(self, obj, key, kind, where):
        if not isinstance(obj, dict) or key not in obj:
            self.fail(f"metadata: {where}: missing '{key}'")
        value = obj[key]
        ok = {"str": isinstance(value, str),
              "int": isinstance(value, int) and not isinstance(value, bool),
              "num": isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value),
              "list": isinstance(value, list)}[kind]
        if not ok:
            self.fail(f"metadata: {where}: '{key}' is not a {kind}")
        return value

    def ints(self, obj, key, where, lo=0, hi=None, length=None):
        values = self.get(obj, key, "list", where)
        if length is not None and len(values) != length:
            self.fail(f"metadata: {where}: '{key}' needs {length} entries")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None
                                                                          and v > hi):
                self.fail(f"metadata: {where}: '{key}' has an invalid entry {v!r}")
        return values

    def strs(self, obj, key, where):
        values = self.get(obj, key, "list", where)
        if not all(isinstance(v, str) for v in values):
            self.fail(f"metadata: {where}: '{key}' must be a list of strings")
        return values

    def meta(self, chunk):
        try:
            meta = json.loads(chunk.decode("utf-8"), parse_constant=lambda c: self.fail(
                f"metadata: non-finite number {c}"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self.fail(f"metadata is not valid JSON: {str(exc).splitlines()[0][:80]}")
        if not isinstance(meta, dict):
            self.fail("metadata is not a JSON object")
        return meta

    def tensors(self, meta, segment):
        out, seen = [], set()
        for i, t in enumerate(self.get(meta, "tensors", "list", "top level")):
            where = f"tensor {i}"
            name = self.get(t, "name", "str", where)
            shape = self.ints(t, "shape", where, 1, length=3)
            zp = self.get(t, "zero_point", "int", where)
            onnx = t.get("onnx_shape") if isinstance(t, dict) else None
            if onnx is not None:
                onnx = tuple(self.ints(t, "onnx_shape", where))
            offset = self.get(t, "offset", "int", where)
            size = self.get(t, "size", "int", where)
            role = self.get(t, "role", "str", where)
            if name in seen or not -128 <= zp <= 127 or role not in _ROLES:
                self.fail(f"metadata: {where} ({name}): duplicate name, zero point or role")
            if offset < 0 or size < 0 or offset + size > segment:
                self.fail(f"metadata: tensor {name} ({offset}+{size}) lies outside the "
                          f"{segment}-byte segment")
            seen.add(name)
            out.append(TensorEntry(name, tuple(shape), float(self.get(t, "scale", "num", where)),
                                   zp, onnx, offset, size, role))
        return out, seen

    def layers(self, meta, names):
        out = []
        for i, l in enumerate(self.get(meta, "layers", "list", "top level")):
            where = f"layer {i}"
            kind = self.get(l, "kind", "str", where)
            inputs = self.strs(l, "inputs", where)
            output = self.get(l, "output", "str", where)
            deps = self.ints(l, "deps", where, 0, i - 1)
            if kind not in _LAYER_KINDS or not set(inputs + [output]) <= names:
                self.fail(f"metadata: {where}: unknown kind or tensor")
            out.append(LayerEntry(self.get(l, "name", "str", where), kind, inputs, output,
                                  deps, self.get(l, "macs", "int", where)))
        return out

    def frames(self, chunk, n_layers, code):
        if len(chunk) % FRAME_DTYPE.itemsize:
            self.fail(f"frame table of {len(chunk)} bytes is not whole rows")
        frames = np.frombuffer(chunk, FRAME_DTYPE).copy()
        n = len(frames)
        first = frames["first"].astype(np.int64)
        count = frames["count"].astype(np.int64)
        layer = frames["layer"].astype(np.int64)
        if n and (np.any(layer >= n_layers) or np.any(np.diff(layer) < 0)):
            self.fail("frame table: layers out of range or not in order")
        if np.any(count < 1) or np.any(first + count > len(code)):
            self.fail(f"frame table: a frame lies outside the {len(code)}-word code")
        expect = np.concatenate([[0], np.cumsum(count)[:-1]]) if n else first
        if np.any(first != expect) or int(count.sum()) != len(code):
            self.fail("frame table: frames are not back to back over the code")
        if n:
            lo = code[first, 0]
            op = (lo >> np.uint64(_OPCODE[0])) & np.uint64((1 << _OPCODE[1]) - 1)
            idx = (lo >> np.uint64(_FRAME_INDEX[0])) & np.uint64((1 << _FRAME_INDEX[1]) - 1)
            lay = (lo >> np.uint64(_FRAME_LAYER[0])) & np.uint64((1 << _FRAME_LAYER[1]) - 1)
            if (np.any(op != isa.Opcode.FRAME.value) or np.any(idx != np.arange(n))
                    or np.any(lay != layer)):
                self.fail("frame table: a frame does not start with its FRAME instruction")
        return frames


def loads(data, config=None, name="<bytes>"):
    """Parse and validate IFP bytes into a :class:`Program`.

    With ``config``, a program compiled for another core configuration is refused.
    """
    r = _Reader(data, name)
    try:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            r.fail(f"expected bytes, not {type(data).__name__}")
        r.data = data = bytes(data)
        sec = r.header()
        meta = r.meta(sec["meta"])
        core_hash = r.get(meta, "core_hash", "str", "top level")
        if core_hash != r.core_hash:
            r.fail(f"metadata core hash {core_hash!r} differs from the header's "
                   f"{r.core_hash!r}")
        segment = r.get(meta, "segment_size", "int", "top level")
        if len(sec["weights"]) > segment:
            r.fail(f"weight blob of {len(sec['weights'])} bytes exceeds the {segment}-byte "
                   f"segment")
        tensors, names = r.tensors(meta, segment)
        layers = r.layers(meta, names)
        inputs, outputs = r.strs(meta, "inputs", "top level"), r.strs(meta, "outputs",
                                                                       "top level")
        if not set(inputs + outputs) <= names:
            r.fail("metadata: an input or output names no tensor")
        if len(sec["code"]) % 16:
            r.fail(f"code section of {len(sec['code'])} bytes is not whole 16-byte words")
        code = np.frombuffer(sec["code"], "<u8").reshape(-1, 2).astype(np.uint64)
        frames = r.frames(sec["frames"], len(layers), code)
        model = r.get(meta, "model", "str", "top level")
        cfg_name = r.get(meta, "config", "str", "top level")
    except IFPError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error,
            RecursionError, MemoryError) as exc:        # a check missed above
        raise IFPError(f"{name}: malformed package: {type(exc).__name__}") from None
    if config is not None and config.core_hash() != core_hash:
        raise IFPError(f"{name}: compiled for configuration '{cfg_name}' (core hash "
                       f"{core_hash}), not for '{config.name}' (core hash "
                       f"{config.core_hash()})")
    return Program(model=model, config=cfg_name, core_hash=core_hash, tensors=tensors,
                   layers=layers, frames=frames, code=code, weights=sec["weights"],
                   segment_size=segment, inputs=inputs, outputs=outputs)
