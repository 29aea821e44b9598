"""Control block (AXI4-Lite slave) in amaranth.sim, against vdla.regs and the golden model's
register semantics."""

import random

import pytest
from amaranth.hdl import Fragment
from amaranth.lib import data
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_sim import Master
from vdla import regs
from vdla.config import get_config
from vdla.hw.axi import Resp
from vdla.hw.control import Control, control_addr_width
from vdla.regs import Fault, Register
from vdla.sim.iss import Machine, MachineError

CFG = get_config("small")
#: Three tenants and an instruction memory that is not a power of two deep.
ODD = CFG.replace(name="odd", tenants=3, imem_depth=100)
WORD = 0xFFFF_FFFF
PULSES = ("start", "stop", "clear", "abort")
#: Tenant port members holding the read-write registers (the contract with the dispatch).
HELD = {"core_mask": ("CORE_MASK",), "prog_base": ("PROG_BASE",), "prog_size": ("PROG_SIZE",),
        "seg_base": ("SEG_BASE_LO", "SEG_BASE_HI"), "seg_size": ("SEG_SIZE_LO", "SEG_SIZE_HI"),
        "runs": ("RUNS",), "budget": ("BUDGET_LO", "BUDGET_HI")}
RW = [r.name for r in regs.TENANT_REGS if r.access == "rw"]
READ_ONLY = [r.name for r in regs.TENANT_REGS if r.access == "r"]
WRITE_ONLY = [r.name for r in regs.TENANT_REGS if r.access == "w"]
CTRL = {name: 1 << field.offset for name, field in data.Layout.cast(regs.Ctrl)
        if name != "reserved"}


def glob(name):
    return regs.register(name, regs.GLOBAL_REGS).offset


def simulate(bench, config=CFG):
    """Run ``bench(ctx, dut, master, events)``; ``events`` collects, per cycle, the CTRL
    pulses ``(tenant, name)`` and the instruction-memory writes ``("imem", addr, en, data)``."""
    dut = Control(config)
    events = []

    async def watch(ctx):
        pulses = [(t, name) for t in range(config.tenants) for name in PULSES]
        sigs = [getattr(dut.tenants[t], name) for t, name in pulses]
        async for _, _, *values in ctx.tick().sample(*sigs, dut.imem_en, dut.imem_addr,
                                                      dut.imem_data):
            events.extend(p for p, v in zip(pulses, values) if v)
            en, addr, word = values[-3:]
            if en:
                events.append(("imem", addr, en, word))

    async def main(ctx):
        await bench(ctx, dut, Master(ctx, dut.s_axil), events)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(watch, background=True)
    sim.run()


async def take(master, events):
    """The events since the last call (after the last write's effects have been seen)."""
    await master.idle(2)
    seen = list(events)
    events.clear()
    return seen


async def pulse(ctx, signals):
    for sig in signals:
        ctx.set(sig, 1)
    await ctx.tick()
    for sig in signals:
        ctx.set(sig, 0)


def port_state(ctx, dut):
    """Everything a write could change, as the dispatch and the interrupt line see it."""
    return ([{m: ctx.get(getattr(p, m)) for m in list(HELD) + list(PULSES)}
             for p in dut.tenants], ctx.get(dut.irq))


@pytest.mark.parametrize("table, extra", [
    ("TENANT_REGS", Register("SPARE", 0x38, "rw", "")),
    ("TENANT_REGS", Register("SPARE", 0x38, "r", "")),
    ("TENANT_REGS", Register("SPARE", 0x38, "w", "")),
    ("TENANT_REGS", Register("SPARE", 0x38, "w", "", data.StructLayout({"kick": 1}))),
    ("GLOBAL_REGS", Register("SPARE", 0x20, "r", "")),
    ("GLOBAL_REGS", Register("SPARE", 0x20, "rw", "")),
])
def test_unserved_register_is_refused(monkeypatch, table, extra):
    monkeypatch.setattr(regs, table, getattr(regs, table) + (extra,))
    with pytest.raises(ValueError, match=r"SPARE|kick"):
        Control(CFG)


