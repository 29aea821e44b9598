"""Scenario files: which tenants share the accelerator, with which models, inputs and events.

:func:`load_scenario` reads a TOML file (format: docs/scenarios.md), checks every key, compiles
the models, makes the inputs and lays the tenants out (core masks, instruction-memory regions,
DRAM segments). Every problem is a :class:`ScenarioError` whose one-line message names the
file and the key. Paths in the file are relative to the file.
"""

import dataclasses
import pathlib
import tempfile
import zipfile

import numpy as np

from vdla import isa
from vdla.compiler.errors import CompileError
from vdla.compiler.program import Allocation
from vdla.compiler.quantize import real_float32
from vdla.config import Config, ConfigError, get_config

from .driver import region_words
from .host import quantize_input

__all__ = ["ScenarioError", "Scenario", "TenantSpec", "EventSpec", "load_scenario",
           "ACTIONS", "INJECTIONS", "SEG_ALIGN"]

ACTIONS = ("reallocate", "stop", "abort", "start")
#: Fault injection: what a tenant's ``inject`` does to its compiled program.
INJECTIONS = {
    "segment": "the last SAVE writes just past the end of the tenant's DRAM segment",
    "illegal": "the first instruction of the last frame gets the INVALID opcode",
}
#: Segments start on 4 KiB boundaries, back to back, so a DMA past a segment's end would
#: land in the next tenant's segment.
SEG_ALIGN = 4096
_REQUIRED = object()
_KINDS = {int: "an integer", str: "a string", list: "an array of tables"}
_TOP_KEYS = ("config", "description", "tenant", "event")
_TENANT_KEYS = ("name", "model", "calib", "cores", "core_mask", "inferences", "seed", "inputs",
                "delay", "inject")
_EVENT_KEYS = ("tenant", "after", "action", "target", "cores", "core_mask")


class ScenarioError(Exception):
    """A scenario the runner cannot run (one line naming the file and the key)."""


@dataclasses.dataclass
class TenantSpec:
    """One tenant: its model, golden reference, allocation and inputs."""
    name: str
    index: int
    model: str                  # as written in the file
    program: object             # the Program it runs (fault injection applied)
    graph: object               # IR graph for the golden check (None for an .ifp)
    reference: object           # the Program before fault injection
    cores: int
    allocation: Allocation
    inferences: int
    samples: list               # [{input name: int8 (C, H, W)}]; inference i uses i % len
    delay: int = 0
    inject: str = None

    def sample(self, i):
        return self.samples[i % len(self.samples)]


@dataclasses.dataclass
class EventSpec:
    number: int                 # position in the file
    tenant: str                 # after this tenant's ``after``-th inference...
    after: int
    action: str                 # ...do this to ``target``
    target: str
    cores: int = None
    core_mask: int = None

    def describe(self):
        what = f"{self.action} {self.target}"
        if self.action == "reallocate":
            what += f" to {self.cores} core{'s' if self.cores > 1 else ''}"
        return f"event[{self.number}] (after {self.tenant}'s inference {self.after}): {what}"


@dataclasses.dataclass
class Scenario:
    path: pathlib.Path
    config: object
    tenants: list               # [TenantSpec], index = tenant register block
    events: list                # [EventSpec]
    dram_bytes: int
    description: str = ""


