"""DramArbiter in amaranth.sim: random multi-master traffic against the AXI4 RAM model, the
round-robin fairness the bandwidth guarantee is quoted from, and bus throughput."""

import collections
import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable, unsigned
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from vdla.config import get_config
from vdla.hw.axi import BOUNDARY, MAX_BURST, AXI4Signature, Burst, Resp
from vdla.hw.dram_arbiter import READS_IN_FLIGHT, W_ORDER_DEPTH, DramArbiter

from axi_model import AxiRamModel
from hw_sim import hold_until_taken

SIG = AXI4Signature(64, 64)
DRAM = 1 << 16
READ_REGION = 1 << 15               # reads from [0, 32 KiB), each port writes its own slice above
WORD = 8


def simulate(dut, *testbenches):
    """Run ``(testbench, background)`` pairs on ``dut``."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench, background in testbenches:
        sim.add_testbench(bench, background=background)
    sim.run()


def set_burst(ctx, port, prefix, ident, addr, beats):
    ctx.set(getattr(port, f"{prefix}id"), ident)
    ctx.set(getattr(port, f"{prefix}addr"), addr)
    ctx.set(getattr(port, f"{prefix}len"), beats - 1)
    ctx.set(getattr(port, f"{prefix}size"), 3)
    ctx.set(getattr(port, f"{prefix}burst"), Burst.INCR)


def random_bursts(rng, count, start, end, *, data):
    """``count`` bursts ``(id, addr, beats or words)`` inside [start, end), none across 4 KiB;
    with ``data`` they are laid out one after the other (writes must not overlap)."""
    bursts, cursor = [], start
    for _ in range(count):
        beats = rng.randint(1, MAX_BURST)
        addr = cursor + WORD * rng.randint(0, 4) if data else \
            start + WORD * rng.randrange((end - start) // WORD - MAX_BURST)
        if addr // BOUNDARY != (addr + beats * WORD - 1) // BOUNDARY:
            beats = (BOUNDARY - addr % BOUNDARY) // WORD
        assert addr + beats * WORD <= end
        payload = [rng.getrandbits(64) for _ in range(beats)] if data else beats
        bursts.append((rng.randrange(2), addr, payload))
        cursor = addr + beats * WORD
    return bursts


class Master:
    """One core on an arbiter port: read and write bursts after random gaps, at most ``limit``
    outstanding per direction, W possibly ahead of AW, random ``rready`` / ``bready``; checks
    every response it gets (data, ID, order within an ID, ``rlast``) and that none of its
    write data passed before its AW was granted."""

    def __init__(self, index, port, mem, rng, *, reads, writes, stall, limit=4):
        self.index, self.port, self.mem, self.rng = index, port, mem, rng
        self.reads, self.writes = reads, writes
        self.stall, self.limit = stall, limit
        self.expect_r = {0: collections.deque(), 1: collections.deque()}
        self.expect_b = {0: collections.deque(), 1: collections.deque()}
        self.open_reads = self.open_writes = 0
        self.reads_left, self.writes_left = len(reads), len(writes)
        self.aw_edges = []                  # cycle of each AW handshake

    @property
    def done(self):
        return self.reads_left == 0 and self.writes_left == 0

    def processes(self):
        return [self.drive_ar, self.take_r, self.drive_aw, self.drive_w, self.take_b]

    async def _gap(self, ctx, cycle, busy=lambda: False):
        while busy() or self.rng.random() < self.stall:
            await ctx.tick()
            cycle += 1
        return cycle

    async def _send(self, ctx, valid, ready, cycle):
        """Hold ``valid`` until taken; return the cycle count at the handshake edge."""
        return cycle + await hold_until_taken(ctx, valid, ready)

    async def drive_ar(self, ctx):
        cycle = 0
        for ident, addr, beats in self.reads:
            cycle = await self._gap(ctx, cycle, lambda: self.open_reads >= self.limit)
            set_burst(ctx, self.port, "ar", ident, addr, beats)
            cycle = await self._send(ctx, self.port.arvalid, self.port.arready, cycle)
            self.open_reads += 1
            self.expect_r[ident].append([addr, beats])

    async def take_r(self, ctx):
        port = self.port
        while True:
            ready = self.rng.random() >= self.stall
            ctx.set(port.rready, ready)
            _, _, valid, ident, data, last, resp = await ctx.tick().sample(
                port.rvalid, port.rid, port.rdata, port.rlast, port.rresp)
            if not (valid and ready):
                continue
            queue = self.expect_r[ident]
            assert queue, f"port {self.index}: read beat with ID {ident}, none expected"
            head = queue[0]
            word = int.from_bytes(self.mem[head[0]:head[0] + WORD], "little")
            assert data == word, f"port {self.index}: read 0x{head[0]:x} gave 0x{data:x}"
            assert Resp(resp) == Resp.OKAY
            head[0] += WORD
            head[1] -= 1
            assert bool(last) == (head[1] == 0), f"port {self.index}: rlast misplaced"
            if head[1] == 0:
                queue.popleft()
                self.open_reads -= 1
                self.reads_left -= 1

    async def drive_aw(self, ctx):
        cycle = 0
        for ident, addr, words in self.writes:
            cycle = await self._gap(ctx, cycle, lambda: self.open_writes >= self.limit)
            set_burst(ctx, self.port, "aw", ident, addr, len(words))
            cycle = await self._send(ctx, self.port.awvalid, self.port.awready, cycle)
            self.aw_edges.append(cycle)
            self.open_writes += 1
            self.expect_b[ident].append(addr)

    async def drive_w(self, ctx):
        cycle = 0
        ctx.set(self.port.wstrb, 0xFF)
        for k, (_, addr, words) in enumerate(self.writes):
            for j, word in enumerate(words):
                cycle = await self._gap(ctx, cycle)
                ctx.set(self.port.wdata, word)
                ctx.set(self.port.wlast, j == len(words) - 1)
                cycle = await self._send(ctx, self.port.wvalid, self.port.wready, cycle)
                assert k < len(self.aw_edges) and self.aw_edges[k] < cycle, \
                    f"port {self.index}: W of 0x{addr:x} passed before its AW was granted"

    async def take_b(self, ctx):
        port = self.port
        while True:
            ready = self.rng.random() >= self.stall
            ctx.set(port.bready, ready)
            _, _, valid, ident, resp = await ctx.tick().sample(port.bvalid, port.bid,
                                                               port.bresp)
            if valid and ready:
                assert self.expect_b[ident], f"port {self.index}: B with ID {ident}"
                self.expect_b[ident].popleft()
                assert Resp(resp) == Resp.OKAY
                self.open_writes -= 1
                self.writes_left -= 1


def run_random(ports, *, bursts, stall, ram_stall, interleave, seed, limit=20_000):
    rng = random.Random(seed)
    dut = DramArbiter(SIG, ports)
    ram = AxiRamModel(dut.bus, DRAM, latency=3, stall=ram_stall, seed=seed,
                      interleave=interleave, outstanding=6)
    ram.mem[:READ_REGION] = rng.randbytes(READ_REGION)
    image = bytearray(ram.mem)
    share = (DRAM - READ_REGION) // ports // BOUNDARY * BOUNDARY
    masters = []
    for i, port in enumerate(dut.ports):
        start = READ_REGION + i * share
        masters.append(Master(
            i, port, image, random.Random(rng.random()), stall=stall,
            reads=random_bursts(rng, bursts, 0, READ_REGION, data=False),
            writes=random_bursts(rng, bursts, start, start + share, data=True)))
    cycles = []

    async def bench(ctx):
        for cycle in range(limit):
            await ctx.tick()
            if all(master.done for master in masters):
                cycles.append(cycle)
                return
        raise AssertionError(f"traffic not done after {limit} cycles: " + ", ".join(
            f"port {m.index}: {m.reads_left} reads, {m.writes_left} writes left"
            for m in masters))

    simulate(dut, (ram.run, True), (bench, False),
             *((process, True) for master in masters for process in master.processes()))
    for master in masters:
        for _, addr, words in master.writes:
            image[addr:addr + WORD * len(words)] = b"".join(
                w.to_bytes(WORD, "little") for w in words)
    assert ram.mem == image, "DRAM differs from the writes issued"
    assert len(ram.reads) == len(ram.writes) == ports * bursts
    return cycles[0]


@pytest.mark.parametrize("ports, stall, ram_stall, interleave, seed", [
    (4, 0.3, 0.3, False, 1),
    (4, 0.2, 0.2, True, 2),
    (4, 0.0, 0.0, True, 3),
    (3, 0.4, 0.1, True, 4),
])
def test_random_traffic(ports, stall, ram_stall, interleave, seed):
    cycles = run_random(ports, bursts=24, stall=stall, ram_stall=ram_stall,
                        interleave=interleave, seed=seed)
    print(f"{ports} ports, stall {stall}/{ram_stall}: {cycles} cycles")


def saturate(ports, active, *, cycles, reads=True, writes=False, outstanding=None):
    """Ports in ``active`` keep 16-beat read (and / or write) bursts requested every cycle;
    every port takes responses at once. Returns the AR / AW grants as ``(cycle, port)``, the
    bursts granted to other ports while each granted burst waited, bus beats per port and
    the cycle of each bus beat."""
    dut = DramArbiter(SIG, ports)
    ram = AxiRamModel(dut.bus, DRAM, latency=4, outstanding=outstanding)
    stats = dict(grants={"ar": [], "aw": []}, waits={"ar": [], "aw": []},
                 beats={"r": [0] * ports, "w": [0] * ports}, beat_cycles={"r": [], "w": []},
                 bus_ar=[])
    bus = dut.bus
    prefixes = (("ar",) if reads else ()) + (("aw",) if writes else ())

    async def drive(ctx):
        count = {(p, i): 0 for p in prefixes for i in active}
        w_beat = dict.fromkeys(active, 0)
        since = {p: dict.fromkeys(active, 0) for p in prefixes}
        for port in dut.ports:
            ctx.set(port.rready, 1)
            ctx.set(port.bready, 1)
        for i in active:
            for p in prefixes:
                set_burst(ctx, dut.ports[i], p, 0, i * BOUNDARY, MAX_BURST)
                ctx.set(getattr(dut.ports[i], f"{p}valid"), 1)
            if writes:
                ctx.set(dut.ports[i].wstrb, 0xFF)
                ctx.set(dut.ports[i].wvalid, 1)
        handshakes = [(getattr(port, f"{p}valid"), getattr(port, f"{p}ready"))
                      for p in prefixes for port in dut.ports]
        for cycle in range(cycles):
            values = await ctx.tick().sample(
                *(s for pair in handshakes for s in pair),
                bus.rvalid, bus.rready, bus.rid, bus.wvalid, bus.wready,
                bus.arvalid, bus.arready, *(p.wready for p in dut.ports))
            values = values[2:]
            for k, (p, i) in enumerate((p, i) for p in prefixes for i in range(ports)):
                if values[2 * k] and values[2 * k + 1]:
                    stats["grants"][p].append((cycle, i))
                    stats["waits"][p].append(since[p][i])
                    for j in active:
                        since[p][j] += j != i
                    since[p][i] = 0
                    count[p, i] += 1
                    set_burst(ctx, dut.ports[i], p, 0,
                              i * BOUNDARY + (count[p, i] * 128) % BOUNDARY, MAX_BURST)
            rvalid, rready, rid, wvalid, wready, arvalid, arready, *port_wready = \
                values[2 * len(handshakes):]
            if rvalid and rready:
                stats["beats"]["r"][rid >> SIG.id_width] += 1
                stats["beat_cycles"]["r"].append(cycle)
            if wvalid and wready:
                stats["beat_cycles"]["w"].append(cycle)
            if arvalid and arready:
                stats["bus_ar"].append(cycle)
            for i in active:
                if writes and port_wready[i]:
                    stats["beats"]["w"][i] += 1
                    w_beat[i] = (w_beat[i] + 1) % MAX_BURST
                    ctx.set(dut.ports[i].wlast, w_beat[i] == MAX_BURST - 1)

    simulate(dut, (ram.run, True), (drive, False))
    return stats


def per_port(grants, ports):
    window = [i for _, i in grants]
    return [window.count(i) for i in range(ports)]


@pytest.mark.parametrize("ports", [4, 16])
def test_fairness_all_saturating(ports):
    # Two read bursts outstanding at DRAM: the R channel, not the arbiter, sets the pace.
    stats = saturate(ports, range(ports), cycles=40 * MAX_BURST + 16 * ports,
                     outstanding=2)
    order = [i for _, i in stats["grants"]["ar"]]
    assert len(order) >= 2 * ports
    # Every port once per round, in the same order: any window differs by at most one burst.
    assert sorted(order[:ports]) == list(range(ports))
    assert all(order[k] == order[k - ports] for k in range(ports, len(order))), order
    counts = per_port(stats["grants"]["ar"], ports)
    assert max(counts) - min(counts) <= 1, counts
    assert stats["waits"]["ar"] == [*range(ports), *[ports - 1] * (len(order) - ports)]
    beats = stats["beats"]["r"]
    assert max(beats) - min(beats) <= MAX_BURST, beats
    print(f"{ports} ports saturating: {len(order)} bursts, beats per port {beats}")


def test_fairness_half_saturating():
    stats = saturate(4, (1, 3), cycles=40 * MAX_BURST, outstanding=2)
    grants = stats["grants"]["ar"]
    counts = per_port(grants, 4)
    assert counts[0] == counts[2] == 0 and abs(counts[1] - counts[3]) <= 1, counts
    assert max(stats["waits"]["ar"]) <= 1
    beats = stats["beats"]["r"]
    assert abs(beats[1] - beats[3]) <= MAX_BURST and sum(beats) >= 38 * MAX_BURST, beats
    print(f"2 of 4 ports saturating: beats per port {beats}")


def test_write_fairness_and_order():
    stats = saturate(4, range(4), cycles=30 * MAX_BURST, reads=False, writes=True)
    counts = per_port(stats["grants"]["aw"], 4)
    assert max(counts) - min(counts) <= 1, counts
    assert max(stats["waits"]["aw"]) <= 3
    beats = stats["beats"]["w"]
    assert max(beats) - min(beats) <= MAX_BURST, beats


def throughput(beat_cycles, cycles):
    first = beat_cycles[0]
    return len(beat_cycles) / (cycles - first)


def test_throughput():
    cycles = 2000
    stats = saturate(4, (0, 1), cycles=cycles, outstanding=4)
    read = throughput(stats["beat_cycles"]["r"], cycles)
    assert [i for _, i in stats["grants"]["ar"][:8]] == [0, 1] * 4
    stats_w = saturate(4, (0, 1), cycles=cycles, reads=False, writes=True)
    write = throughput(stats_w["beat_cycles"]["w"], cycles)
    print(f"bus beats: reads {100 * read:.1f}%, writes {100 * write:.1f}% of cycles")
    assert read >= 0.95 and write >= 0.95
    # Address bursts from different ports issue on consecutive cycles (no bubble) up to the
    # reads allowed in flight; after that, one as each burst completes.
    stats = saturate(4, range(4), cycles=300)
    bus_ar, beats = stats["bus_ar"], stats["beat_cycles"]["r"]
    assert bus_ar[:READS_IN_FLIGHT] == list(range(bus_ar[0], bus_ar[0] + READS_IN_FLIGHT))
    assert [i for _, i in stats["grants"]["ar"][:8]] == [0, 1, 2, 3] * 2
    for k, cycle in enumerate(bus_ar):
        completed = sum(b < cycle for b in beats) // MAX_BURST
        assert k - completed <= READS_IN_FLIGHT, (k, cycle, completed)


def test_address_channels_registered():
    # With the output and skid registers full, the bus's ready reaches no port in that cycle.
    dut = DramArbiter(SIG, 2)

    async def bench(ctx):
        for port in dut.ports:
            for prefix in ("ar", "aw"):
                set_burst(ctx, port, prefix, 1, 0, 1)
                ctx.set(getattr(port, f"{prefix}valid"), 1)
        await ctx.tick().repeat(3)
        for ready in (0, 1):
            ctx.set(dut.bus.arready, ready)
            ctx.set(dut.bus.awready, ready)
            assert not any(ctx.get(port.arready) or ctx.get(port.awready)
                           for port in dut.ports)
        assert ctx.get(dut.bus.arvalid) and ctx.get(dut.bus.arid) == 0b01
        await ctx.tick()
        assert ctx.get(dut.bus.arvalid) and ctx.get(dut.bus.arid) == 0b11
        # Two writes await their data: no third write grant yet; reads go on up to
        # READS_IN_FLIGHT.
        assert W_ORDER_DEPTH == 2 and READS_IN_FLIGHT > 2
        assert ctx.get(dut.ports[0].arready) and not ctx.get(dut.ports[1].arready)
        assert not any(ctx.get(port.awready) for port in dut.ports)

    simulate(dut, (bench, False))


def test_single_port():
    run_random(1, bursts=16, stall=0.2, ram_stall=0.2, interleave=True, seed=5)


def test_interface():
    with warnings.catch_warnings():
        # Built only to inspect the interface, never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        check_interface()
        gc.collect()


def check_interface():
    for ports, id_width in ((1, 2), (4, 3), (5, 4), (16, 5)):
        dut = DramArbiter(SIG, ports)
        assert dut.signature.members["ports"] == In(SIG).array(ports)
        assert dut.bus.signature == AXI4Signature(64, 64, id_width)
        assert dut.bus.arid.shape() == unsigned(id_width)
        assert dut.index_bits == id_width - 1 and dut.port_count == ports
    u200 = get_config("u200")
    dut = DramArbiter(AXI4Signature(64, u200.bus_bits), u200.cores)
    assert dut.bus.signature == AXI4Signature(64, 128, 5)


def test_arguments():
    with warnings.catch_warnings():
        # The half-built components are never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError,
                           match=r"^Signature must be an AXI4Signature, not 'axi'$"):
            DramArbiter("axi", 4)
        for ports in (0, -1, 2.0, "4", True):
            with pytest.raises(TypeError, match=rf"^Port count must be a positive integer, "
                                                rf"not {ports!r}$"):
                DramArbiter(SIG, ports)
        gc.collect()


def test_quota_serves_a_light_port_first():
    """Three ports saturate reads. Port 0, idle for 2000 cycles (saving credit), then asks for
    12 bursts back to back: each waits for at most one other burst (the one already granted),
    where round robin alone would put it behind all three others."""
    dut = DramArbiter(SIG, 4)
    ram = AxiRamModel(dut.bus, DRAM, latency=4, outstanding=2)
    waits = []

    async def drive(ctx):
        for port in dut.ports:
            ctx.set(port.rready, 1)
        for i in (1, 2, 3):
            set_burst(ctx, dut.ports[i], "ar", 0, i * BOUNDARY, MAX_BURST)
            ctx.set(dut.ports[i].arvalid, 1)
        others, asking = 0, False
        for cycle in range(6000):
            if cycle == 2000:
                set_burst(ctx, dut.ports[0], "ar", 0, 0, MAX_BURST)
                ctx.set(dut.ports[0].arvalid, 1)
                asking = True
            values = await ctx.tick().sample(*(p.arvalid for p in dut.ports),
                                             *(p.arready for p in dut.ports))
            fired = [i for i in range(4) if values[2 + i] and values[6 + i]]
            for i in fired:
                if i:
                    others += asking
                    continue
                waits.append(others)
                others = 0
                if len(waits) == 12:
                    ctx.set(dut.ports[0].arvalid, 0)
                    asking = False
                else:
                    set_burst(ctx, dut.ports[0], "ar", 0, 128 * len(waits), MAX_BURST)
            if len(waits) == 12:
                break

    simulate(dut, (ram.run, True), (drive, False))
    assert len(waits) == 12 and max(waits) <= 1, waits
