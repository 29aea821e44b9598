"""The Instruction Frame Package (IFP): a compiled program as one self-checking file.

Layout (little-endian, see docs/ifp.md): a fixed header (magic ``VDLAIFP\\0``, format
version, the core hash the program targets, section count, CRC32 of header and section
table), the section table (kind, offset, length, CRC32 per section), then the sections back to
back: code ``(n, 2) <u8``, weight blob, frame table (:data:`~.program.FRAME_DTYPE` raw) and JSON
metadata. Every byte of a valid file is covered by a CRC and the file ends exactly after the
last section, so any corruption is detected.

:func:`loads` validates everything and raises :class:`~.errors.IFPError` with a one-line
message, never another exception, whatever the bytes.

Version 2 added the ``host`` steps of model inputs and outputs (:mod:`.host_steps`); a
version 1 file (which has none) still reads, while a version 1 reader refuses a version 2
file instead of silently skipping, say, a model's final Softmax.
"""

import json
import math
import struct
import zlib

import numpy as np

from vdla import isa

from . import host_steps
from .errors import IFPError
from .program import FRAME_DTYPE, LayerEntry, Program, TensorEntry

__all__ = ["MAGIC", "FORMAT_VERSION", "READ_VERSIONS", "MAX_SEGMENT_BYTES", "dumps", "loads",
           "write_ifp", "read_ifp"]

MAGIC = b"VDLAIFP\0"
FORMAT_VERSION = 2
#: Versions this reader reads: 1 is version 2 without host steps.
READ_VERSIONS = (1, 2)
# magic, version, header bytes, core hash (16 ASCII hex digits), section count, header CRC
_HEADER = struct.Struct("<8sII16sII")
_SECTION = struct.Struct("<IIQQI4x")      # kind, reserved, offset, length, crc32
_KINDS = {1: "code", 2: "weights", 3: "frames", 4: "meta"}
_ORDER = ("code", "weights", "frames", "meta")
_ROLES = ("input", "output", "activation")
_LAYER_KINDS = ("conv", "dense", "pool", "add", "lut", "resize", "convt")
_OPCODE = isa.FIELDS["head"]["opcode"]
_FRAME_INDEX = isa.FIELDS["frame"]["frame"]
_FRAME_LAYER = isa.FIELDS["frame"]["layer"]
#: Largest DRAM segment a program can use: every DMA addresses the segment from a
#: segment-relative byte address held in the LOAD/SAVE ``dram_addr`` field.
MAX_SEGMENT_BYTES = 1 << isa.FIELDS["dma"]["dram_addr"][1]
#: Quantization scales are float32 (ONNX): positive, normal and finite in that type.
_SCALE_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))
_HEX_DIGITS = frozenset("0123456789abcdef")
_KIND_NAMES = {"str": "a printable string", "int": "an integer", "num": "a finite number",
               "list": "a list"}


def _tensor_meta(t):
    meta = {"name": t.name, "shape": [int(v) for v in t.shape], "scale": float(t.scale),
            "zero_point": int(t.zero_point), "onnx_shape": [int(v) for v in t.onnx_shape],
            "offset": int(t.offset), "size": int(t.size), "role": t.role}
    if t.host:          # only where there are steps: other tensors read as in version 1
        meta["host"] = [dict(step) for step in t.host]
    return meta