def test_register_map_is_served():
    # Every register of the tables builds; the simulations below address them through the
    # same tables, so a register the block builds but mis-serves fails there.
    Fragment.get(Control(CFG), None)
    assert set(RW) == {name for names in HELD.values() for name in names}
    assert {"start", "stop", "clear", "irq_enable", "irq_ack", "abort"} == set(CTRL)


def test_addr_width():
    assert control_addr_width(CFG) == 25
    assert control_addr_width(get_config("u200")) == 25
    assert control_addr_width(CFG.replace(imem_depth=1 << 21)) == 26
    dut = Control(ODD)
    Fragment.get(dut, None)
    assert len(dut.imem_addr) == 7


@pytest.mark.parametrize("config", [CFG, ODD, get_config("icebreaker")], ids=lambda c: c.name)
def test_globals_match_golden_model(config):
    golden = Machine(config, 64)

    async def bench(ctx, dut, master, events):
        for reg in regs.GLOBAL_REGS:
            assert await master.read(reg.offset) == (golden.read_global(reg.name), Resp.OKAY)

    simulate(bench, config)


@settings(max_examples=3, deadline=None)
@given(st.lists(st.integers(0, WORD), min_size=CFG.tenants * len(RW),
                max_size=CFG.tenants * len(RW)))
def test_read_write_registers(values):
    golden = Machine(CFG, 64)

    async def bench(ctx, dut, master, events):
        order = [(t, name) for t in range(CFG.tenants) for name in RW]
        for (t, name), value in zip(random.Random(values[0]).sample(order, len(order)), values):
            assert await master.write(regs.tenant_offset(t, name), value) == Resp.OKAY
            golden.write_reg(t, name, value)
        for t, port in enumerate(dut.tenants):
            for name in RW:
                assert await master.read(regs.tenant_offset(t, name)) == \
                    (golden.read_reg(t, name), Resp.OKAY)
            for member, names in HELD.items():
                want = sum(golden.read_reg(t, n) << 32 * k for k, n in enumerate(names))
                assert ctx.get(getattr(port, member)) == want, (t, member)
        assert await take(master, events) == []

    simulate(bench)


def test_segment_base_is_word_aligned():
    """SEG_BASE's low 3 bits are wired to zero: no segment starts mid-word, where the DMA's
    word-aligned bursts would begin below it."""
    reg = regs.register("SEG_BASE_LO")
    assert reg.zero_low_bits == 3
    golden = Machine(CFG, 64)
    golden.write_reg(1, reg.name, 0x1237)
    assert golden.read_reg(1, reg.name) == 0x1230

    async def bench(ctx, dut, master, events):
        assert await master.write(regs.tenant_offset(1, reg.name), 0x1237) == Resp.OKAY
        assert await master.read(regs.tenant_offset(1, reg.name)) == (0x1230, Resp.OKAY)
        assert ctx.get(dut.tenants[1].seg_base) == 0x1230

    simulate(bench)


status_fields = st.fixed_dictionaries({
    "running": st.booleans(), "done": st.booleans(), "faulted": st.booleans(),
    "stopped": st.booleans(), "fault": st.sampled_from(Fault),
    "fault_core": st.integers(0, 255), "inferences": st.integers(0, WORD),
    "cycles": st.integers(0, (1 << 64) - 1), "fault_pc": st.integers(0, WORD)})


@settings(max_examples=3, deadline=None)
@given(st.lists(status_fields, min_size=CFG.tenants, max_size=CFG.tenants))
def test_read_only_registers_reflect_the_port(states):
    golden = Machine(CFG, 64)
    for tenant, state in zip(golden.tenants, states):
        for name, value in state.items():
            setattr(tenant, name, value)

    async def bench(ctx, dut, master, events):
        for port, state in zip(dut.tenants, states):
            ctx.set(port.status, {k: state[k] for k in
                                  ("running", "done", "faulted", "stopped", "fault",
                                   "fault_core")})
            for name in ("inferences", "cycles", "fault_pc"):
                ctx.set(getattr(port, name), state[name])
        for t in range(CFG.tenants):
            for name in READ_ONLY:
                assert await master.read(regs.tenant_offset(t, name)) == \
                    (golden.read_reg(t, name), Resp.OKAY), (t, name)

    simulate(bench)


