"""An AXI4 slave (RAM) model for amaranth.sim testbenches, with protocol checks.

:class:`AxiRamModel` serves the AR/R and AW/W/B channels of a DUT's ``m_axi`` port from a
``bytearray``. Read data comes ``latency`` cycles after the address is accepted, then one beat
per cycle; B responses ``latency`` cycles after the last W beat. Optional random stalls
(``stall`` = probability that a ready / valid the model drives is withheld in a cycle) and
error ranges (answered with SLVERR, no data moved) exercise the DUT's flow control.

Every accepted burst is checked against the rules the DMA promises (INCR, 8-byte beats, at
most 16 beats, 8-aligned, never across 4 KiB) and recorded in ``reads`` / ``writes`` as
``(address, beats)``.
"""

import collections
import random

from vdla.hw.axi import BOUNDARY, MAX_BURST, Burst, Resp

__all__ = ["AxiRamModel", "ProtocolError"]

_WORD = 8


class ProtocolError(AssertionError):
    pass


class AxiRamModel:
    def __init__(self, bus, size, *, latency=4, stall=0.0, seed=0, errors=()):
        self.bus = bus
        self.mem = bytearray(size)
        self.latency = latency
        self.stall = stall
        self.errors = tuple(errors)         # (start, end) byte ranges that answer SLVERR
        self.reads = []
        self.writes = []
        self._rng = random.Random(seed)
        self._lanes = len(bus.rdata) // 64

    def _go(self):
        return self.stall == 0 or self._rng.random() >= self.stall

    def _check_burst(self, kind, addr, length, size, burst):
        beats = length + 1
        if Burst(burst) != Burst.INCR:
            raise ProtocolError(f"{kind} burst at 0x{addr:x}: {Burst(burst).name}, not INCR")
        if size != 3:
            raise ProtocolError(f"{kind} burst at 0x{addr:x}: size {size}, not 8-byte beats")
        if beats > MAX_BURST:
            raise ProtocolError(f"{kind} burst at 0x{addr:x}: {beats} beats")
        if addr % _WORD:
            raise ProtocolError(f"{kind} burst at unaligned 0x{addr:x}")
        if addr // BOUNDARY != (addr + beats * _WORD - 1) // BOUNDARY:
            raise ProtocolError(f"{kind} burst 0x{addr:x} + {beats} beats crosses 4 KiB")
        return beats

    def _bad(self, addr, beats):
        end = addr + beats * _WORD
        return end > len(self.mem) or any(s < end and addr < e for s, e in self.errors)

    async def run(self, ctx):
        """The model's process: ``sim.add_testbench(model.run, background=True)``."""
        bus = self.bus
        ar_queue = collections.deque()      # [due cycle, address, beats left, error]
        aw_queue = collections.deque()      # [address, beats, error]
        w_beats = collections.deque()       # (data, strobe, last)
        b_queue = collections.deque()       # (due cycle, resp)
        r_valid = b_valid = False
        now = 0
        while True:
            ctx.set(bus.arready, self._go())
            ctx.set(bus.awready, self._go())
            ctx.set(bus.wready, self._go())
            # Once valid, a response stays valid until taken (AXI): only new ones may stall.
            if not r_valid:
                r_valid = bool(ar_queue) and ar_queue[0][0] <= now and self._go()
            if r_valid:
                _, addr, left, err = ar_queue[0]
                lane = (addr // _WORD) % self._lanes
                word = 0 if err else int.from_bytes(self.mem[addr:addr + _WORD], "little")
                ctx.set(bus.rdata, word << (64 * lane))
                ctx.set(bus.rlast, left == 1)
                ctx.set(bus.rresp, Resp.SLVERR if err else Resp.OKAY)
            ctx.set(bus.rvalid, r_valid)
            if not b_valid:
                b_valid = bool(b_queue) and b_queue[0][0] <= now and self._go()
            ctx.set(bus.bvalid, b_valid)
            if b_valid:
                ctx.set(bus.bresp, b_queue[0][1])

            (_, _, arready, awready, wready, arvalid, araddr, arlen, arsize, arburst, rready,
             awvalid, awaddr, awlen, awsize, awburst, wvalid, wdata, wstrb, wlast,
             bready) = await ctx.tick().sample(
                bus.arready, bus.awready, bus.wready,
                bus.arvalid, bus.araddr, bus.arlen, bus.arsize, bus.arburst, bus.rready,
                bus.awvalid, bus.awaddr, bus.awlen, bus.awsize, bus.awburst,
                bus.wvalid, bus.wdata, bus.wstrb, bus.wlast, bus.bready)
            now += 1

            if arvalid and arready:
                beats = self._check_burst("read", araddr, arlen, arsize, arburst)
                self.reads.append((araddr, beats))
                ar_queue.append([now + self.latency, araddr, beats, self._bad(araddr, beats)])
            if r_valid and rready:
                head = ar_queue[0]
                head[1] += _WORD
                head[2] -= 1
                if head[2] == 0:
                    ar_queue.popleft()
                r_valid = False
            if awvalid and awready:
                beats = self._check_burst("write", awaddr, awlen, awsize, awburst)
                self.writes.append((awaddr, beats))
                aw_queue.append([awaddr, beats, self._bad(awaddr, beats)])
            if wvalid and wready:
                w_beats.append((wdata, wstrb, wlast))
            if b_valid and bready:
                b_queue.popleft()
                b_valid = False
            # W may arrive before its AW: apply beats once their burst is known.
            while aw_queue and len(w_beats) >= aw_queue[0][1]:
                addr, beats, err = aw_queue.popleft()
                for i in range(beats):
                    data, strobe, last = w_beats.popleft()
                    if bool(last) != (i == beats - 1):
                        raise ProtocolError(f"write burst 0x{addr:x}: wlast on beat {i} "
                                            f"of {beats}")
                    a = addr + i * _WORD
                    lane = (a // _WORD) % self._lanes
                    if strobe != 0xFF << (_WORD * lane):
                        raise ProtocolError(f"write 0x{a:x}: strobe 0x{strobe:x}")
                    if not err:
                        word = (data >> (64 * lane)) & ((1 << 64) - 1)
                        self.mem[a:a + _WORD] = word.to_bytes(_WORD, "little")
                b_queue.append((now + self.latency, Resp.SLVERR if err else Resp.OKAY))
