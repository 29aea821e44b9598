"""Instruction fetch of one core's stream from a linked image (the per-core part of the
first-level dispatch).

On ``start`` the fetcher reads its virtual core's STREAM header (region word ``vcore``: it
must be header ``vcore`` of ``vcount``, else fault CORES), waits for ``go`` (the tenant's
cores start together once every header is checked; tied high for a single core), then
streams the words of that virtual core's stream to the core, one per cycle, prefetching a few
words ahead. Every word, SYNC and END included, goes to the core: the core takes a SYNC or END
only once it has drained, so "the core took it" means every earlier instruction has retired.
After a SYNC the fetcher waits for ``sync_release`` (the barrier of the multi-core pool; tied
high for a single core); after END it is done. ``abort`` drops everything and idles.

The instruction memory's read port may be shared: a read (``imem.en``) happens only in a
cycle with ``imem_grant`` (tied high when the port is the fetcher's own).

A fetch outside the program region (offset past ``prog_size`` or past the instruction memory)
faults REGION, but only when that word would be the next one handed over: prefetching past
an END is harmless. A core fault is reported with its address: the core gives the faulting
word's offset from the first word after the last FRAME/SYNC/END it took, and the fetcher
remembers where that was.

Fault precedence inside a frame follows the golden model, which reads a whole frame and checks
every word before any of it runs: a frame that runs past the region faults REGION, else its
first illegal word faults ILLEGAL, and only then does a fault of a running instruction count.
So a core fault inside a frame is held while the fetcher reads the rest of the frame (state
``Scan``, the words going nowhere) up to its FRAME, SYNC or END: the region's end met first
is the fault, else the first word the dispatch's checks refuse (:func:`.dispatch.check_word`),
else the core's own fault. A correct program never scans.
"""

from amaranth.hdl import Module, ResetInserter, Shape, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from vdla import isa
from vdla.regs import Fault

from .dispatch import check_word

__all__ = ["Fetcher", "connect_core"]

#: Words fetched ahead of the core (also hides the instruction memory's read latency).
PREFETCH = 4