def test_ctrl_pulses():
    rng = random.Random(1)

    async def bench(ctx, dut, master, events):
        for t in range(CFG.tenants):
            for bits in range(1 << len(CTRL)):
                value = sum(CTRL[name] for k, name in enumerate(CTRL) if bits >> k & 1)
                value |= rng.getrandbits(32) & ~sum(CTRL.values())  # reserved: ignored
                assert await master.write(regs.tenant_offset(t, "CTRL"), value) == Resp.OKAY
                want = [(t, name) for name in PULSES if value & CTRL[name]]
                assert sorted(await take(master, events)) == sorted(want), (t, value)

    simulate(bench)


def test_irq_status_and_lines():
    ctrl = {t: regs.tenant_offset(t, "CTRL") for t in range(CFG.tenants)}
    irq = glob("IRQ_STATUS")

    async def bench(ctx, dut, master, events):
        async def expect(status, lines):
            assert await master.read(irq) == (status, Resp.OKAY)
            assert ctx.get(dut.irq) == lines

        finished = [port.finished for port in dut.tenants]
        await expect(0, 0)
        await pulse(ctx, [finished[1], finished[2]])
        await expect(0b0110, 0)
        await master.write(ctrl[1], CTRL["irq_enable"])
        await expect(0b0110, 0b0010)
        await master.write(ctrl[2], CTRL["irq_enable"] | CTRL["stop"])
        await expect(0b0110, 0b0110)            # stop leaves the bit
        assert await master.write(irq, 0b1100) == Resp.SLVERR      # read-only
        await expect(0b0110, 0b0110)
        await master.write(ctrl[2], CTRL["irq_enable"] | CTRL["irq_ack"])
        await expect(0b0010, 0b0010)            # each tenant acknowledges its own bit
        await master.write(ctrl[1], CTRL["irq_enable"] | CTRL["start"])
        await expect(0, 0)
        await pulse(ctx, [finished[1]])
        await expect(0b0010, 0b0010)
        await master.write(ctrl[1], CTRL["irq_enable"] | CTRL["clear"])
        await expect(0, 0)
        await pulse(ctx, finished)
        await expect(0b1111, 0b0110)
        await master.write(ctrl[2], 0)          # every CTRL write sets irq_enable
        await expect(0b1111, 0b0010)
        await master.write(ctrl[0], CTRL["irq_enable"])
        await master.write(ctrl[3], CTRL["irq_enable"])
        await expect(0b1111, 0b1011)
        for t in range(CFG.tenants):
            await master.write(ctrl[t], CTRL["irq_ack"])
        await expect(0, 0)

    simulate(bench)


@pytest.mark.parametrize("config", [CFG, ODD], ids=lambda c: c.name)
def test_imem_window(config):
    rng = random.Random(2)
    last = config.imem_depth - 1
    targets = [(0, k) for k in range(4)] + [(last, 3)]
    targets += [(rng.randrange(config.imem_depth), rng.randrange(4)) for _ in range(6)]

    async def bench(ctx, dut, master, events):
        for word, lane in targets:
            value = rng.getrandbits(32)
            assert await master.write(regs.imem_offset(word) + 4 * lane, value) == Resp.OKAY
            assert await take(master, events) == \
                [("imem", word, 1 << lane, value * 0x1_0000_0001_0000_0001_0000_0001)]

    simulate(bench, config)


