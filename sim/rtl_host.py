"""Host driver over the Verilator-built single-core top (:class:`~vdla.hw.core_top.CoreTop`).

The RTL counterpart of :mod:`vdla.sim.host`: the same linked image, the same DRAM segment
layout (weights at segment offset 0, inputs and outputs at their
:class:`~vdla.compiler.program.TensorEntry` offsets in the blocked layout), run by the
gateware instead of the golden model.

CoreTop is built once per configuration (:mod:`vdla.sim.rtl_build`, cached under
``build/rtl/``). A batch of runs becomes one job file; one simulator launch runs them all
(:mod:`vdla.sim.cocotb_core`), because the launch costs far more than a small inference.

* :func:`run_batch` runs :class:`RtlRun` objects (image, DRAM blocks to write, byte ranges
  to read back) and fills in their status and data; it never raises for a fault.
* :func:`program_run` prepares the run of one inference of a compiled program.
* :func:`run_program_int_rtl` (int8 in and out) and :func:`run_program_rtl` (float, quantized
  like ONNX) run inferences of a program and raise :class:`RtlError` on a fault or timeout.
"""

import dataclasses
import hashlib
import json
import pathlib
import shutil
import tempfile
import time

import numpy as np

from vdla import isa
from vdla.compiler import layout
from vdla.compiler.errors import CompileError
from vdla.compiler.link import link
from vdla.compiler.program import Allocation
from vdla.regs import Fault
from .host import HostError, dequantize_outputs, quantize_inputs
from .rtl_build import log_tail