class Fetcher(wiring.Component):
    """Fetcher of a one-core (virtual core 0 of 1) linked image.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    index_bits : int
        Width of the core's ``fault_index`` (``Dispatch.index_bits``).

    Members
    -------
    start : ``In(1)``
        Pulse: start the program in the region ``prog_base`` / ``prog_size`` (words).
    vcore, vcount : ``In(8)``
        This core's virtual core and the tenant's number of cores (0 and 1 for one core).
    header_ready : ``Out(1)``, ``go : In(1, init=1)``
        The header checked out; streaming begins when ``go`` is high.
    abort : ``In(1)``
        Pulse: stop fetching and idle (the tenant stops or faults elsewhere).
    hold : ``In(1)``, ``frame_wait : Out(1)``
        The tenant asked to stop: a FRAME is not handed over; ``frame_wait`` says the stream
        stands at one with the core drained (a frame boundary).
    imem : ``In(ReadPort.Signature(...))``, ``imem_grant : In(1, init=1)``
        Read port of the instruction memory (data the cycle after a granted ``en``).
    boundary_pc : ``Out(32)``
        Instruction-memory word of the last FRAME, SYNC or END the core took.
    insn : ``Out(stream.Signature(isa.Insn))``
        Words of the stream, to the core.
    core_idle, core_fault, core_fault_valid, core_fault_index : ``In``
        The core's status.
    sync_wait : ``Out(1)``, ``sync_barrier : Out(16)``, ``sync_release : In(1, init=1)``
        The stream stands at SYNC ``sync_barrier`` with the core drained; it goes on once
        ``sync_release`` is high.
    running, done : ``Out(1)``
        Running since ``start``; reached END with the core idle (held until ``start``).
    fault, fault_valid, fault_pc : ``Out``
        First fault since ``start`` and the instruction-memory word it happened at.
    """

    def __init__(self, config, index_bits):
        self._config = config
        self.pc_bits = max(ceil_log2(config.imem_depth), 1)
        self.entry_layout = data.StructLayout({
            "insn": isa.Insn, "pc": unsigned(32), "outside": unsigned(1)})
        super().__init__({
            "start": In(1),
            "prog_base": In(32),
            "prog_size": In(32),
            "vcore": In(8),
            "vcount": In(8, init=1),
            "header_ready": Out(1),
            "go": In(1, init=1),
            "abort": In(1),
            "hold": In(1),
            "frame_wait": Out(1),
            "imem": In(ReadPort.Signature(addr_width=self.pc_bits, shape=isa.Insn)),
            "imem_grant": In(1, init=1),
            "boundary_pc": Out(32),
            "insn": Out(stream.Signature(isa.Insn)),
            "core_idle": In(1),
            "core_fault": In(Fault),
            "core_fault_valid": In(1),
            "core_fault_index": In(index_bits),
            "sync_wait": Out(1),
            "sync_barrier": Out(16),
            "sync_release": In(1, init=1),
            "running": Out(1),
            "done": Out(1),
            "fault": Out(Fault),
            "fault_valid": Out(1),
            "fault_pc": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._config.imem_depth

        offset = Signal(32)         # next region offset to fetch
        mark = Signal(32)           # address of the first word after the core's last boundary
        fetching = Signal()         # prefetch enabled (stream state, nothing outside seen)
        in_flight = Signal()        # a read issued last cycle
        pc_q = Signal(32)
        outside_q = Signal()

        # Prefetch queue, emptied on start and abort.
        q = fifo.SyncFIFOBuffered(width=Shape.cast(self.entry_layout).width, depth=PREFETCH)
        m.submodules.queue = ResetInserter(self.start | self.abort)(q)
        head = data.View(self.entry_layout, q.r_data)

        pc = self.prog_base + offset
        outside = (offset >= self.prog_size) | (pc >= depth)
        want = Signal()
        read = Signal()             # a word enters the queue next cycle
        m.d.comb += [
            want.eq(fetching & (q.level + in_flight < PREFETCH)),
            # A word outside the region needs no memory read, only its place in the queue.
            read.eq(want & (outside | self.imem_grant)),
            self.imem.addr.eq(pc),
            self.imem.en.eq(want & ~outside),
            self.boundary_pc.eq(mark - 1),
        ]
        m.d.sync += in_flight.eq(read & ~self.start & ~self.abort)
        with m.If(read):
            m.d.sync += [pc_q.eq(pc), outside_q.eq(outside), offset.eq(offset + 1)]
            with m.If(outside):
                # Nothing after the first word outside the region can be wanted.
                m.d.sync += fetching.eq(0)
        entry = Signal(self.entry_layout)
        m.d.comb += [entry.insn.eq(self.imem.data), entry.pc.eq(pc_q),
                     entry.outside.eq(outside_q), q.w_en.eq(in_flight), q.w_data.eq(entry)]

        fault_now = Signal()
        code = Signal(Fault)
        where = Signal(32)
        # Inside a frame (the core took a FRAME and no SYNC / END since), a core fault waits
        # for the scan of the rest of the frame (see the module docstring).
        in_frame = Signal()
        have_setup = Signal()       # the frame's SETUP was handed over or scanned
        defer = Signal()
        found = Signal()            # an illegal word was met while scanning ...
        first_bad = Signal(32)      # ... first at this address
        with m.If(self.core_fault_valid & self.running & ~defer):
            m.d.comb += [fault_now.eq(1), code.eq(self.core_fault),
                         where.eq(mark + self.core_fault_index)]

        header = Signal(isa.Insn, reset_less=True)
        handshake = self.insn.valid & self.insn.ready
        op = head.insn.opcode
        _, head_boundary, head_bad = check_word(m, head.insn, have_setup)
        m.d.comb += [self.insn.payload.eq(head.insn), self.running.eq(0)]

        def exits():
            # Every state: a fault stops the stream; a start (re)starts it.
            with m.If(fault_now):
                m.next = "Faulted"
            with m.If(self.start):
                m.next = "Read-Header"
            with m.Elif(self.abort):
                m.next = "Idle"

        with m.FSM(name="fetch"):
            with m.State("Idle"):
                exits()

            with m.State("Read-Header"):
                header_pc = self.prog_base + self.vcore
                m.d.comb += [self.running.eq(1), self.imem.addr.eq(header_pc)]
                with m.If((self.vcore >= self.prog_size) | (header_pc >= depth)):
                    m.d.comb += [fault_now.eq(1), code.eq(Fault.REGION), where.eq(header_pc)]
                with m.Else():
                    m.d.comb += self.imem.en.eq(1)
                    with m.If(self.imem_grant):
                        m.next = "Latch-Header"
                exits()

            with m.State("Latch-Header"):
                # The header is checked from a register: checked as it leaves the block RAM
                # (5.8 ns clock-to-output on ECP5), its verdict reached the tenant's abort and
                # every core's dispatch in the same cycle, a board top's critical path.
                m.d.comb += self.running.eq(1)
                m.d.sync += header.eq(self.imem.data)
                m.next = "Check-Header"
                exits()

            with m.State("Check-Header"):
                m.d.comb += self.running.eq(1)
                word = header
                hdr = word.body.stream
                reserved = word.as_value() & isa.reserved_mask(isa.Opcode.STREAM)
                with m.If((word.opcode == isa.Opcode.STREAM) & (word.deps.as_value() == 0)
                          & (reserved == 0)
                          & (hdr.vcore == self.vcore) & (hdr.count == self.vcount)):
                    # Prefetch already while the other cores' headers are checked.
                    m.d.sync += [offset.eq(hdr.offset), mark.eq(self.prog_base + hdr.offset),
                                 fetching.eq(1)]
                    with m.If(self.go):
                        m.next = "Stream"
                    with m.Else():
                        m.next = "Header-Ready"
                with m.Else():
                    m.d.comb += [fault_now.eq(1), code.eq(Fault.CORES),
                                 where.eq(self.prog_base + self.vcore)]
                exits()

            with m.State("Header-Ready"):
                m.d.comb += [self.running.eq(1), self.header_ready.eq(1)]
                with m.If(self.go):
                    m.next = "Stream"
                exits()

            with m.State("Stream"):
                held = self.hold & q.r_rdy & ~head.outside & (op == isa.Opcode.FRAME)
                m.d.comb += [self.running.eq(1), defer.eq(in_frame),
                             self.insn.valid.eq(q.r_rdy & ~head.outside & ~fault_now & ~held
                                                & ~self.core_fault_valid),
                             self.frame_wait.eq(held & self.core_idle),
                             q.r_en.eq(handshake)]
                with m.If(q.r_rdy & head.outside & ~self.core_fault_valid):
                    m.d.comb += [fault_now.eq(1), code.eq(Fault.REGION), where.eq(head.pc)]
                with m.If(self.core_fault_valid & in_frame):
                    m.next = "Scan"
                with m.If(handshake):
                    with m.Switch(op):
                        with m.Case(isa.Opcode.FRAME):
                            m.d.sync += [mark.eq(head.pc + 1), in_frame.eq(1),
                                         have_setup.eq(0)]
                        with m.Case(isa.Opcode.SETUP):
                            m.d.sync += have_setup.eq(1)
                        with m.Case(isa.Opcode.SYNC):
                            m.d.sync += [mark.eq(head.pc + 1), in_frame.eq(0),
                                         self.sync_barrier.eq(head.insn.body.sync.barrier)]
                            m.next = "Sync-Wait"
                        with m.Case(isa.Opcode.END):
                            m.d.sync += [mark.eq(head.pc + 1), fetching.eq(0), in_frame.eq(0)]
                            m.next = "End-Wait"
                exits()

            with m.State("Scan"):
                # The core faulted inside a frame: read the rest of the frame first.
                m.d.comb += [self.running.eq(1), defer.eq(1)]
                with m.If(q.r_rdy & head.outside):
                    m.d.comb += [fault_now.eq(1), code.eq(Fault.REGION), where.eq(head.pc)]
                with m.Elif(q.r_rdy & head_boundary & found):
                    m.d.comb += [fault_now.eq(1), code.eq(Fault.ILLEGAL), where.eq(first_bad)]
                with m.Elif(q.r_rdy & head_boundary):
                    m.d.comb += [fault_now.eq(1), code.eq(self.core_fault),
                                 where.eq(mark + self.core_fault_index)]
                with m.Elif(q.r_rdy):
                    m.d.comb += q.r_en.eq(1)
                    with m.If(head_bad & ~found):
                        m.d.sync += [found.eq(1), first_bad.eq(head.pc)]
                    with m.If(op == isa.Opcode.SETUP):
                        m.d.sync += have_setup.eq(1)
                exits()

            with m.State("Sync-Wait"):
                m.d.comb += [self.running.eq(1), self.sync_wait.eq(self.core_idle)]
                with m.If(self.core_idle & self.sync_release):
                    m.next = "Stream"
                exits()

            with m.State("End-Wait"):
                m.d.comb += self.running.eq(1)
                with m.If(self.core_idle):
                    m.d.sync += self.done.eq(1)
                    m.next = "Idle"
                exits()

            with m.State("Faulted"):
                exits()

        with m.If(fault_now):
            m.d.sync += [self.fault.eq(code), self.fault_valid.eq(1),
                         self.fault_pc.eq(where), fetching.eq(0)]
        with m.If(self.start | self.abort):
            m.d.sync += [self.done.eq(0), fetching.eq(0), offset.eq(0), in_frame.eq(0),
                         found.eq(0)]
        with m.If(self.start):
            m.d.sync += [self.fault_valid.eq(0), self.fault.eq(Fault.NONE)]
        return m


def connect_core(m, fetcher, core):
    """Wire ``fetcher`` to the :class:`~.core.Core` it feeds: instructions one way, idle and
    fault reports the other (the same in the one-core top and the pool)."""
    wiring.connect(m, fetcher.insn, core.insn)
    m.d.comb += [fetcher.core_idle.eq(core.idle), fetcher.core_fault.eq(core.fault),
                 fetcher.core_fault_valid.eq(core.fault_valid),
                 fetcher.core_fault_index.eq(core.fault_index)]