class _Table:
    """One TOML table with the key checks of its place in the file (``where``)."""

    def __init__(self, file, where, table, known):
        self.file, self.where, self.table = file, where, table
        if not isinstance(table, dict):
            self.fail(None, "expected a table")
        for key in table:
            if key not in known:
                self.fail(key, f"unknown key (known: {', '.join(known)})")

    def fail(self, key, message):
        place = self.where.rstrip(".") if key is None else f"{self.where}{key}"
        raise ScenarioError(f"{self.file}: {place}: {message}")

    def get(self, key, kind, default=_REQUIRED, lo=None, hi=None, choices=None):
        if key not in self.table:
            if default is _REQUIRED:
                self.fail(key, "missing")
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            self.fail(key, f"expected {_KINDS[kind]}, not {value!r}")
        if lo is not None and value < lo or hi is not None and value > hi:
            self.fail(key, f"{value} is outside {lo}..{'' if hi is None else hi}")
        if choices is not None and value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def path(self, key, suffixes):
        value = self.get(key, str)
        path = self.file.parent / value
        if path.suffix not in suffixes:
            self.fail(key, f"{value}: expected a {' or '.join(suffixes)} file")
        if not path.is_file():
            self.fail(key, f"{value}: no such file")
        return path

    def mask(self, key, cores, config):
        mask = self.get(key, int, None, lo=1)
        if mask is not None:
            if mask >> config.cores:
                self.fail(key, f"0x{mask:x} names cores outside the pool of {config.cores}")
            if bin(mask).count("1") != cores:
                self.fail(key, f"0x{mask:x} holds {bin(mask).count('1')} cores, cores = {cores}")
        return mask


def _read_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:
        raise ScenarioError(f"{path}: reading scenario files needs Python 3.11 (tomllib)") \
            from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except OSError as error:
        raise ScenarioError(f"{path}: {error.strerror}") from None
    except RecursionError:                  # tomllib parses nested arrays recursively
        raise ScenarioError(f"{path}: not valid TOML (nested too deeply)") from None
    except UnicodeDecodeError as error:     # TOML is UTF-8 text
        raise ScenarioError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} "
                            f"at offset {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML ({error})") from None


def _compile(t, config):
    """Program and golden graph of the tenant's model (an .onnx compiled here, or an .ifp)."""
    from vdla.compiler import ifp
    from vdla.compiler.frontend import load_model
    from vdla.compiler.static import compile_graph
    path = t.path("model", (".onnx", ".ifp"))
    if "calib" in t.table:
        _check_float_model(t, path)
    try:
        if path.suffix == ".ifp":
            return ifp.read_ifp(path, config), None
        if "calib" in t.table:
            from vdla.compiler.quantize import quantize_model
            calib = _load_array(t, "calib", (".npy", ".npz"))
            with tempfile.TemporaryDirectory(prefix="vdla-scenario-") as tmp:
                qdq = pathlib.Path(tmp) / f"{path.stem}_qdq.onnx"
                graph = load_model(quantize_model(path, calib, qdq), name=path.stem)
        else:
            graph = load_model(path)
        return compile_graph(graph, config), graph
    except (CompileError, ValueError) as error:
        t.fail("model", str(error))


def _check_float_model(t, path):
    """``calib`` quantizes a float .onnx model: refuse it beside a compiled or QDQ model."""
    from vdla.compiler.onnx_graph import load_proto
    from vdla.compiler.quantize import refuse_quantized
    if path.suffix != ".onnx":
        t.fail("calib", f"model {t.table['model']} is compiled already; calib goes with a "
                        f"float .onnx model")
    try:
        refuse_quantized(load_proto(path), f"model {t.table['model']}")
    except CompileError as error:
        t.fail("calib", str(error))


def _load_array(t, key, suffixes):
    """The .npy array (or the .npz arrays, as a dict) named by ``key``."""
    path = t.path(key, suffixes)
    try:
        # Memory-mapped: an .npy header claiming more data than the file holds is refused,
        # not allocated (an .npz member is read whole: hence MemoryError below).
        with np.errstate(over="ignore"):
            loaded = np.load(path, mmap_mode="r", allow_pickle=False)
        return dict(loaded) if path.suffix == ".npz" else np.array(loaded)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else \
            type(error).__name__
        t.fail(key, f"{path.name}: not a readable array file ({detail})")


