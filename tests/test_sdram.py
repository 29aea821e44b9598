"""The ULX3S SDRAM path: LiteDRAM's generated controller behind the accelerator's AXI4 port.

Fast tests (no LiteDRAM needed): the power-up sequencer in Amaranth's simulator and the
readers of the generator's output. Slow test (``-m slow``): generates the core with
LiteDRAM's SDRAM model in the scratch environment (``build/litedram-venv``, made on first
use), builds it with :class:`~vdla.hw.sdram_controller.SDRAMController` on Verilator, and
writes then reads INCR bursts through the AXI4 port with cocotbext-axi's ``AxiMaster``. The
cocotb test itself is :func:`sdram_roundtrip` below (this file is also the cocotb module).
"""

import gc
import hashlib
import os
import pathlib
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PERIOD_NS = 20          # 50 MHz, the clock the core's timings were generated for


# -- Fast tests ---------------------------------------------------------------------------

SAMPLE_CSR = """\
#--------------------------------------------------------------------------------
csr_base,ddrctrl,0x00000000,,
csr_register,ddrctrl_init_done,0x00000000,1,rw
csr_register,sdram_dfii_control,0x00000800,1,rw
csr_register,sdram_dfii_pi0_command,0x00000804,1,rw
csr_register,sdram_dfii_pi0_command_issue,0x00000808,1,rw
csr_register,sdram_dfii_pi0_address,0x0000080c,1,rw
csr_register,sdram_dfii_pi0_baddress,0x00000810,1,rw
"""

SAMPLE_H = """\
#define DFII_CONTROL_SEL 0x01
#define DFII_CONTROL_CKE 0x02
#define DFII_COMMAND_CS 0x01
#define DFII_COMMAND_WE 0x02
#define DFII_COMMAND_RAS 0x08

static inline void init_sequence(void)
{
\t/* Bring CKE high */
\tsdram_dfii_pi0_address_write(0x0);
\tsdram_dfii_control_write(DFII_CONTROL_CKE);
\tcdelay(20000);

\t/* Precharge All */
\tsdram_dfii_pi0_address_write(0x400);
\tcommand_p0(DFII_COMMAND_RAS|DFII_COMMAND_WE|DFII_COMMAND_CS);

}
"""


def test_read_init_turns_the_header_into_writes():
    from vdla.boards.sdram import read_init
    writes = read_init(SAMPLE_CSR, SAMPLE_H)
    assert [(w.address, w.value, w.delay) for w in writes] == [
        (0x80c >> 2, 0, 0), (0x800 >> 2, 0x02, 20000),
        (0x80c >> 2, 0x400, 0), (0x804 >> 2, 0x0b, 0), (0x808 >> 2, 1, 0),
        (0x800 >> 2, 0x01, 0), (0, 1, 0)]
    assert writes[3].comment == "Precharge All"


def test_read_init_refuses_what_it_cannot_read():
    from vdla.boards.sdram import read_init
    with pytest.raises(ValueError, match="cannot read"):
        read_init(SAMPLE_CSR, SAMPLE_H.replace("cdelay(20000);", "sdram_leveling();"))


def test_read_ports():
    from vdla.boards.sdram import read_ports
    text = ("module core (\n    input  wire          clk,\n    output wire   [12:0] sdram_a,\n"
            "    input  wire   [15:0] sdram_dq\n);\nendmodule\n")
    assert read_ports(text, "core") == {"clk": ("input", 1), "sdram_a": ("output", 13),
                                        "sdram_dq": ("input", 16)}


def test_ulx3s_chip_from_the_board_pins():
    from vdla.boards.sdram import core_config, ulx3s_chip
    chip = ulx3s_chip()
    assert (chip.address_pins, chip.bank_pins, chip.data_pins) == (13, 2, 16)
    config = core_config(chip)
    assert config["sdram_module_nb"] == 2 and config["cpu"] is None
    assert config["user_ports"]["axi_0"]["data_width"] == 64


