"""First-level dispatch: runs each tenant's program on the cores of its core mask.

One state machine per tenant, the same rules as the golden model's dispatcher
(``sim/iss.py``):

* ``start`` (while not running): the mask must be non-empty, inside the pool and free of the
  cores of every other running tenant, else the tenant faults CORES; the segment must lie
  inside the DRAM address space (``Config.dram_addr_bits``), else it faults SEGMENT. The tenant's cores are
  then prepared (each core flushes, lets its units finish and clears its buffers), their
  registers latched (region, segment, virtual core *k* = the *k*-th set bit of the mask) and
  their fetchers read the STREAM headers. When every header is checked the cores start
  together (``go``); otherwise the lowest core's header fault is the tenant's.
* Barriers: once every core of the tenant stands drained at a SYNC, all at the same barrier,
  the barrier is released; all at END is one inference. Any other combination can never
  complete and faults DEADLOCK at the first core that differs from the lowest one.
* After an inference, with RUNS not yet reached (RUNS=0: until stopped), the fetchers
  restart. A stop request is honoured at the next frame boundary of every core: its
  fetcher holds back the next FRAME (``hold``), and once every core stands drained before a
  FRAME, at a barrier or at END, the tenant is stopped.
* The host's abort (CTRL abort) makes the tenant's cores abandon their work (COMPUTE reset,
  the DMA units' bursts already on the bus completed, none started) and ends the tenant
  faulted ABORTED as soon as they are quiet; they clear their buffers before taking any
  instruction again. Bounded by the DMA's outstanding bursts, whatever the program. The
  watchdog does the same, faulting TIMEOUT, the cycle after CYCLES reaches a non-zero BUDGET.
* A fault on any core (from its fetcher: REGION, CORES, or the core's own ILLEGAL, SEGMENT,
  BUFFER) stops the whole tenant: its fetchers abort, its cores flush (instructions already
  issued finish inside the segment), and only once they are idle is the tenant reported
  faulted, so the host never sees a faulted tenant whose writes are still in flight. Other
  tenants are untouched.
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vdla.regs import Fault

from .control import TenantPortSignature

__all__ = ["CoreLinkSignature", "TenantDispatch"]


class CoreLinkSignature(wiring.Signature):
    """What the first-level dispatch drives into one core and its fetcher (dispatch view)."""

    def __init__(self, config):
        super().__init__({
            # Settings, latched when the owning tenant starts; the segment, checked to lie in
            # the DRAM address space, as wide as a core takes it.
            "prog_base": Out(32), "prog_size": Out(32),
            "seg_base": Out(config.dram_addr_bits), "seg_size": Out(config.seg_size_bits),
            "vcore": Out(8), "vcount": Out(8),
            # One-cycle pulses.
            "core_start": Out(1), "core_cancel": Out(1), "fetch_start": Out(1),
            "fetch_abort": Out(1), "go": Out(1), "sync_release": Out(1),
            # Held while the owning tenant has a stop request.
            "hold": Out(1),
            # From the fetcher and the core.
            "header_ready": In(1), "sync_wait": In(1), "frame_wait": In(1),
            "sync_barrier": In(16),
            "done": In(1), "boundary_pc": In(32),
            "fault_valid": In(1), "fault": In(Fault), "fault_pc": In(32),
            "core_idle": In(1), "core_quiet": In(1),
        })


class TenantDispatch(wiring.Component):
    """First-level dispatch of ``config.tenants`` tenants over ``config.cores`` cores.

    Members
    -------
    tenants : ``In(TenantPortSignature(config)).array(config.tenants)``
        From the register block: settings and CTRL pulses in, status and counters out.
    cores : ``Out(CoreLinkSignature(config)).array(config.cores)``
        To each core and its fetcher.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "tenants": In(TenantPortSignature(config)).array(config.tenants),
            "cores": Out(CoreLinkSignature(config)).array(config.cores),
        })

    def elaborate(self, platform):
        m = Module()
        n, tenants = self._config.cores, self._config.tenants
        cores = self.cores

        masks = [Signal(n, name=f"mask_{t}") for t in range(tenants)]
        running = [Signal(name=f"running_{t}") for t in range(tenants)]
        starting = [Signal(name=f"starting_{t}") for t in range(tenants)]
        # Per-core pulses, OR-ed over tenants (running tenants' masks are disjoint).
        pulses = {name: [Signal(name=f"{name}_{t}") for t in range(tenants)]
                  for name in ("core_start", "core_cancel", "fetch_start", "fetch_abort",
                               "go", "sync_release", "hold")}

        for t in range(tenants):
            self._tenant(m, t, masks, running, starting, pulses)

        # Settings of the tenant that starts (one start per cycle at most: starts are
        # register writes), chosen once for all cores: each core's registers then only load
        # them (a clock enable), where a choice per core cost four times the multiplexers.
        link = self.cores[0]
        widths = {"prog_base": len(link.prog_base), "prog_size": len(link.prog_size),
                  "seg_base": len(link.seg_base), "seg_size": len(link.seg_size),
                  "core_mask": len(self.tenants[0].core_mask)}
        chosen = {name: Signal(width, name=f"start_{name}") for name, width in widths.items()}
        for t, port in enumerate(self.tenants):
            with m.If(starting[t]):
                m.d.comb += [value.eq(getattr(port, name)) for name, value in chosen.items()]
        any_start = Cat(*starting).any()
        vcount = sum(chosen["core_mask"][k] for k in range(n))
        for c, link in enumerate(cores):
            for name, per_tenant in pulses.items():
                m.d.comb += getattr(link, name).eq(
                    Cat(p & masks[t][c] for t, p in enumerate(per_tenant)).any())
            with m.If(any_start & chosen["core_mask"][c]):
                below = chosen["core_mask"][:c] if c else Const(0, 1)
                m.d.sync += [
                    link.prog_base.eq(chosen["prog_base"]), link.prog_size.eq(chosen["prog_size"]),
                    link.seg_base.eq(chosen["seg_base"]), link.seg_size.eq(chosen["seg_size"]),
                    link.vcore.eq(sum(below[k] for k in range(len(below)))),
                    link.vcount.eq(vcount),
                ]
        return m

    def _tenant(self, m, t, masks, running, starting, pulses):
        n = self._config.cores
        port = self.tenants[t]
        cores = self.cores
        mask = masks[t]
        status = port.status

        runs = Signal(32, name=f"runs_{t}")
        completed = Signal(32, name=f"completed_{t}")
        stop_request = Signal(name=f"stop_request_{t}")
        m.d.comb += [running[t].eq(status.running), port.finished.eq(0)]

        def over(fn):
            return Cat(fn(c) for c in range(n))

        mine = over(lambda c: mask[c])
        all_header = (over(lambda c: cores[c].header_ready | cores[c].fault_valid)
                      | ~mine).all()
        faulting = over(lambda c: cores[c].fault_valid) & mine
        at_sync = over(lambda c: cores[c].sync_wait) & mine
        at_end = over(lambda c: cores[c].done) & mine
        all_boundary = ((at_sync | at_end) | ~mine).all()
        # Every core at a frame boundary: before a FRAME it holds back, at SYNC or at END.
        all_parked = ((over(lambda c: cores[c].frame_wait) | at_sync | at_end) | ~mine).all()
        drained = (over(lambda c: cores[c].core_idle) | ~mine).all()
        quiet = (over(lambda c: cores[c].core_quiet) | ~mine).all()

        # The lowest core of the mask, and the first core that disagrees with it at a barrier.
        def lowest(bits, name):
            index = Signal(range(max(n, 2)), name=f"{name}_{t}")
            for k in reversed(range(n)):
                with m.If(bits[k]):
                    m.d.comb += index.eq(k)
            return index

        first = lowest(mine, "first")
        first_end = at_end.bit_select(first, 1)
        first_barrier = Signal(16, name=f"first_barrier_{t}")
        for c in range(n):
            with m.If(first == c):
                m.d.comb += first_barrier.eq(cores[c].sync_barrier)
        differs = over(lambda c: (at_end[c] != first_end)
                       | (~at_end[c] & (cores[c].sync_barrier != first_barrier))) & mine
        fault_core = lowest(faulting, "fault_core")
        odd_core = lowest(differs, "odd_core")

        def record(code, core, pc):
            m.d.sync += [status.fault.eq(code), status.fault_core.eq(core),
                         port.fault_pc.eq(pc)]

        def core_fault():
            for c in range(n):
                with m.If(fault_core == c):
                    record(cores[c].fault, c, cores[c].fault_pc)

        def abort():
            m.d.comb += [pulses["fetch_abort"][t].eq(1), pulses["core_start"][t].eq(1)]
            m.next = "Drain"

        def host_abort(code=Fault.ABORTED):
            # The host's abort (or the watchdog's): the cores abandon their units' work, and
            # the tenant ends as soon as nothing of it can move (its buffers are still being
            # cleared then, and no instruction of anyone runs on those cores before the clear
            # is over).
            record(code, first, port.prog_base)
            m.d.comb += [pulses["fetch_abort"][t].eq(1), pulses["core_start"][t].eq(1),
                         pulses["core_cancel"][t].eq(1)]
            m.next = "Cancel"

        # Start checks: the requested mask, before it is latched.
        requested = port.core_mask
        # Cores of the other running tenants (a draining tenant still owns its cores).
        taken = Signal(n, name=f"taken_{t}")
        m.d.comb += taken.eq(functools.reduce(operator.or_, (
            Mux(running[u], masks[u], 0) for u in range(len(masks)) if u != t), Const(0, n)))
        bad_mask = ((requested == 0) | (requested >> n != 0)
                    | ((requested[:n] & taken) != 0))
        # The segment must lie inside the DRAM address space (the cores' addresses are that
        # wide); the registers are 64 bits.
        a = self._config.dram_addr_bits
        seg_end = Signal(a + 2, name=f"seg_end_{t}")
        m.d.comb += seg_end.eq(port.seg_base[:a] + port.seg_size[:a + 1])
        bad_segment = (port.seg_base[a:].any() | port.seg_size[a + 1:].any()
                       | (seg_end > (1 << a)))
        # The golden model names the lowest requested core (even outside the pool).
        requested_low = Signal(range(len(requested)), name=f"requested_low_{t}")
        for k in reversed(range(len(requested))):
            with m.If(requested[k]):
                m.d.comb += requested_low.eq(k)

        with m.If(status.running):
            m.d.sync += port.cycles.eq(port.cycles + 1)
        # The watchdog, registered: it acts the cycle after CYCLES reaches BUDGET.
        over_budget = Signal(name=f"over_budget_{t}")
        m.d.sync += over_budget.eq(status.running & (port.budget != 0)
                                   & (port.cycles >= port.budget))
        with m.If(port.stop & status.running):
            m.d.sync += stop_request.eq(1)
        # Only while running: the mask stays latched after the tenant ends, when its cores
        # may already be another tenant's.
        m.d.comb += pulses["hold"][t].eq(stop_request & status.running)

        with m.FSM(name=f"tenant_{t}"):
            with m.State("Idle"):
                with m.If(port.clear):
                    m.d.sync += [status.eq(0), port.inferences.eq(0), port.cycles.eq(0),
                                 port.fault_pc.eq(0)]
                with m.If(port.start):
                    m.d.sync += [status.eq(0), stop_request.eq(0), completed.eq(0),
                                 runs.eq(port.runs), port.fault_pc.eq(0)]
                    with m.If(bad_mask | bad_segment):
                        m.d.sync += [status.faulted.eq(1),
                                     status.fault.eq(Mux(bad_mask, Fault.CORES, Fault.SEGMENT)),
                                     status.fault_core.eq(requested_low),
                                     port.fault_pc.eq(port.prog_base)]
                        m.d.comb += port.finished.eq(1)
                    with m.Else():
                        m.d.comb += [starting[t].eq(1)]
                        m.d.sync += [mask.eq(requested[:n]), status.running.eq(1)]
                        m.next = "Prepare"

            with m.State("Prepare"):
                # The mask is latched: flush the cores and fetch the headers.
                m.d.comb += [pulses["core_start"][t].eq(1), pulses["fetch_start"][t].eq(1)]
                with m.If(port.abort):
                    host_abort()
                with m.Else():
                    m.next = "Headers"

            with m.State("Headers"):
                with m.If(port.abort):
                    host_abort()
                with m.Elif(over_budget):
                    host_abort(Fault.TIMEOUT)
                with m.Elif(all_header):
                    with m.If(faulting.any()):
                        core_fault()
                        abort()
                    with m.Else():
                        m.d.comb += pulses["go"][t].eq(1)
                        m.next = "Run"

            with m.State("Run"):
                with m.If(port.abort):
                    host_abort()
                with m.Elif(over_budget):
                    host_abort(Fault.TIMEOUT)
                with m.Elif(faulting.any()):
                    core_fault()
                    abort()
                with m.Elif(all_boundary):
                    with m.If(differs.any()):
                        for c in range(n):
                            with m.If(odd_core == c):
                                record(Fault.DEADLOCK, c, cores[c].boundary_pc)
                        abort()
                    with m.Elif(~first_end):
                        with m.If(stop_request):
                            m.d.comb += pulses["fetch_abort"][t].eq(1)
                            m.next = "Stopped"
                        with m.Else():
                            m.d.comb += pulses["sync_release"][t].eq(1)
                    with m.Else():
                        m.d.sync += [port.inferences.eq(port.inferences + 1),
                                     completed.eq(completed + 1)]
                        with m.If((runs != 0) & (completed + 1 >= runs)):
                            m.d.comb += [pulses["fetch_abort"][t].eq(1),
                                         port.finished.eq(1)]
                            m.d.sync += [status.running.eq(0), status.done.eq(1)]
                            m.next = "Idle"
                        with m.Elif(stop_request):
                            m.d.comb += pulses["fetch_abort"][t].eq(1)
                            m.next = "Stopped"
                        with m.Else():
                            m.d.comb += pulses["fetch_start"][t].eq(1)
                            m.next = "Headers"
                with m.Elif(stop_request & all_parked):
                    # Some core held back a FRAME: the stop takes effect there.
                    m.d.comb += pulses["fetch_abort"][t].eq(1)
                    m.next = "Stopped"

            with m.State("Stopped"):
                m.d.sync += [status.running.eq(0), status.stopped.eq(1), stop_request.eq(0)]
                m.next = "Idle"

            with m.State("Cancel"):
                with m.If(quiet):
                    m.d.sync += [status.running.eq(0), status.faulted.eq(1)]
                    m.d.comb += port.finished.eq(1)
                    m.next = "Idle"

            with m.State("Drain"):
                # Wait for the flush started by abort() to finish on every core; the host's
                # abort of a faulting tenant makes its cores abandon their work too.
                m.d.comb += pulses["core_cancel"][t].eq(port.abort)
                with m.If(drained):
                    m.d.sync += [status.running.eq(0), status.faulted.eq(1)]
                    m.d.comb += port.finished.eq(1)
                    m.next = "Idle"
        return m
