"""An AXI4 slave (RAM) model for amaranth.sim testbenches, with protocol checks.

:class:`AxiRamModel` serves the AR/R and AW/W/B channels of a DUT's ``m_axi`` port from a
``bytearray``. Read data comes ``latency`` cycles after the address is accepted, then one beat
per cycle; B responses ``latency`` cycles after the last W beat. Optional random stalls
(``stall`` = probability that a ready / valid the model drives is withheld in a cycle) and
error ranges (answered with SLVERR, no data moved) exercise the DUT's flow control.

Responses carry the request's ID (``rid`` = ``arid``, ``bid`` = ``awid``). With ``interleave``
the model answers like a multi-ID slave: each read beat (and each B response) comes from a
randomly chosen ID among those with a due answer, keeping order only within an ID, as AXI4
allows. ``outstanding`` bounds the read bursts accepted and not yet fully answered (``arready``
stays low meanwhile), as a DRAM controller's queue does; ``None`` accepts without bound.

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
    def __init__(self, bus, size, *, latency=4, stall=0.0, seed=0, errors=(),
                 interleave=False, outstanding=None):
        self.bus = bus
        self.mem = bytearray(size)
        self.latency = latency
        self.stall = stall
        self.errors = tuple(errors)         # (start, end) byte ranges that answer SLVERR
        self.interleave = interleave
        self.outstanding = outstanding
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

    def _pick(self, queue, now):
        """Index in ``queue`` (entries ``[due, ..., id]``) of the next answer, or None."""
        if not self.interleave:
            return 0 if queue and queue[0][0] <= now else None
        heads = {}
        for k, entry in enumerate(queue):
            heads.setdefault(entry[-1], k)
        due = [k for k in heads.values() if queue[k][0] <= now]
        return self._rng.choice(due) if due else None

    def _bad(self, addr, beats):
        end = addr + beats * _WORD
        return end > len(self.mem) or any(s < end and addr < e for s, e in self.errors)

    async def run(self, ctx):
        """The model's process: ``sim.add_testbench(model.run, background=True)``."""
        bus = self.bus
        ar_queue = []                       # [due cycle, address, beats left, error, id]
        aw_queue = collections.deque()      # [address, beats, error, id]
        w_beats = collections.deque()       # (data, strobe, last)
        b_queue = []                        # [due cycle, resp, id]
        r_pick = b_pick = None              # the answer presented, held until taken
        now = 0
        while True:
            room = self.outstanding is None or len(ar_queue) < self.outstanding
            ctx.set(bus.arready, room and self._go())
            ctx.set(bus.awready, self._go())
            ctx.set(bus.wready, self._go())
            # Once valid, a response stays valid until taken (AXI): only new ones may stall.
            if r_pick is None:
                r_pick = self._pick(ar_queue, now)
                r_pick = r_pick if r_pick is not None and self._go() else None
            if r_pick is not None:
                _, addr, left, err, rid = ar_queue[r_pick]
                lane = (addr // _WORD) % self._lanes
                word = 0 if err else int.from_bytes(self.mem[addr:addr + _WORD], "little")
                ctx.set(bus.rdata, word << (64 * lane))
                ctx.set(bus.rlast, left == 1)
                ctx.set(bus.rresp, Resp.SLVERR if err else Resp.OKAY)
                ctx.set(bus.rid, rid)
            ctx.set(bus.rvalid, r_pick is not None)
            if b_pick is None:
                b_pick = self._pick(b_queue, now)
                b_pick = b_pick if b_pick is not None and self._go() else None
            ctx.set(bus.bvalid, b_pick is not None)
            if b_pick is not None:
                ctx.set(bus.bresp, b_queue[b_pick][1])
                ctx.set(bus.bid, b_queue[b_pick][2])

            (_, _, arready, awready, wready, arvalid, araddr, arlen, arsize, arburst, arid,
             rready, awvalid, awaddr, awlen, awsize, awburst, awid, wvalid, wdata, wstrb,
             wlast, bready) = await ctx.tick().sample(
                bus.arready, bus.awready, bus.wready,
                bus.arvalid, bus.araddr, bus.arlen, bus.arsize, bus.arburst, bus.arid,
                bus.rready, bus.awvalid, bus.awaddr, bus.awlen, bus.awsize, bus.awburst,
                bus.awid, bus.wvalid, bus.wdata, bus.wstrb, bus.wlast, bus.bready)
            now += 1

            if arvalid and arready:
                beats = self._check_burst("read", araddr, arlen, arsize, arburst)
                self.reads.append((araddr, beats))
                ar_queue.append([now + self.latency, araddr, beats, self._bad(araddr, beats),
                                 arid])
            if r_pick is not None and rready:
                head = ar_queue[r_pick]
                head[1] += _WORD
                head[2] -= 1
                if head[2] == 0:
                    del ar_queue[r_pick]
                r_pick = None
            if awvalid and awready:
                beats = self._check_burst("write", awaddr, awlen, awsize, awburst)
                self.writes.append((awaddr, beats))
                aw_queue.append([awaddr, beats, self._bad(awaddr, beats), awid])
            if wvalid and wready:
                w_beats.append((wdata, wstrb, wlast))
            if b_pick is not None and bready:
                del b_queue[b_pick]
                b_pick = None
            # W may arrive before its AW: apply beats once their burst is known.
            while aw_queue and len(w_beats) >= aw_queue[0][1]:
                addr, beats, err, awid = aw_queue.popleft()
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
                b_queue.append([now + self.latency, Resp.SLVERR if err else Resp.OKAY, awid])
