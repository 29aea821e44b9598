"""The shared instruction memory: written by the host, read by every core's fetcher.

One memory holds every tenant's program region (the host's register block keeps each write
inside the window; regions are kept apart by the host driver and enforced at fetch by each
tenant's PROG_BASE / PROG_SIZE). It has one write port, 32-bit lanes as the AXI4-Lite window
writes them, and one read port shared by the fetchers round robin: a fetcher prefetches a few
words ahead and a core takes far fewer than one instruction per cycle on average, so one read
port keeps every core fed while the memory stays a single block-RAM array (per-core copies
would multiply the largest memory of the design by the number of cores).
"""

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from vdla import isa

__all__ = ["InstructionMemory"]

LANE_BITS = 32


class InstructionMemory(wiring.Component):
    """``config.imem_depth`` words of :data:`vdla.isa.Insn`, one read port shared by ``ports``.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    ports : int
        Number of readers (one per core).
    init : sequence of int, optional
        Initial words (128-bit ints).

    Members
    -------
    write_addr, write_data, write_en : ``In``
        Host writes: lane ``k`` of word ``write_addr`` takes ``write_data[32k:32k+32]`` when
        ``write_en[k]``.
    reads : ``Out(ReadPort.Signature(...)).array(ports)``
        The readers' ports: a request (``en``) is served in a cycle its ``grant`` bit is set,
        and its data is valid the cycle after.
    grant : ``Out(ports)``
        At most one bit set: whose request the read port serves this cycle.
    """

    def __init__(self, config, ports, init=()):
        if not isinstance(ports, int) or ports < 1:
            raise TypeError(f"Number of ports must be a positive integer, not {ports!r}")
        self._ports = ports
        self.addr_bits = max(ceil_log2(config.imem_depth), 1)
        lanes = isa.INSN_BITS // LANE_BITS
        self.memory = Memory(shape=unsigned(isa.INSN_BITS), depth=config.imem_depth,
                             init=[int(w) for w in init])
        super().__init__({
            "write_addr": In(self.addr_bits),
            "write_data": In(isa.INSN_BITS),
            "write_en": In(lanes),
            "reads": Out(ReadPort.Signature(addr_width=self.addr_bits,
                                            shape=isa.Insn)).array(ports),
            "grant": Out(ports),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self.memory
        write = self.memory.write_port(granularity=LANE_BITS)
        read = self.memory.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                     write.en.eq(self.write_en)]

        n = self._ports
        requests = Signal(n)
        m.d.comb += requests.eq(sum((self.reads[k].en << k for k in range(n)), 0))
        # Round robin: the first requester after the last one served wins.
        last = Signal(range(n))
        winner = Signal(range(n))
        found = Signal()
        for offset in reversed(range(1, n + 1)):
            k = Signal(range(n), name=f"candidate_{offset}")
            m.d.comb += k.eq((last + offset) % n if n > 1 else 0)
            with m.If(requests.bit_select(k, 1)):
                m.d.comb += [winner.eq(k), found.eq(1)]
        with m.If(found):
            m.d.comb += self.grant.eq(1 << winner)
            m.d.sync += last.eq(winner)
        addrs = Array(port.addr for port in self.reads)
        m.d.comb += [read.addr.eq(addrs[winner]), read.en.eq(found)]
        for port in self.reads:
            m.d.comb += port.data.eq(read.data)
        return m
