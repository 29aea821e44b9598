"""The fuzz bench: a well-behaved tenant B beside the fuzzed tenant A, the DRAM both start
from, and the golden model's run of a case.

B runs a compiled model (the digits CNN) on the cores A is never given, its region at the
bottom of the instruction memory and its segment above A's part of DRAM. Each case starts
from a fresh DRAM: random bytes everywhere (the guard bytes around both segments), B's
weights and a random input in B's segment, A's segment from the case. The RTL bench
(:mod:`.cocotb_fuzz`) and :func:`run_iss` both build their state from :func:`initial_dram`
and the same register values, in the same order (B started first, then A).
"""

import dataclasses
import pathlib

import numpy as np

from vdla import isa, regs
from vdla.compiler.frontend import load_model
from vdla.compiler.layout import to_blocked
from vdla.compiler.link import link
from vdla.compiler.program import Allocation
from vdla.compiler.static import compile_graph
from vdla.config import get_config

from . import fuzz_words as fw
from .fuzz_programs import Layout
from .iss import Machine

__all__ = ["Bench", "make_bench", "initial_dram", "run_iss", "a_window", "TENANT_A",
           "TENANT_B", "START", "read_tenant", "solo_case"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Tenant B's model, and the compiled models the mutants start from.
B_MODEL = ROOT / "models" / "digits" / "digits_qdq.onnx"
BASE_MODELS = {"digits": B_MODEL,
               "tiny_mobilenet": ROOT / "scenarios" / "models" / "tiny_mobilenet_qdq.onnx"}
TENANT_A, TENANT_B = 0, 1
START = isa.pack_fields(isa.flat_fields(regs.Ctrl), {"start": 1, "irq_enable": 1})
#: Bytes of guard above B's segment.
GUARD = 0x1000


@dataclasses.dataclass
class Bench:
    """Tenant B and A's :class:`~.fuzz_programs.Layout`. ``bases``: compiled programs the
    mutants start from, by name."""
    layout: Layout
    dram_bytes: int
    b_program: object
    b_words: np.ndarray
    b_registers: dict
    bases: dict

    @property
    def config(self):
        return self.layout.config

    @property
    def b_segment(self):
        base = self.b_registers["SEG_BASE_LO"]
        return base, base + self.b_registers["SEG_SIZE_LO"]


def make_bench(config_name="small"):
    config = get_config(config_name)
    layout = Layout(config)
    bases = {name: compile_graph(load_model(path), config) for name, path in BASE_MODELS.items()}
    b_program = bases["digits"]
    image = link(b_program, config, Allocation(cores=1, core_mask=layout.b_mask, prog_base=0,
                                               seg_base=layout.seg_hi))
    if len(image.words) > layout.imem_lo:
        raise ValueError("tenant B's program does not fit below A's instruction window")
    dram_bytes = -(-(layout.seg_hi + b_program.segment_size + GUARD) // 4096) * 4096
    return Bench(layout=layout, dram_bytes=dram_bytes, b_program=b_program,
                 b_words=image.words, b_registers=image.registers, bases=bases)


def initial_dram(bench, case):
    """The whole DRAM before ``case`` runs (deterministic in the case's seed and index)."""
    rng = np.random.default_rng([case.seed, case.index, 7])
    dram = rng.integers(0, 256, bench.dram_bytes, dtype=np.uint8)
    program = bench.b_program
    base, _ = bench.b_segment
    weights = np.frombuffer(program.weights, np.uint8)
    dram[base:base + len(weights)] = weights
    for name in program.inputs:
        entry = program.tensor(name)
        x = rng.integers(-128, 128, entry.shape).astype(np.int8)
        blocked = to_blocked(x, bench.config.cb)
        dram[base + entry.offset:base + entry.offset + len(blocked)] = blocked
    dram[case.seg_base:case.seg_base + len(case.segment)] = case.segment
    return dram


def a_window(bench, case):
    """``(first word, (n, 2) uint64 words)``: A's whole part of the instruction memory as
    the case leaves it (its words at PROG_BASE, zeros elsewhere)."""
    config = bench.config
    lo = bench.layout.imem_lo
    window = np.zeros((config.imem_depth - lo, 2), np.uint64)
    for k, word in enumerate(case.words):
        pc = case.prog_base + k - lo
        if 0 <= pc < len(window):
            window[pc] = (word & (2**64 - 1), word >> 64)
    return lo, window


def read_tenant(read, tenant):
    """``{STATUS, FAULT_PC, INFERENCES}`` of ``tenant`` through ``read(tenant, name)``."""
    return {name: int(read(tenant, name)) for name in ("STATUS", "FAULT_PC", "INFERENCES")}


def run_iss(bench, case, policy="load-first"):
    """The golden model's run of ``case`` beside B: ``{"a", "b"}`` register readings,
    ``"dram"`` after, ``"cycles"`` (A's estimate)."""
    m = Machine(bench.config, bench.dram_bytes, policy)
    m.dram[:] = initial_dram(bench, case)
    m.write_imem(0, bench.b_words)
    lo, window = a_window(bench, case)
    m.imem[lo:] = window
    for name, value in bench.b_registers.items():
        m.write_reg(TENANT_B, name, value)
    for name, value in case.registers().items():
        m.write_reg(TENANT_A, name, value)
    m.write_reg(TENANT_B, "CTRL", START)
    m.write_reg(TENANT_A, "CTRL", START)
    m.run()
    return {"a": read_tenant(m.read_reg, TENANT_A), "b": read_tenant(m.read_reg, TENANT_B),
            "dram": m.dram.copy(), "cycles": m.tenants[TENANT_A].cycles,
            "reason": m.tenants[TENANT_A].fault_reason}


def solo_case(case, vcore):
    """``case`` with only virtual core ``vcore`` running, alone on the same physical core
    and at the same addresses (header 0 points at its stream; the other headers are left
    where they are, never fetched), or None when its header is no STREAM word. The fault it
    meets alone is one the hardware may report first when several cores fault in one phase.
    """
    cores = [c for c in range(case.core_mask.bit_length()) if case.core_mask >> c & 1]
    if not 0 <= vcore < min(len(cores), len(case.words)) or \
            fw.opcode(case.words[vcore]) != isa.Opcode.STREAM:
        return None
    words = list(case.words)
    words[0] = fw.header(0, 1, fw.get(case.words[vcore], "stream", "offset"))
    return dataclasses.replace(case, words=words, core_mask=1 << cores[vcore],
                               kind=f"{case.kind}, virtual core {vcore} alone")