__all__ = ["RtlError", "RtlRun", "ProgramRun", "get_build", "run_batch", "program_run",
           "run_program_int_rtl", "run_program_rtl", "opcodes", "DEFAULT_SEG_BASE"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Segment base of program runs: off any 4 KiB boundary, so bursts split where DRAM says.
DEFAULT_SEG_BASE = 0x2F48
TEST_MODULE = "vdla.sim.cocotb_core"
TOPLEVEL = "core_top"
_OPCODE = isa.FIELDS["head"]["opcode"]


class RtlError(HostError):
    """A build failure, simulator failure, fault or timeout of an RTL run (one line)."""


def get_build(config, build_dir=None, top=TOPLEVEL):
    """The Verilator build of ``top`` for ``config`` (see :func:`.rtl_build.get_build`)."""
    from .rtl_build import BuildError
    from .rtl_build import get_build as cached_build
    try:
        return cached_build(config, top, build_dir)
    except BuildError as error:
        raise RtlError(str(error)) from None


@dataclasses.dataclass
class RtlRun:
    """One start-to-done run of an image on the core.

    ``words``: image ((n, 2) uint64) written at ``prog_base``; ``init``: ``[(address,
    uint8 array)]`` DRAM writes before the start; ``reads``: ``[(address, nbytes)]`` read
    back after it. Addresses are absolute DRAM byte addresses. ``marks`` records the cycles
    at which the core took each FRAME and SYNC (for per-layer timing). ``stall`` (0..1) makes
    every AXI channel of the RAM model pause with that probability each cycle (slow: for
    short runs).

    After :func:`run_batch`: ``status`` (dict: ``done``, ``fault`` (:class:`Fault`),
    ``fault_valid``, ``fault_pc``, ``cycles``, ``load_busy``, ``compute_busy``, ``save_busy``,
    ``timeout``, ``start``/``end`` (simulation cycle), ``marks``) and ``data`` (one uint8
    array per read).
    """
    words: np.ndarray
    seg_base: int
    seg_size: int
    init: list = dataclasses.field(default_factory=list)
    reads: list = dataclasses.field(default_factory=list)
    prog_base: int = 0
    max_cycles: int = 1_000_000
    marks: bool = False
    stall: float = 0.0
    status: dict = None
    data: list = None

    @property
    def ok(self):
        s = self.status
        return bool(s and s["done"] and not s["fault_valid"] and not s["timeout"])

    def describe(self):
        """One line: how the run ended."""
        s = self.status
        if s is None:
            return "not run (an earlier run of the batch left the core stuck)"
        if s["fault_valid"]:
            return f"faulted {s['fault'].name} at instruction word {s['fault_pc']}"
        if s["timeout"]:
            return f"timed out: no done or fault within {self.max_cycles} cycles"
        return f"done in {s['cycles']} cycles"

    def layer_cycles(self):
        """Cycles of each layer (from the first FRAME taken, SYNC to SYNC, last to done),
        and the start overhead (buffer clearing, first fetch) before the first FRAME.
        Needs ``marks=True``."""
        marks = self.status.get("marks")
        if not marks:
            raise RtlError("layer timing needs a run made with marks=True")
        opcode = opcodes(self.words)
        syncs = np.flatnonzero(opcode == isa.Opcode.SYNC.value)
        first = {}
        for cycle, value in marks:
            first.setdefault(value, cycle)
        frame = int(np.flatnonzero(opcode == isa.Opcode.FRAME.value)[0])
        edges = [first[self.prog_base + o + 1] for o in [frame, *syncs.tolist()]]
        edges.append(self.status["end"])
        start = self.status["start"]
        return np.diff(edges).tolist(), edges[0] - start


def opcodes(words):
    """Opcode of every word of an ``(n, 2)`` uint64 image."""
    words = np.asarray(words, np.uint64)
    return (words[:, 0] >> np.uint64(_OPCODE[0])) & np.uint64((1 << _OPCODE[1]) - 1)


def _dram_bytes(runs):
    top = 0
    for run in runs:
        top = max(top, run.seg_base + run.seg_size,
                  *(a + len(b) for a, b in run.init), *(a + n for a, n in run.reads))
    return -(-(top + 1) // 4096) * 4096


def _write_job(runs, path):
    images, index, arrays, meta_runs = [], {}, {}, []
    for r, run in enumerate(runs):
        words = np.ascontiguousarray(run.words, np.uint64).reshape(-1, 2)
        key = hashlib.sha1(words.tobytes()).hexdigest()
        if key not in index:
            index[key] = len(images)
            arrays[f"image{len(images)}"] = words
            images.append(key)
        for k, (_, block) in enumerate(run.init):
            arrays[f"init{r}_{k}"] = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
        meta_runs.append({
            "image": index[key], "prog_base": int(run.prog_base), "prog_size": len(words),
            "seg_base": int(run.seg_base), "seg_size": int(run.seg_size),
            "init": [int(a) for a, _ in run.init],
            "reads": [[int(a), int(n)] for a, n in run.reads],
            "max_cycles": int(run.max_cycles), "marks": bool(run.marks),
            "stall": float(run.stall)})
    meta = {"images": len(images), "dram_bytes": _dram_bytes(runs), "runs": meta_runs}
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def run_batch(runs, config, *, rtl=None, build_dir=None):
    """Run ``runs`` (:class:`RtlRun`) one after the other in one simulator launch.

    Fills in each run's ``status`` and ``data``; a fault or timeout is recorded, not raised
    (after a timeout the remaining runs are skipped and keep ``status=None``). Returns the
    simulator facts ``{"sim_cycles", "wall_seconds", "launch_seconds"}``. Raises
    :class:`RtlError` when the build or the simulator itself fails.
    """
    if not runs:
        return {"sim_cycles": 0, "wall_seconds": 0.0, "launch_seconds": 0.0}
    rtl = rtl or get_build(config, build_dir)
    work = pathlib.Path(tempfile.mkdtemp(prefix="vdla-rtl-"))
    job, result, log = work / "job.npz", work / "result.npz", work / "sim.log"
    _write_job(runs, job)
    started = time.perf_counter()
    try:
        rtl.test(TEST_MODULE, test_dir=work, log_file=log,
                 extra_env={"VDLA_RTL_JOB": str(job), "VDLA_RTL_RESULT": str(result)})
    except (RuntimeError, SystemExit) as error:
        raise RtlError(f"simulator failed ({error}): {log_tail(log)} (log: {log})") from None
    if not result.exists():
        raise RtlError(f"simulator wrote no result: {log_tail(log)} (log: {log})")
    with np.load(result) as out:
        facts = json.loads(bytes(out["meta"]).decode())
        for r, (run, status) in enumerate(zip(runs, facts["runs"])):
            status["fault"] = Fault(status["fault"])
            run.status = status
            run.data = [out[f"read{r}_{k}"] for k in range(len(run.reads))]
    shutil.rmtree(work, ignore_errors=True)
    return {"sim_cycles": facts["sim_cycles"], "wall_seconds": facts["wall_seconds"],
            "launch_seconds": time.perf_counter() - started}


@dataclasses.dataclass
class ProgramRun(RtlRun):
    """An :class:`RtlRun` of one inference of a program; decodes its tensors."""
    program: object = None
    config: object = None
    tensor_names: list = None

    @property
    def tensors(self):
        """``{name: int8 (C, H, W)}`` of every tensor read back."""
        if self.data is None:
            raise RtlError(f"no tensors to read: the run {self.describe()}")
        return {name: layout.from_blocked(data, self.program.tensor(name).shape,
                                          self.config.cb)
                for name, data in zip(self.tensor_names, self.data)}

    @property
    def outputs(self):
        tensors = self.tensors
        return {name: tensors[name] for name in self.program.outputs}


def program_run(program, config, inputs, *, tensors=None, seg_base=DEFAULT_SEG_BASE,
                marks=False, max_cycles=None, stall=0.0):
    """A :class:`ProgramRun` of one inference: ``inputs`` maps input names to int8
    ``(C, H, W)``; ``tensors`` names the tensors to read back (default: the outputs;
    ``"all"``: every tensor of the program); ``marks`` and ``stall`` as in :class:`RtlRun`."""
    try:
        image = link(program, config, Allocation(cores=1, seg_base=seg_base))
    except CompileError as error:
        raise RtlError(str(error)) from None
    seg_size = image.registers["SEG_SIZE_LO"] | image.registers["SEG_SIZE_HI"] << 32
    segment = np.zeros(-(-program.segment_size // 8) * 8, np.uint8)
    segment[:len(program.weights)] = np.frombuffer(program.weights, np.uint8)
    missing = set(program.inputs) - set(inputs)
    if missing:
        raise RtlError(f"missing input(s): {', '.join(sorted(missing))}")
    for name in program.inputs:
        entry, x = program.tensor(name), np.asarray(inputs[name])
        if x.dtype != np.int8 or x.shape != tuple(entry.shape):
            raise RtlError(f"input {name}: expected int8 {tuple(entry.shape)}, "
                           f"got {x.dtype} {x.shape}")
        data = layout.to_blocked(x, config.cb)
        segment[entry.offset:entry.offset + len(data)] = data
    if tensors is None:
        names = list(program.outputs)
    elif tensors == "all":
        names = [t.name for t in program.tensors]
    else:
        names = list(tensors)
    reads = [(seg_base + program.tensor(n).offset, program.tensor(n).size) for n in names]
    if max_cycles is None:
        max_cycles = 20 * int(program.frames["cycles"].sum()) + 200_000
    return ProgramRun(words=image.words, seg_base=seg_base, seg_size=seg_size,
                      init=[(seg_base, segment)], reads=reads, max_cycles=max_cycles,
                      marks=marks, stall=stall, program=program, config=config,
                      tensor_names=names)


def _check(runs):
    for i, run in enumerate(runs):
        if not run.ok:
            raise RtlError(f"RTL inference {i + 1} of {len(runs)} ({run.program.model}) "
                           f"{run.describe()}")


def run_program_int_rtl(program, config, inputs_list, *, tensors=None, marks=False,
                        seg_base=DEFAULT_SEG_BASE, rtl=None, build_dir=None, check=True):
    """Run inferences of ``program`` (linked for one core) on the RTL, in one launch.

    ``inputs_list``: one ``{input name: int8 (C, H, W)}`` dict per inference (a single dict
    is one inference). Returns a list of :class:`ProgramRun`: ``.outputs`` (int8 ``(C, H,
    W)`` per output name), ``.tensors``, ``.status`` (``cycles``, ``fault``...). Raises
    :class:`RtlError` if a run faulted or timed out (unless ``check=False``).
    """
    if isinstance(inputs_list, dict):
        inputs_list = [inputs_list]
    runs = [program_run(program, config, inputs, tensors=tensors, marks=marks,
                        seg_base=seg_base) for inputs in inputs_list]
    run_batch(runs, config, rtl=rtl, build_dir=build_dir)
    if check:
        _check(runs)
    return runs


def run_program_rtl(program, config, inputs, *, stats=None, **kwargs):
    """Float32 inputs and outputs in their ONNX shapes, as :func:`vdla.sim.host.run_program`.

    ``inputs``: a dict (one inference; returns a dict) or a list of dicts (returns a list).
    ``stats``: a list the :class:`ProgramRun` objects (cycles, status) are appended to.
    Other keywords go to :func:`run_program_int_rtl`.
    """
    single = isinstance(inputs, dict)
    try:
        samples = [inputs] if single else inputs
        int_inputs = [quantize_inputs(program, sample) for sample in samples]
    except HostError as error:
        raise RtlError(str(error)) from None
    runs = run_program_int_rtl(program, config, int_inputs, **kwargs)
    if stats is not None:
        stats.extend(runs)
    results = [dequantize_outputs(program, run.outputs) for run in runs]
    return results[0] if single else results