def _meta(program):
    missing = [t.name for t in program.tensors if t.onnx_shape is None]
    if missing:
        raise IFPError(f"tensor {missing[0]!r} has no ONNX shape")
    tensors = [_tensor_meta(t) for t in program.tensors]
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
        if version not in READ_VERSIONS:
            self.fail(f"format version {version} is not supported (this reader: "
                      f"{', '.join(map(str, READ_VERSIONS))})")
        self.version = version
        if not 0 < count <= 64 or head_size != _HEADER.size + _SECTION.size * count:
            self.fail(f"corrupted header: {count} sections in {head_size} header bytes")
        if len(data) < head_size:
            self.fail(f"truncated: section table ends at byte {head_size} of {len(data)}")
        zeroed = _HEADER.pack(magic, version, head_size, core, count, 0)
        if zlib.crc32(zeroed + data[_HEADER.size:head_size]) != crc:
            self.fail("corrupted header (CRC mismatch)")
        if not set(core.decode("latin-1")) <= _HEX_DIGITS:
            self.fail("corrupted header: core hash is not 16 hex digits")
        self.core_hash = core.decode("ascii")
        sections = {}
        for i in range(count):
            kind, reserved, offset, length, crc = _SECTION.unpack_from(data, _HEADER.size
                                                                       + i * _SECTION.size)
            name = _KINDS.get(kind)
            if name is None:
                self.fail(f"unknown section kind {kind}")
            if reserved:
                self.fail(f"section '{name}': reserved field is {reserved}, not 0")
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
        self.back_to_back(sections, head_size)
        return {name: chunk for name, (_, chunk) in sections.items()}

    def back_to_back(self, sections, head_size):
        """Sections must tile the file after the header: no byte outside a CRC, none shared."""
        end = head_size
        for name, (offset, chunk) in sorted(sections.items(), key=lambda item: item[1][0]):
            if offset != end:
                self.fail(f"section '{name}' starts at byte {offset}, not right after the "
                          f"previous one (byte {end})")
            end = offset + len(chunk)
        if end != len(self.data):
            self.fail(f"{len(self.data) - end} trailing bytes after the last section")

    # JSON type checks -------------------------------------------------------------------
    def get(self, obj, key, kind, where):
        if not isinstance(obj, dict) or key not in obj:
            self.fail(f"metadata: {where}: missing '{key}'")
        value = obj[key]
        # Strings are printable, so that every message naming them stays on one line.
        ok = {"str": isinstance(value, str) and value.isprintable(),
              "int": isinstance(value, int) and not isinstance(value, bool),
              "num": isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value),
              "list": isinstance(value, list)}[kind]
        if not ok:
            self.fail(f"metadata: {where}: '{key}' is not {_KIND_NAMES[kind]}")
        return value

    def int_in(self, obj, key, where, lo, hi, unit=""):
        """An integer field that must lie in ``lo..hi`` (checked before anything uses it)."""
        value = self.get(obj, key, "int", where)
        if not lo <= value <= hi:
            self.fail(f"metadata: {where}: '{key}' {value} is outside {lo}..{hi}{unit}")
        return value

    def elements(self, key, where, dims, most, why):
        """The product of ``dims`` (each >= 1), refused as soon as it exceeds ``most``."""
        count = 1
        for dim in dims:
            count *= dim
            if count > most:
                self.fail(f"metadata: {where}: '{key}' {dims} has more than the {most} "
                          f"elements {why}")
        return count

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
        if not all(isinstance(v, str) and v.isprintable() for v in values):
            self.fail(f"metadata: {where}: '{key}' must be a list of printable strings")
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
            where = f"tensor {i} ({name})"
            if name in seen:
                self.fail(f"metadata: {where}: duplicate name")
            shape = self.ints(t, "shape", where, 1, segment, length=3)
            zp = self.int_in(t, "zero_point", where, -128, 127)
            scale = self.get(t, "scale", "num", where)
            if not _SCALE_RANGE[0] <= scale <= _SCALE_RANGE[1]:
                self.fail(f"metadata: {where}: 'scale' {scale!r} is not a positive float32")
            role = self.get(t, "role", "str", where)
            if role not in _ROLES:
                self.fail(f"metadata: {where}: 'role' {role!r} is not one of "
                          f"{', '.join(_ROLES)}")
            offset = self.int_in(t, "offset", where, 0, segment)
            size = self.int_in(t, "size", where, 0, segment)
            if offset + size > segment:
                self.fail(f"metadata: tensor {name} ({offset}+{size}) lies outside the "
                          f"{segment}-byte segment")
            # One int8 byte per element at least (more with channel padding).
            elements = self.elements("shape", where, shape, size, f"its {size} bytes hold")
            onnx = self.ints(t, "onnx_shape", where, 1, elements)
            if not onnx or self.elements("onnx_shape", where, onnx, elements,
                                         "of its shape") != elements:
                self.fail(f"metadata: {where}: 'onnx_shape' {onnx} does not hold the "
                          f"{elements} elements of shape {shape}")
            host = self.host(t, where, role, tuple(onnx), tuple(shape))
            seen.add(name)
            out.append(TensorEntry(name, tuple(shape), float(scale), zp, tuple(onnx), offset,
                                   size, role, host))
        return out, seen

    def host(self, t, where, role, onnx, shape):
        """The optional host steps of a model input (applied from its ONNX shape) or output
        (applied from its ``(C, H, W)`` shape)."""
        if "host" not in t:
            return ()
        if self.version < 2:
            self.fail(f"metadata: {where}: 'host' needs format version 2, the file is "
                      f"version {self.version}")
        if role == "activation":
            self.fail(f"metadata: {where}: 'host' steps belong to a model input or output")
        try:
            host_steps.check(t["host"], onnx if role == "input" else shape)
        except ValueError as error:
            self.fail(f"metadata: {where}: 'host' {error}")
        return tuple(dict(step) for step in t["host"])

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
            macs = self.int_in(l, "macs", where, 0, math.inf)
            out.append(LayerEntry(self.get(l, "name", "str", where), kind, inputs, output,
                                  deps, macs))
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
        segment = r.int_in(meta, "segment_size", "top level", 1, MAX_SEGMENT_BYTES,
                           " (the reach of a DMA's segment address)")
        if len(sec["weights"]) > segment:
            r.fail(f"weight blob of {len(sec['weights'])} bytes exceeds the {segment}-byte "
                   f"segment")
        tensors, names = r.tensors(meta, segment)
        layers = r.layers(meta, names)
        inputs, outputs = r.strs(meta, "inputs", "top level"), r.strs(meta, "outputs",
                                                                       "top level")
        if not inputs or not outputs:
            r.fail("metadata: a program needs at least one input and one output")
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
