"""Instruction-set simulator of the whole core pool: the golden model of what the gateware does.

:class:`Machine` holds the shared instruction memory, DRAM, the cores (:mod:`.iss_core`) and
the per-tenant register state (:mod:`vdla.regs`), and plays the first-level dispatch:

* ``start``: reads the tenant's STREAM headers (their count must equal the popcount of
  CORE_MASK, else fault CORES) and points virtual core *k* at the *k*-th set bit of the mask;
* ``run``: advances every running tenant one *phase* at a time (each virtual core runs its
  stream up to its next SYNC or END), in round robin over the tenants, until each has done
  RUNS inferences, faulted or been stopped. A SYNC passes when every virtual core of the
  tenant has reached a SYNC with the same number; any other combination (different numbers,
  or END on some cores and SYNC on others) can never complete and faults DEADLOCK.

Within a phase the virtual cores run one after the other, in ascending order under the
``load-first`` policy and in descending order under ``compute-first``, so that two cores
racing on the same DRAM bytes inside one layer also give policy-dependent results.

Time: ``cycle`` is a global clock in *estimated* cycles (the cost model of :mod:`.iss_core`).
A phase costs its slowest core's estimate plus :data:`SYNC_OVERHEAD`. :meth:`Machine.advance`
runs the tenants concurrently: a phase executes (moves its data) when it starts and takes
effect (barrier, counters, done, interrupt; a fault inside a stream: at its start) when it
ends, in time order across tenants, so a tenant started at cycle ``s`` interrupts at ``s`` +
the CYCLES it spent: its per-inference latency is its estimate. :meth:`Machine.run` keeps its
round robin and leaves ``cycle`` at the latest end.

Faults (:class:`vdla.regs.Fault`) stop the faulting tenant on all of its cores and leave the
other tenants running. The model's dispatcher checks a whole frame (fetch region, opcodes,
flags, fields) before the frame's units start, so an ILLEGAL or REGION fault inside a frame
lets no instruction of that frame execute; SEGMENT and BUFFER are checked per instruction
before it moves any data.
"""

import numpy as np

from vdla import isa, regs
from vdla.compiler.program import words_from_ints
from vdla.regs import Fault

from .iss_core import POLICIES, Core
from .iss_decode import Decoder, TenantFault
from .iss_dma import Segment

__all__ = ["Machine", "MachineError", "TenantFault", "SYNC_OVERHEAD"]

#: Cycles a barrier costs beyond the slowest core (estimate).
SYNC_OVERHEAD = 8

_STATUS_FIELDS = isa.flat_fields(regs.Status)
_CTRL_FIELDS = isa.flat_fields(regs.Ctrl)
_RW = {r.name for r in regs.TENANT_REGS if r.access == "rw"}
_GUARDED = {r.name for r in regs.TENANT_REGS if r.guarded}
_READ_ONLY = {r.name for r in regs.TENANT_REGS if r.access == "r"}


def _budget(t):
    """The tenant's cycle budget (0: none)."""
    return t.regs["BUDGET_LO"] | t.regs["BUDGET_HI"] << 32


class MachineError(RuntimeError):
    """The host used the machine in a way the hardware would refuse (one-line message)."""


class _Tenant:
    """Register state of one tenant, and its dispatch state while running."""

    def __init__(self, index):
        self.index = index
        self.regs = dict.fromkeys(_RW, 0)
        self.irq_enable = False
        self._clear()
        self.mask, self.cores, self.starts, self.pcs = 0, [], [], []
        self.base = self.size = 0
        self.segment = None
        self.runs = self.completed = 0
        # Clock: when the next phase starts; the executed phase awaiting its end, if any.
        self.ready, self.pending = 0, None

    def _clear(self):
        self.running = self.done = self.faulted = self.stopped = False
        self.stop_request = False
        self.fault, self.fault_core, self.fault_pc, self.fault_reason = Fault.NONE, 0, 0, ""
        self.inferences = self.cycles = 0