def bad_accesses(config):
    """``(kind, address, strobes)`` the block must refuse, derived from vdla.regs."""
    t_last = config.tenants - 1
    bad = [("w", r.offset, 0xF) for r in regs.GLOBAL_REGS if r.access == "r"]
    bad += [("w", regs.tenant_offset(t, name), 0xF) for t in (0, t_last) for name in READ_ONLY]
    bad += [("r", regs.tenant_offset(t, name), 0xF) for t in range(config.tenants)
            for name in WRITE_ONLY]
    targets = [regs.tenant_offset(1, "CORE_MASK"), regs.tenant_offset(1, "CTRL"),
               glob("IRQ_STATUS"), regs.imem_offset(0) + 4]
    bad += [("w", a, s) for a in targets for s in (0, 0x1, 0x7, 0xE, 0x8)]
    bad += [(k, a + d, 0xF) for a in targets for d in (1, 2, 3) for k in "rw"]
    used = {r.offset for r in regs.TENANT_REGS}
    unmapped = [max(r.offset for r in regs.GLOBAL_REGS) + 4, regs.TENANT_BASE - 4]
    unmapped += [regs.tenant_offset(0, "CTRL") + o for o in range(0, regs.TENANT_STRIDE, 4)
                 if o not in used]
    end = regs.TENANT_BASE + config.tenants * regs.TENANT_STRIDE
    unmapped += [end + regs.register(n).offset for n in ("CTRL", "CORE_MASK", "STATUS")]
    unmapped += [regs.IMEM_BASE - regs.TENANT_STRIDE, regs.IMEM_BASE - 4,
                 regs.imem_offset(config.imem_depth), regs.imem_offset(config.imem_depth) + 12,
                 (1 << control_addr_width(config)) - 4]
    bad += [(k, a, 0xF) for a in unmapped for k in "rw"]
    bad += [("r", regs.imem_offset(w) + 4 * k, 0xF) for w in (0, 1) for k in range(4)]
    return bad


GUARDED = [r.name for r in regs.TENANT_REGS if r.guarded]


def test_running_tenant_allocation_is_guarded():
    """While a tenant runs, writes to its allocation and CTRL start/clear answer SLVERR and
    change nothing, as the golden model refuses them; stop, irq_ack, RUNS and the other
    tenants' registers stay writable."""
    golden = Machine(CFG, 64)
    running = 1
    golden.tenants[running].running = True

    async def bench(ctx, dut, master, events):
        ctx.set(dut.tenants[running].status.running, 1)
        await pulse(ctx, [dut.tenants[running].finished])
        cases = [(t, name, 0x5A5A_0000 + k) for t in (0, running) for k, name in
                 enumerate(GUARDED + ["RUNS"])]
        cases += [(t, "CTRL", CTRL[f] | CTRL["irq_enable"]) for t in (0, running)
                  for f in ("start", "clear", "stop", "irq_ack")]
        for t, name, value in cases:
            before = port_state(ctx, dut), await master.read(glob("IRQ_STATUS"))
            resp = await master.write(regs.tenant_offset(t, name), value)
            seen = await take(master, events)
            try:
                golden.write_reg(t, name, value)
                refused = False
            except MachineError:
                refused = True
            if t == 0 and name == "CTRL" and value & CTRL["start"]:
                golden.tenants[0].running = False       # the port models no dispatch
            assert resp == (Resp.SLVERR if refused else Resp.OKAY), (t, name)
            restarts = name == "CTRL" and value & (CTRL["start"] | CTRL["clear"]) != 0
            assert refused == (t == running and (name in GUARDED or restarts)), (t, name)
            if refused:
                assert seen == [], (t, name)
                after = port_state(ctx, dut), await master.read(glob("IRQ_STATUS"))
                assert after == before, (t, name)
            elif name in HELD_REGS:
                assert await master.read(regs.tenant_offset(t, name)) == \
                    (golden.read_reg(t, name), Resp.OKAY)
        # The acknowledgement while running cleared the bit; the guard holds no state.
        assert await master.read(glob("IRQ_STATUS")) == (0, Resp.OKAY)
        ctx.set(dut.tenants[running].status.running, 0)
        for name in GUARDED:
            assert await master.write(regs.tenant_offset(running, name), 7) == Resp.OKAY

    simulate(bench)