def test_sdram_init_plays_the_writes():
    from amaranth.sim import Simulator
    from vdla.hw.sdram_controller import InitWrite, SDRAMInit

    writes = [InitWrite(3, 0xAB, 5), InitWrite(7, 0x1234, 0), InitWrite(1, 1, 2)]
    dut = SDRAMInit(writes)
    seen = []

    async def bench(ctx):
        cycle = 0
        while not ctx.get(dut.done):
            if ctx.get(dut.bus.cyc) and ctx.get(dut.bus.stb):
                assert ctx.get(dut.bus.we) and ctx.get(dut.bus.sel) == 0xF
                seen.append((ctx.get(dut.bus.adr), ctx.get(dut.bus.dat_w), cycle))
                ctx.set(dut.bus.ack, 1)
            else:
                ctx.set(dut.bus.ack, 0)
            await ctx.tick()
            cycle += 1
            assert cycle < 100

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [(a, v) for a, v, _ in seen] == [(3, 0xAB), (7, 0x1234), (1, 1)]
    # The second write waits for the first one's delay (5 cycles) and the Wait state.
    assert seen[1][2] - seen[0][2] >= 5 + 1
    assert seen[2][2] - seen[1][2] < 5


def test_controller_checks_its_arguments():
    from amaranth.hdl import UnusedElaboratable
    from vdla.hw.sdram_controller import InitWrite, LiteDRAMCore, SDRAMController, SDRAMInit
    p = "user_port_axi_0_"
    ports = {f"{p}awaddr": ("input", 25), f"{p}wdata": ("input", 64), f"{p}awid": ("input", 1)}
    core = LiteDRAMCore("core", ports, (InitWrite(0, 1),))
    assert core.size_bytes == 32 << 20 and not core.has_pads
    with warnings.catch_warnings():
        # The half-built components are never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match=r"^Core must be a LiteDRAMCore, not 'core'$"):
            SDRAMController("core")
        with pytest.raises(ValueError, match=r"^Data width 128 differs from the core's AXI "
                                             r"port \(64 bits\); generate the core at this "
                                             r"width$"):
            SDRAMController(core, data_width=128)
        with pytest.raises(ValueError, match=r"^ID width 4 differs from the core's \(1\); "
                                             r"generate the core with this ID width$"):
            SDRAMController(core, id_width=4)
        with pytest.raises(ValueError, match=r"^Address width 24 cannot reach the core's "
                                             r"33554432 bytes \(25 bits\)$"):
            SDRAMController(core, addr_width=24)
        with pytest.raises(ValueError, match=r"^The init sequence must have at least one "
                                             r"write$"):
            SDRAMInit([])
        gc.collect()    # the exceptions' tracebacks hold the components in cycles


# -- Slow test: generated controller + SDRAM model on Verilator ----------------------------