class Machine:
    """The core pool of ``config`` with ``dram_bytes`` of DRAM.

    ``imem`` is the shared instruction memory (``(config.imem_depth, 2)`` uint64, low half
    first), ``dram`` a uint8 array, ``cores`` the :class:`iss_core.Core` objects, ``policy``
    the default unit-scheduling policy of :meth:`run` (see :mod:`.iss_core`).
    """

    def __init__(self, config, dram_bytes, policy="load-first"):
        if policy not in POLICIES:
            raise MachineError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        self.config = config
        self.policy = policy
        self.imem = np.zeros((config.imem_depth, 2), np.uint64)
        self.dram = np.zeros(int(dram_bytes), np.uint8)
        self.cores = [Core(config, i) for i in range(config.cores)]
        self.tenants = [_Tenant(t) for t in range(config.tenants)]
        self.irq_status = 0
        self.cycle = 0
        self._decode = Decoder()

    # ----------------------------------------------------------------- host interface

    def write_imem(self, word, words):
        """Write instruction words (``(n, 2)`` uint64 or a sequence of 128-bit ints) at ``word``."""
        words = np.asarray(words)
        if words.dtype == object or words.ndim == 1:
            words = words_from_ints([int(w) for w in words]).reshape(-1, 2)
        if word < 0 or word + len(words) > len(self.imem):
            raise MachineError(f"instruction words {word}..{word + len(words) - 1} outside the "
                               f"instruction memory of {len(self.imem)} words")
        self.imem[word:word + len(words)] = words

    def read_imem(self, word, count):
        return self.imem[word:word + count].copy()

    def _tenant(self, tenant):
        if not 0 <= tenant < len(self.tenants):
            raise MachineError(f"tenant {tenant} does not exist (0..{len(self.tenants) - 1})")
        return self.tenants[tenant]

    def write_reg(self, tenant, name, value):
        """Write a tenant register by name; a CTRL write acts (clear, stop, start, irq).

        While the tenant runs, its allocation registers and a CTRL start or clear are
        refused, and the write changes nothing (as the control block answers SLVERR)."""
        t = self._tenant(tenant)
        value = int(value)
        if name == "CTRL":
            ctrl = isa.unpack_fields(_CTRL_FIELDS, value)
            guarded = [f for f in regs.CTRL_GUARDED_FIELDS if ctrl[f]]
            if t.running and guarded:
                raise MachineError(f"tenant {tenant} is running: CTRL {' and '.join(guarded)} "
                                   f"refused (stop it first)")
            t.irq_enable = bool(ctrl["irq_enable"])
            if ctrl["irq_ack"]:
                self.irq_status &= ~(1 << tenant)
            if ctrl["clear"]:
                self.clear(tenant)
            if ctrl["abort"]:
                self.abort(tenant)
            if ctrl["stop"]:
                self.stop(tenant)
            if ctrl["start"]:
                self.start(tenant)
        elif name in _RW:
            if not 0 <= value < 1 << 32:
                raise MachineError(f"register {name} is 32 bits wide, not {value:#x}")
            if t.running and name in _GUARDED:
                raise MachineError(f"tenant {tenant} is running: its {name} is refused")
            t.regs[name] = value & regs.register(name).write_mask
        elif name in _READ_ONLY:
            raise MachineError(f"register {name} is read-only")
        else:
            raise MachineError(f"no tenant register {name!r}")

    def read_reg(self, tenant, name):
        """Read a tenant register by name (STATUS packed as :class:`vdla.regs.Status`)."""
        t = self._tenant(tenant)
        if name in _RW:
            return t.regs[name]
        if name == "STATUS":
            return isa.pack_fields(_STATUS_FIELDS, {
                "running": t.running, "done": t.done, "faulted": t.faulted,
                "stopped": t.stopped, "fault": t.fault.value, "fault_core": t.fault_core})
        simple = {"INFERENCES": t.inferences & 0xFFFF_FFFF,
                  "CYCLES_LO": t.cycles & 0xFFFF_FFFF,
                  "CYCLES_HI": (t.cycles >> 32) & 0xFFFF_FFFF,
                  "FAULT_PC": t.fault_pc}
        if name in simple:
            return simple[name]
        if name == "CTRL":
            raise MachineError("register CTRL is write-only")
        raise MachineError(f"no tenant register {name!r}")

    def read_global(self, name):
        """Read a global register of :data:`vdla.regs.GLOBAL_REGS` by name."""
        h = int(self.config.core_hash(), 16)
        values = {"ID": regs.ID_VALUE, "ISA_VERSION": isa.ISA_VERSION,
                  "CORE_HASH_LO": h & 0xFFFF_FFFF, "CORE_HASH_HI": h >> 32,
                  "CORES": self.config.cores, "TENANTS": self.config.tenants,
                  "IMEM_DEPTH": self.config.imem_depth, "IRQ_STATUS": self.irq_status}
        if name not in values:
            raise MachineError(f"no global register {name!r}")
        return values[name]

    def write_global(self, name, value):
        """Every global register is read-only (a tenant acknowledges its interrupt through
        its own CTRL)."""
        if name in {reg.name for reg in regs.GLOBAL_REGS}:
            raise MachineError(f"register {name} is read-only")
        else:
            raise MachineError(f"no global register {name!r}")

    def status(self, tenant):
        """Decoded status of a tenant as a dict (STATUS fields, counters, fault details)."""
        t = self._tenant(tenant)
        return {"running": t.running, "done": t.done, "faulted": t.faulted,
                "stopped": t.stopped, "fault": t.fault, "fault_core": t.fault_core,
                "fault_pc": t.fault_pc, "fault_reason": t.fault_reason,
                "inferences": t.inferences, "cycles": t.cycles}

    @property
    def irq(self):
        """Done-interrupt lines: bit t set when tenant t finished or faulted and has irq_enable."""
        enabled = sum(1 << t.index for t in self.tenants if t.irq_enable)
        return self.irq_status & enabled

    def clear(self, tenant):
        t = self._tenant(tenant)
        if t.running:
            raise MachineError(f"tenant {tenant} is running; stop it before clearing")
        t._clear()
        self.irq_status &= ~(1 << tenant)

    def abort(self, tenant):
        """Take a running tenant's cores back now: it ends faulted ABORTED (at its lowest core
        and its region's first word). The phase in flight is dropped; its data moves, which
        the model made when the phase began, stay in the tenant's own segment."""
        t = self._tenant(tenant)
        if t.running:
            t.pending = None
            self._fault(t, TenantFault(Fault.ABORTED, "aborted by the host", t.base,
                                       t.cores[0]))

    def stop(self, tenant):
        """Request a stop; it takes effect at the tenant's next frame boundary in :meth:`run`."""
        t = self._tenant(tenant)
        if t.running:
            t.stop_request = True

    def start(self, tenant):
        """Start ``tenant`` with its current registers: RUNS inferences from its region."""
        t = self._tenant(tenant)
        if t.running:
            raise MachineError(f"tenant {tenant} is already running")
        mask = t.regs["CORE_MASK"]
        taken = [other for other in self.tenants if other.running and other.mask & mask]
        t.mask = mask
        t.cores = [c for c in range(mask.bit_length()) if mask >> c & 1]
        if not taken:
            for c in t.cores:
                if c < len(self.cores):
                    self.cores[c].clear()
        t.base, t.size = t.regs["PROG_BASE"], t.regs["PROG_SIZE"]
        t.segment = Segment(self.dram, t.regs["SEG_BASE_LO"] | t.regs["SEG_BASE_HI"] << 32,
                            t.regs["SEG_SIZE_LO"] | t.regs["SEG_SIZE_HI"] << 32)
        t.runs, t.completed = t.regs["RUNS"], 0
        t.running, t.done, t.faulted, t.stopped, t.stop_request = True, False, False, False, False
        t.ready, t.pending = self.cycle, None
        t.fault, t.fault_core, t.fault_pc, t.fault_reason = Fault.NONE, 0, 0, ""
        self.irq_status &= ~(1 << tenant)
        try:
            if taken:
                # As the dispatch: the start faults, the running tenant keeps its cores.
                raise TenantFault(Fault.CORES, f"core mask 0x{mask:x} overlaps running tenant "
                                               f"{taken[0].index}'s 0x{taken[0].mask:x}",
                                  t.base, t.cores[0])
            self._check_mask(t)
            space = 1 << self.config.dram_addr_bits
            if t.segment.base + t.segment.size > space:
                raise TenantFault(Fault.SEGMENT, f"segment of 0x{t.segment.size:x} bytes at "
                                                 f"0x{t.segment.base:x} runs past the DRAM "
                                                 f"address space (0x{space:x} bytes)",
                                  t.base, t.cores[0])
            self._read_headers(t)
        except TenantFault as fault:
            self._fault(t, fault)

    def run(self, policy=None, max_phases=None):
        """Run the started tenants until each has finished, faulted or stopped.

        ``max_phases`` bounds the phases per tenant (needed for RUNS=0 without a stop
        request). Returns ``{tenant: status dict}`` for every tenant that was running.
        """
        policy = policy or self.policy
        if policy not in POLICIES:
            raise MachineError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        ran = [t.index for t in self.tenants if t.running]
        if max_phases is None and any(self.tenants[i].runs == 0
                                      and not self.tenants[i].stop_request
                                      and not _budget(self.tenants[i]) for i in ran):
            raise MachineError("a tenant with RUNS=0 runs until stopped: stop it, give it a "
                               "cycle budget or give run() a max_phases budget")
        for t in sorted((t for t in self.tenants if t.pending), key=lambda t: t.pending[0]):
            self._end_pending(t)
        phases = 0
        while max_phases is None or phases < max_phases:
            active = [t for t in self.tenants if t.running]
            if not active:
                break
            for t in active:
                self._phase(t, policy)
            phases += 1
        self.cycle = max([self.cycle] + [self.tenants[i].ready for i in ran])
        return {i: self.status(i) for i in ran}

    def next_event(self, policy=None):
        """Cycle at which the earliest phase of a running tenant ends (None: nothing runs).

        Executes the next phase of every running tenant that has none in flight."""
        policy = policy or self.policy
        ends = []
        for t in self.tenants:
            if t.running:
                if t.pending is None:
                    outcome = self._execute(t, policy)
                    t.pending = (t.ready + outcome[1], outcome)
                ends.append(t.pending[0])
        return min(ends, default=None)

    def advance(self, until, policy=None):
        """Move the clock to cycle ``until``, ending every phase due by then, earliest first
        (a tie goes to the lower tenant)."""
        while True:
            when = self.next_event(policy)
            if when is None or when > until:
                break
            self._end_pending(next(t for t in self.tenants
                                   if t.running and t.pending[0] == when))
        self.cycle = max(self.cycle, until)

    def _end_pending(self, t):
        (t.ready, outcome), t.pending = t.pending, None
        self.cycle = max(self.cycle, t.ready)
        self._commit(t, outcome)

    # ------------------------------------------------------------ first-level dispatch

    def _fetch(self, t, offset):
        """Decode the word ``offset`` words into ``t``'s region (REGION fault outside it)."""
        pc = t.base + offset
        if offset >= t.size or pc >= len(self.imem):
            raise TenantFault(Fault.REGION, f"fetch of region word {offset}, outside the "
                                            f"region of {t.size} words at {t.base}", pc)
        lo, hi = self.imem[pc].tolist()
        return self._decode(lo | hi << 64)

    def _check_mask(self, t):
        if not t.cores or t.mask >> self.config.cores:
            raise TenantFault(Fault.CORES, f"core mask 0x{t.mask:x} is empty or names cores "
                                           f"outside the pool of {self.config.cores}", t.base,
                              t.cores[0] if t.cores else 0)

    def _read_headers(self, t):
        count = len(t.cores)
        t.starts = []
        for k in range(count):
            try:
                dec = self._fetch(t, k)
            except TenantFault as fault:
                fault.core = t.cores[k]     # as the RTL: the core whose header is outside
                raise
            f = dec.fields
            if (dec.opcode != isa.Opcode.STREAM or dec.illegal or f["vcore"] != k
                    or f["count"] != count):
                # Reported by the core that fetched the header (the lowest of those failing).
                raise TenantFault(Fault.CORES, f"region word {k} is not STREAM header {k} of "
                                               f"{count} (core mask 0x{t.mask:x})", t.base + k,
                                  t.cores[k])
            t.starts.append(f["offset"])
        t.pcs = list(t.starts)

    def _phase(self, t, policy):
        outcome = self._execute(t, policy)
        t.ready += outcome[1]
        self._commit(t, outcome)

    def _execute(self, t, policy):
        """Run every virtual core of ``t`` to its next SYNC or END (data moves now).

        Returns ``(kind, cycles, detail)`` for :meth:`_commit`: ``stop``, ``fault`` (detail:
        the fault; cycles only when every core ran), ``sync`` or ``end`` (detail: the ends)."""
        if t.stop_request:
            # Between phases every core is at a frame boundary.
            return "stop", 0, None
        n = len(t.cores)
        ends, cycles = [None] * n, [0] * n
        order = range(n) if policy == "load-first" else range(n - 1, -1, -1)
        try:
            for k in order:
                ends[k], cycles[k] = self._run_stream(t, k, policy)
        except TenantFault as fault:
            return "fault", 0, fault
        cost = max(cycles) + SYNC_OVERHEAD
        kinds = {(kind, barrier) for kind, barrier, _ in ends}
        if len(kinds) > 1:
            k = next(k for k in range(n) if ends[k][:2] != ends[0][:2])
            seen = ", ".join(f"vcore {k}: {kind} {'' if b is None else b}".strip()
                             for k, (kind, b, _) in enumerate(ends))
            return "fault", cost, TenantFault(Fault.DEADLOCK, f"barrier can never complete "
                                                              f"({seen})", t.base + ends[k][2],
                                              t.cores[k])
        return ends[0][0], cost, ends

    def _commit(self, t, outcome):
        """Let an executed phase take effect: barrier, counters, done and interrupt. A phase
        that takes CYCLES to the budget ends the tenant TIMEOUT (unless it faulted first): the
        gateware's watchdog acts inside the phase, at a moment only its own cycles decide."""
        kind, cost, detail = outcome
        t.cycles += cost
        budget = _budget(t)
        if budget and t.cycles >= budget and kind != "fault":
            kind, detail = "fault", TenantFault(Fault.TIMEOUT, f"CYCLES reached the budget "
                                                               f"of {budget}", t.base,
                                                t.cores[0])
        if kind == "stop":
            t.running, t.stopped, t.stop_request = False, True, False
        elif kind == "fault":
            self._fault(t, detail)
        elif kind == "sync":
            t.pcs = [off + 1 for _, _, off in detail]
        else:
            t.inferences += 1
            t.completed += 1
            if t.runs and t.completed >= t.runs:
                t.running, t.done = False, True
                self.irq_status |= 1 << t.index
            else:
                t.pcs = list(t.starts)

    def _run_stream(self, t, k, policy):
        """Run virtual core ``k`` of ``t`` from its pc to the next SYNC/END.

        Returns ``((kind, barrier, region offset of the word), estimated cycles)``."""
        core = self.cores[t.cores[k]]
        offset, cycles = t.pcs[k], 0
        try:
            while True:
                dec = self._fetch(t, offset)
                if dec.illegal:
                    raise TenantFault(Fault.ILLEGAL, dec.illegal, t.base + offset)
                op = dec.opcode
                if op == isa.Opcode.SYNC:
                    return ("sync", dec.fields["barrier"], offset), cycles
                if op == isa.Opcode.END:
                    return ("end", None, offset), cycles
                if op != isa.Opcode.FRAME:
                    raise TenantFault(Fault.ILLEGAL, f"{op.name} outside a frame "
                                                     "(streams hold FRAME, SYNC and END)",
                                      t.base + offset)
                offset += 1
                body = []
                while True:
                    word = self._fetch(t, offset)
                    if word.opcode in (isa.Opcode.FRAME, isa.Opcode.SYNC, isa.Opcode.END):
                        break
                    body.append((t.base + offset, word))
                    offset += 1
                core.check_frame(body)
                cycles += core.run_frame(body, t.segment, policy)
        except TenantFault as fault:
            if fault.core is None:
                fault.core = core.index
            raise

    def _fault(self, t, fault):
        t.running, t.faulted = False, True
        t.fault, t.fault_pc, t.fault_reason = fault.code, fault.pc or 0, fault.reason
        t.fault_core = fault.core if fault.core is not None else (t.cores[0] if t.cores else 0)
        self.irq_status |= 1 << t.index