HELD_REGS = {name for names in HELD.values() for name in names}


@pytest.mark.parametrize("config", [CFG, ODD], ids=lambda c: c.name)
def test_refused_accesses_change_nothing(config):
    rng = random.Random(3)

    async def bench(ctx, dut, master, events):
        for t in range(config.tenants):
            for name in RW:
                await master.write(regs.tenant_offset(t, name), rng.getrandbits(32))
            await master.write(regs.tenant_offset(t, "CTRL"), CTRL["irq_enable"] * (t % 2))
        await pulse(ctx, [port.finished for port in dut.tenants])
        await take(master, events)
        before = port_state(ctx, dut), await master.read(glob("IRQ_STATUS"))
        for kind, addr, strb in bad_accesses(config):
            if kind == "w":
                resp = await master.write(addr, WORD, strb)
            else:
                value, resp = await master.read(addr)
                assert value == 0, hex(addr)
            assert resp == Resp.SLVERR, (kind, hex(addr), strb)
            assert await take(master, events) == [], (kind, hex(addr), strb)
            after = port_state(ctx, dut), await master.read(glob("IRQ_STATUS"))
            assert after == before, (kind, hex(addr), strb)

    simulate(bench, config)


@pytest.mark.parametrize("order, gap", [("both", 0), ("aw", 0), ("aw", 3), ("w", 0), ("w", 5)])
def test_channel_orders(order, gap):
    rng = random.Random(gap)

    async def bench(ctx, dut, master, events):
        for t in range(CFG.tenants):
            value = rng.getrandbits(32)
            addr = regs.tenant_offset(t, "PROG_BASE")
            assert await master.write(addr, value, order=order, gap=gap) == Resp.OKAY
            assert ctx.get(dut.tenants[t].prog_base) == value
            assert await master.read(addr) == (value, Resp.OKAY)

    simulate(bench)


def test_back_pressure():
    async def bench(ctx, dut, master, events):
        bus, port = dut.s_axil, dut.tenants[2]
        addr = regs.tenant_offset(2, "RUNS")
        await master.send([(bus.awvalid, bus.awready, [(bus.awaddr, addr)]),
                           (bus.wvalid, bus.wready, [(bus.wdata, 5), (bus.wstrb, 0xF)])])
        # A second write is taken into the holding registers but waits for B to be taken.
        await master.send([(bus.awvalid, bus.awready, [(bus.awaddr, addr)]),
                           (bus.wvalid, bus.wready, [(bus.wdata, 6), (bus.wstrb, 0x3)])])
        for _ in range(6):
            assert (ctx.get(bus.bvalid), ctx.get(bus.bresp), ctx.get(port.runs)) == \
                (1, Resp.OKAY, 5)
            assert not ctx.get(bus.awready) and not ctx.get(bus.wready)
            await ctx.tick()
        assert await master.response(bus.bvalid, bus.bready, [bus.bresp], 0) == [Resp.OKAY]
        assert await master.response(bus.bvalid, bus.bready, [bus.bresp], 3) == [Resp.SLVERR]
        assert ctx.get(port.runs) == 5 and not ctx.get(bus.bvalid)

        # R holds its data under back-pressure even when the register changes.
        ctx.set(port.fault_pc, 111)
        await master.send([(bus.arvalid, bus.arready, [(bus.araddr,
                                                       regs.tenant_offset(2, "FAULT_PC"))])])
        while not ctx.get(bus.rvalid):
            await ctx.tick()
        ctx.set(port.fault_pc, 222)
        for _ in range(6):
            assert (ctx.get(bus.rvalid), ctx.get(bus.rdata), ctx.get(bus.rresp)) == \
                (1, 111, Resp.OKAY)
            assert not ctx.get(bus.arready)
            await ctx.tick()
        assert await master.response(bus.rvalid, bus.rready, [bus.rdata], 0) == [111]
        assert await master.read(regs.tenant_offset(2, "FAULT_PC"), r_delay=4) == \
            (222, Resp.OKAY)

    simulate(bench)