def _inputs(t, program, count):
    """The tenant's input samples: random int8 from ``seed``, or read from ``inputs``."""
    if "inputs" not in t.table:
        rng = np.random.default_rng(t.get("seed", int, t.default_seed, lo=0))
        return [{name: rng.integers(-128, 128, program.tensor(name).shape, dtype=np.int8)
                 for name in program.inputs} for _ in range(count)]
    if "seed" in t.table:
        t.fail("seed", "give either seed (random inputs) or inputs (a file), not both")
    path, loaded = t.path("inputs", (".npy", ".npz")), _load_array(t, "inputs", (".npy", ".npz"))
    arrays = loaded if path.suffix == ".npz" else {program.inputs[0]: loaded}
    if path.suffix == ".npy" and len(program.inputs) != 1:
        t.fail("inputs", f"the model has {len(program.inputs)} inputs: give an .npz keyed "
                         f"by input name")
    extra = [name for name in arrays if name not in program.inputs]
    if extra:
        t.fail("inputs", f"{path.name}: array {extra[0]!r} is not a model input (the inputs: "
                         f"{', '.join(repr(n) for n in program.inputs)})")
    per_input = {}
    for name in program.inputs:
        if name not in arrays:
            t.fail("inputs", f"{path.name} has no array {name!r}")
        entry, a = program.tensor(name), arrays[name]
        if a.dtype == np.int8:
            shape = tuple(entry.shape)
            batch = a[None] if a.shape == shape else a
            if batch.shape[1:] != shape or not len(batch):
                t.fail("inputs", f"{name}: int8 shape {a.shape} is not {shape} or (N, *{shape}) "
                                 f"with N >= 1")
            per_input[name] = list(batch)
        else:
            try:
                a = real_float32(a, name)
            except CompileError as error:
                t.fail("inputs", str(error))
            shape = tuple(entry.onnx_shape)
            batch = a[None] if a.shape == shape[1:] else a
            if batch.ndim < 2 or batch.shape[1:] != shape[1:] or not len(batch):
                t.fail("inputs", f"{name}: shape {a.shape} does not match the model input "
                                 f"{shape} (a batch of any size is accepted)")
            # Values far beyond the int8 range saturate (ONNX QuantizeLinear); the float32
            # overflow of x / scale on the way there is expected.
            with np.errstate(over="ignore"):
                per_input[name] = [quantize_input(entry, s) for s in batch]
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        t.fail("inputs", f"{path.name}: the arrays hold different numbers of samples "
                         f"({', '.join(f'{n!r}: {c}' for n, c in counts.items())})")
    n = min(counts.values())
    return [{name: per_input[name][i] for name in program.inputs} for i in range(n)]