def _build_sim():
    """Generate the simulation core, wrap it, and build both with Verilator (reused while
    their Verilog is unchanged). Returns (runner, toplevel, build_dir)."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from vdla.boards import sdram
    from vdla.hw.sdram_controller import SDRAMController
    from vdla.sim.rtl_build import BUILD_ARGS, MAKEFLAGS, _environment, verilator_path

    core, core_verilog = sdram.load_core(sdram.generate(sdram.core_config(sim=True)))
    top = "sdram_top"
    text = verilog.convert(SDRAMController(core), name=top, emit_src=False)
    digest = hashlib.sha256((text + core_verilog.read_text() + MAKEFLAGS).encode()).hexdigest()
    out = ROOT / "build" / "rtl" / f"sdram-{digest[:12]}"
    runner = get_runner("verilator")
    stamp = out / "verilog.sha256"
    if not (stamp.exists() and stamp.read_text() == digest and (out / top).exists()):
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{top}.v").write_text(text)
        # LiteX's Verilog trips more lints than Amaranth's; none is an error.
        args = [*BUILD_ARGS, "-Wno-lint", "-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT",
                "--no-public-flat-rw", str(out / "ports.vlt")]
        (out / "ports.vlt").write_text(
            f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
        with _environment(MAKEFLAGS=MAKEFLAGS, PATH=verilator_path()):
            runner.build(sources=[out / f"{top}.v", core_verilog], hdl_toplevel=top,
                         build_args=args, build_dir=out, always=True,
                         log_file=out / "build.log")
        stamp.write_text(digest)
    return runner, top, out


@pytest.mark.slow
def test_sdram_roundtrip_verilator(tmp_path):
    runner, top, out = _build_sim()
    results = runner.test(test_module="test_sdram", hdl_toplevel=top,
                          hdl_toplevel_lang="verilog", build_dir=out, test_dir=tmp_path,
                          extra_env={"PYTHONPATH": os.pathsep.join(
                              [str(ROOT / "tests"), *sys.path])})
    from cocotb_tools.runner import get_results
    total, failed = get_results(results)
    assert total >= 1 and failed == 0


# -- cocotb test (runs inside the simulator) -----------------------------------------------

try:
    import cocotb
except ImportError:     # the fast tests need no cocotb
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def sdram_roundtrip(dut):
        """Wait for the power-up sequence, write INCR bursts (full, partial-strobe, at the
        top of the 32 MB) through AXI4, read them back, and overlap reads with writes."""
        import logging
        import random

        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
        from cocotbext.axi import AxiBus, AxiMaster

        Clock(dut.clk, PERIOD_NS, unit="ns").start()
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        start = cocotb.simtime.get_sim_time("ns")

        async def wait_init():
            while not dut.init_done.value:
                await RisingEdge(dut.clk)
        await with_timeout(wait_init(), 40_000 * PERIOD_NS, "ns")
        init_cycles = (cocotb.simtime.get_sim_time("ns") - start) // PERIOD_NS
        dut._log.info("init_done after %d cycles", init_cycles)

        axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi", bus_separator="__"), dut.clk,
                        dut.rst)
        for port in (axi.write_if, axi.read_if):
            port.log.setLevel(logging.WARNING)
        rng = random.Random(1)
        size = 32 << 20
        cases = [
            (0x0000, 16 * 8),                   # one 16-beat burst
            (0x1F80, 8 * 8),                    # up to a 4 KiB boundary
            (size - 256, 256),                  # the top of the chip: 32 beats
            (0x800000 + 0x400, 64 * 8),         # another bank, a 64-beat burst
            (0x12300, 256),                     # the background of the partial write
        ]
        written = {}
        for address, length in cases:
            data = bytes(rng.getrandbits(8) for _ in range(length))
            await with_timeout(axi.write(address, data), 200_000, "ns")
            written[address] = data
        # Unaligned: partial strobes at both ends; the bytes around it must stay.
        patch = bytes(rng.getrandbits(8) for _ in range(37))
        await with_timeout(axi.write(0x12345, patch), 200_000, "ns")
        at = 0x12345 - 0x12300
        written[0x12300] = written[0x12300][:at] + patch + written[0x12300][at + len(patch):]
        for address, data in written.items():
            back = await with_timeout(axi.read(address, len(data)), 200_000, "ns")
            assert back.data == data, f"read back at 0x{address:x} differs"
        # Reads and writes at once, on different rows.
        fresh = bytes(rng.getrandbits(8) for _ in range(16 * 8))
        write = cocotb.start_soon(axi.write(0x40000, fresh))
        read = cocotb.start_soon(axi.read(0x0000, 16 * 8))
        await with_timeout(write, 200_000, "ns")
        assert (await with_timeout(read, 200_000, "ns")).data == written[0x0000]
        assert (await axi.read(0x40000, len(fresh))).data == fresh
        cycles = (cocotb.simtime.get_sim_time("ns") - start) // PERIOD_NS
        dut._log.info("passed: %d transfers checked in %d cycles", 2 * len(cases) + 4, cycles)