def _inject(program, kind):
    """A copy of ``program`` with the fault ``kind`` of :data:`INJECTIONS` built in."""
    code = program.code.copy()
    opcode_at, opcode_width, _ = isa.FIELDS["head"]["opcode"]
    words = [int(lo) | int(hi) << 64 for lo, hi in code]
    opcodes = [w >> opcode_at & (1 << opcode_width) - 1 for w in words]
    if kind == "segment":
        at = max(i for i, op in enumerate(opcodes) if op == isa.Opcode.SAVE.value)
        off, width, _ = isa.FIELDS["dma"]["dram_addr"]
        past = -(-program.segment_size // SEG_ALIGN) * SEG_ALIGN
        word = words[at] & ~((1 << width) - 1 << off)
        word |= isa.pack_fields(isa.FIELDS["dma"], {"dram_addr": past})
    else:
        at = int(program.frames["first"][-1]) + 1
        word = words[at] & ~((1 << opcode_width) - 1 << opcode_at)
        word |= isa.Opcode.INVALID.value << opcode_at
    code[at] = (word & (1 << 64) - 1, word >> 64)
    return dataclasses.replace(program, code=code)


def _tenant(file, index, table, config, programs):
    name = table.get("name") if isinstance(table, dict) else None
    where = f"tenant[{index}] ({name})." if isinstance(name, str) else f"tenant[{index}]."
    t = _Table(file, where, table, _TENANT_KEYS)
    name = t.get("name", str)
    t.default_seed = index
    key = (t.get("model", str), table.get("calib"))
    if key not in programs:
        programs[key] = _compile(t, config)
    reference, graph = programs[key]
    try:
        region = region_words(reference, config)
    except CompileError as error:
        t.fail("model", str(error))
    inject = t.get("inject", str, None, choices=tuple(INJECTIONS))
    try:
        program = _inject(reference, inject) if inject else reference
    except ValueError as error:         # no SAVE, or an address the field cannot hold
        t.fail("inject", str(error))
    cores = t.get("cores", int, lo=1)
    if cores > config.cores:
        t.fail("cores", f"{cores} exceeds the {config.cores} cores of configuration "
                        f"{config.name}")
    inferences = t.get("inferences", int, 1, lo=1)
    spec = TenantSpec(name=name, index=index, model=key[0], reference=reference, graph=graph,
                      program=program, cores=cores,
                      allocation=Allocation(cores, t.mask("core_mask", cores, config),
                                            prog_size=region),
                      inferences=inferences, samples=_inputs(t, reference, inferences),
                      delay=t.get("delay", int, 0, lo=0), inject=inject)
    return t, spec


def _layout(file, tables, specs, config):
    """Core masks (explicit ones first, then the lowest free cores), regions, segments."""
    taken = 0
    for t, spec in zip(tables, specs):
        mask = spec.allocation.core_mask
        if mask is not None and mask & taken:
            t.fail("core_mask", f"0x{mask:x} overlaps another tenant's cores")
        taken |= mask or 0
    for t, spec in zip(tables, specs):
        if spec.allocation.core_mask is None:
            free = [c for c in range(config.cores) if not taken >> c & 1]
            if len(free) < spec.cores:
                t.fail("cores", f"{spec.cores} cores asked, only {len(free)} of the "
                                f"{config.cores} are left")
            spec.allocation.core_mask = sum(1 << c for c in free[:spec.cores])
            taken |= spec.allocation.core_mask
    prog, seg = 0, 0
    for spec in specs:
        words = spec.allocation.prog_size
        size = -(-spec.program.segment_size // SEG_ALIGN) * SEG_ALIGN
        spec.allocation = dataclasses.replace(spec.allocation, prog_base=prog, prog_size=words,
                                              seg_base=seg, seg_size=size)
        prog, seg = prog + words, seg + size
    if prog > config.imem_depth:
        raise ScenarioError(f"{file}: tenant: the programs need {prog} instruction words "
                            f"(each sized for the whole pool), configuration {config.name} "
                            f"has {config.imem_depth}")
    return seg


def _event(file, number, table, config, specs):
    e = _Table(file, f"event[{number}].", table, _EVENT_KEYS)
    names = {s.name: s for s in specs}
    tenant = e.get("tenant", str, choices=tuple(names))
    after = e.get("after", int, lo=1, hi=names[tenant].inferences)
    action = e.get("action", str, choices=ACTIONS)
    target = e.get("target", str, tenant, choices=tuple(names))
    cores = mask = None
    if action == "reallocate":
        cores = e.get("cores", int, lo=1, hi=config.cores)
        mask = e.mask("core_mask", cores, config)
    else:
        for key in ("cores", "core_mask"):
            if key in table:
                e.fail(key, f"only a reallocate event takes {key}")
    return EventSpec(number, tenant, after, action, target, cores, mask)


def load_scenario(path, config_name=None):
    """Read, check and prepare the scenario at ``path`` (``config_name``, a name or a
    :class:`~vdla.config.Config`, overrides the file's ``config``); return a
    :class:`Scenario`."""
    path = pathlib.Path(path)
    top = _Table(path, "", _read_toml(path), _TOP_KEYS)
    try:
        config = (config_name if isinstance(config_name, Config) else
                  get_config(config_name or top.get("config", str, "small")))
    except ConfigError as error:
        top.fail("config", str(error))
    tables = top.get("tenant", list)
    if not tables or len(tables) > config.tenants:
        top.fail("tenant", f"{len(tables)} tenants; configuration {config.name} has 1.."
                           f"{config.tenants}")
    programs, checked, specs = {}, [], []
    for index, table in enumerate(tables):
        t, spec = _tenant(path, index, table, config, programs)
        if spec.name in {s.name for s in specs}:
            t.fail("name", f"{spec.name!r} is used by another tenant")
        checked.append(t)
        specs.append(spec)
    dram = _layout(path, checked, specs, config)
    events = [_event(path, n, table, config, specs)
              for n, table in enumerate(top.get("event", list, []))]
    return Scenario(path, config, specs, events, dram, top.get("description", str, ""))
