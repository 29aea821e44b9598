"""The board flows' own logic: PLLs from the FPGA families' calculators, how the ULX3S shares
its DSP blocks, what the flow takes from the platform's build script, the per-block
breakdown of a design that does not fit, and one-line errors. (The flow itself, to a
bitstream, is tests/test_board_flow.py.)"""

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth_boards.icebreaker import ICEBreakerPlatform

from vdla.boards import breakdown, program, synth
from vdla.boards.board import BoardDesign
from vdla.boards.pll import make_pll
from vdla.boards.ulx3s import MULT18X18D, dsp_budget, multiplier_plan
from vdla.config import get_config


@pytest.mark.parametrize("family, fin, fout, reached, primitive", [
    ("ecp5", 25, 100, 100.0, "EHXPLLL"),
    ("ecp5", 25, 87, 87.5, "EHXPLLL"),      # the nearest the dividers make
    ("ice40", 12, 24, 24.0, "SB_PLL40_PAD"),
])
def test_pll(family, fin, fout, reached, primitive):
    pll = make_pll(family, fin, fout)
    assert pll.output_mhz == reached
    assert primitive in pll.verilog and "module pll" in pll.verilog
    assert set(pll.instance_ports(1, 2, 3)) == {f"{d}_{p}" for d, p in
                                                zip("ioo", pll.ports)}


def test_pll_out_of_range_is_refused():
    with pytest.raises(synth.ToolError, match="found no PLL for 900 MHz"):
        make_pll("ice40", 12, 900)


@pytest.mark.parametrize("fout, secondary, reached", [
    (100, 50, (100.0, 50.0)),
    (87, 50, (87.5, 51.0417)),          # one VCO: the secondary divider's nearest
])
def test_pll_secondary_output(fout, secondary, reached):
    pll = make_pll("ecp5", 25, fout, secondary_mhz=(secondary,))
    assert (pll.output_mhz, *pll.secondary_mhz) == reached
    assert "CLKOS(clkout1)" in pll.verilog.replace(" ", "") and "output clkout1" in pll.verilog
    assert pll.instance_ports(1, 2, 3, 4) == {"i_clkin": 1, "o_clkout0": 2, "o_locked": 3,
                                              "o_clkout1": 4}
    # Unconnected secondary outputs are allowed; a wrong count is not.
    assert set(pll.instance_ports(1, 2, 3)) == {"i_clkin", "o_clkout0", "o_locked"}
    with pytest.raises(ValueError, match=r"^The PLL has 1 secondary output\(s\), not 2$"):
        pll.instance_ports(1, 2, 3, 4, 5)


def test_pll_one_output_has_no_secondary():
    pll = make_pll("ecp5", 25, 100)
    assert pll.secondary_mhz == pll.secondary_ports == ()
    assert "clkout1" not in pll.verilog


@pytest.mark.parametrize("family, secondary, message", [
    ("ice40", (12,), r"^The ice40 PLL has 0 secondary output\(s\), not 1$"),
    ("ecp5", (10, 20, 30, 40), r"^The ecp5 PLL has 3 secondary output\(s\), not 4$"),
    ("ecp5", (0,), r"^Secondary output frequency must be a positive number of MHz, not 0$"),
])
def test_pll_secondary_outputs_are_checked(family, secondary, message):
    with pytest.raises(ValueError, match=message):
        make_pll(family, 25 if family == "ecp5" else 12, 50, secondary_mhz=secondary)


def test_pll_secondary_out_of_range_is_refused():
    # ecppll writes a divisor of 0 and "inf MHz" rather than failing.
    with pytest.raises(synth.ToolError, match="found no divider for output 1"):
        make_pll("ecp5", 25, 100, secondary_mhz=(1000,))


def test_ulx3s_dsp_budget():
    config = get_config("ulx3s")
    plan = dsp_budget(config)
    used = sum(config.icp * config.ocp * (pe == "dsp") + 2 * config.ocp * (post == "dsp")
               for pe, post in plan)
    assert plan == [("dsp", "dsp"), ("carry", "dsp"), ("carry", "dsp"), ("carry", "dsp")]
    assert used <= MULT18X18D
    assert dsp_budget(config.replace(cores=1)) == [("dsp", "dsp")]


def test_ulx3s_two_cores_keep_their_pe_arrays_off_the_dsp_blocks():
    assert multiplier_plan(get_config("ulx3s-2x8")) == [("carry", "dsp")] * 2
    assert multiplier_plan(get_config("ulx3s-8x4")) == dsp_budget(get_config("ulx3s-8x4"))
    assert synth.get_board("ulx3s").multipliers is multiplier_plan


def test_nextpnr_arguments_are_the_platforms():
    script = ('#!/bin/sh\n"$YOSYS" -q -l top.rpt top.ys\n'
              '"$NEXTPNR_ECP5" --quiet --log top.tim --85k --package CABGA381 --speed 6 '
              '--json top.json --lpf top.lpf --textcfg top.config\n')
    assert synth._nextpnr_arguments(script) == [
        "--85k", "--package", "CABGA381", "--speed", "6", "--json", "top.json",
        "--lpf", "top.lpf"]
    with pytest.raises(synth.ToolError, match="no nextpnr command"):
        synth._nextpnr_arguments('"$YOSYS" top.ys\n')


def test_board_design_elaborates_on_its_platform():
    board = synth.get_board("icebreaker")
    config = get_config(board.config)
    design = BoardDesign(board, config, make_pll("ice40", 12, config.clock_mhz))
    plan = ICEBreakerPlatform().prepare(design, name="top")
    pins = plan.files["top.pcf"]
    # The clock pin goes to the PLL itself; UART and both LEDs are placed.
    assert "set_io clk12_0__io 35" in pins
    assert "set_io uart_0__rx__io 6" in pins and "set_io uart_0__tx__io 9" in pins
    assert "set_io led_0__io 11" in pins and "set_io led_1__io 37" in pins
    assert design.divisor == 8      # 3 Mbaud at 24 MHz
    # The board top is its own module with its signature's ports, as the netlist check needs.
    board_top = plan.files["vdla_board_top.il"]
    assert "module \\vdla_board_top" in board_top
    for port in ("clk", "rst", "uart_rx", "uart_tx", "uart_cycles_per_bit", "leds", "irq"):
        assert f" \\{port}\n" in board_top


_STAT = """
=== vdla_board_top.accelerator.core0.load ===

        +----------Local Count, excluding submodules.
        | 
      258 wires
       21 ports
       14 cells
       10   SB_LUT4
        2   SB_DFF
        1 submodules
        1   vdla_board_top.accelerator.core0.load.check

=== vdla_board_top.accelerator.core0.load.check ===

        +----------Local Count, excluding submodules.
        | 
        5 cells
        5   SB_LUT4
        3   $scopeinfo

=== vdla_board_top.bridge ===

        8 cells
        7   SB_LUT4
        1   SB_RAM40_4K

=== top.reset_sync ===

        2 cells
        2   SB_DFF

=== design hierarchy ===

      999   SB_LUT4
"""


def test_breakdown_adds_modules_into_their_blocks():
    modules = breakdown.parse_stat(_STAT)
    assert modules["vdla_board_top.accelerator.core0.load.check"] == {"SB_LUT4": 5}
    blocks = {}
    for module, cells in modules.items():
        block = blocks.setdefault(breakdown.block_of(module, depth=3), {})
        for cell, n in cells.items():
            block[cell] = block.get(cell, 0) + n
    # A submodule's instance line is not a cell; the hierarchy's totals are not read.
    assert blocks == {"accelerator.core0.load": {"SB_LUT4": 15, "SB_DFF": 2},
                      "bridge": {"SB_LUT4": 7, "SB_RAM40_4K": 1},
                      "(board)": {"SB_DFF": 2}}


def test_synth_errors_are_one_line(capsys):
    assert synth.main(["--board", "ulx3s", "--config", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown configuration 'nosuch'")


def test_program_without_a_bitstream(capsys, tmp_path):
    assert program.main(["--board", "ulx3s", "--bitstream", str(tmp_path / "none.bit")]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: no bitstream at {tmp_path / 'none.bit'}: run make synth "
                   f"BOARD=ulx3s\n")


def test_breakdown_maps_ecp5_luts_without_abc9():
    script = breakdown.blocks_script(
        "read_verilog  pll.v\nread_rtlil top.il\nrename -hide w:*[[]*\n"
        "setattr -mod -set keep_hierarchy 1 vdla_board_top\n    synth_ecp5  -top top\n"
        "write_json top.json\n")
    lines = script.splitlines()
    assert lines[:3] == ["read_verilog  pll.v", "read_rtlil top.il", "rename -hide w:*[[]*"]
    assert lines[3] == "synth_ecp5  -top top -noflatten -run :map_luts"
    assert "abc -lut 4 -dress" in lines and "abc9" not in script
    assert lines[-2:] == ["synth_ecp5  -top top -noflatten -run map_cells:check",
                          "tee -q -o breakdown.txt stat"]
    ice40 = breakdown.blocks_script("read_rtlil top.il\nsynth_ice40 -dsp -top top\n")
    assert ice40.splitlines()[1] == "synth_ice40 -dsp -top top -noflatten"


def _fake_sdram_core(tmp_path, id_width):
    """A LiteDRAMCore with pins, standing for a generated one (no LiteDRAM needed)."""
    from vdla.hw.sdram_controller import InitWrite, LiteDRAMCore
    p = "user_port_axi_0_"
    ports = {"clk": ("input", 1), "rst": ("input", 1), "sdram_dq": ("input", 16),
             f"{p}awaddr": ("input", 25), f"{p}wdata": ("input", 64),
             f"{p}awid": ("input", id_width), f"{p}awsize": ("input", 4),
             f"{p}arsize": ("input", 4), "wb_ctrl_adr": ("input", 30),
             "wb_ctrl_dat_w": ("input", 32)}
    verilog = tmp_path / "fake_core.v"
    verilog.write_text("// stands for a generated core\n")
    return LiteDRAMCore("fake_core", ports, (InitWrite(0, 1),)), verilog


def test_board_design_with_sdram(tmp_path):
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    board = synth.get_board("ulx3s")
    assert board.sdram and board.memory == "bram"
    config = get_config("icebreaker").replace(name="smoke", tenants=1, clock_mhz=50.0)
    pll = make_pll("ecp5", 25, 50, secondary_mhz=(50,))
    id_width = 3    # the smoke configuration's accelerator IDs, one more bit for the arbiter
    design = BoardDesign(board, config, pll, memory="sdram",
                         sdram=_fake_sdram_core(tmp_path, id_width))
    assert design.top.ram is None and design.top.dram.signature.id_width == id_width
    plan = ULX3S_85F_Platform().prepare(design, name="top")
    assert "fake_core.v" in plan.files
    # The SDRAM pins are placed; the controller's clock is the PLL's second output, with
    # its own reset synchronizer.
    assert 'LOCATE COMP "sdram_0__clk__io" SITE "F19";' in plan.files["top.lpf"]
    top = plan.files["top.il"]
    assert "clkout1" in top and "sdram_reset_sync" in top and "fake_core" in top
    # The crossing and the controller are outside the board top, which keeps its ports
    # and gains the DRAM port.
    board_top = plan.files["vdla_board_top.il"]
    assert "crossing" not in board_top and "fake_core" not in board_top
    for port in ("clk", "rst", "uart_rx", "uart_tx", "dram__awvalid", "dram__rdata"):
        assert f" \\{port}\n" in board_top


def test_board_design_memory_is_checked(tmp_path):
    config = get_config("icebreaker").replace(name="smoke", tenants=1)
    ulx3s, icebreaker = synth.get_board("ulx3s"), synth.get_board("icebreaker")
    one = make_pll("ecp5", 25, 50)
    with pytest.raises(ValueError, match=r"^Memory must be one of bram, sdram, not 'dram'$"):
        BoardDesign(ulx3s, config, one, memory="dram")
    with pytest.raises(ValueError, match=r'^The icebreaker has no SDRAM; use memory="bram"$'):
        BoardDesign(icebreaker, config, make_pll("ice40", 12, 24), memory="sdram")
    with pytest.raises(ValueError, match=r"^SDRAM needs a PLL with one secondary output, "
                                         r"not 0$"):
        BoardDesign(ulx3s, config, one, memory="sdram")
    two = make_pll("ecp5", 25, 50, secondary_mhz=(50,))
    with pytest.raises(ValueError, match=r"^On-chip RAM and SDRAM exclude each other$"):
        BoardDesign(ulx3s, config, two, 4096, memory="sdram")
    with warnings.catch_warnings():
        # The board top built before the core's IDs are found wrong is never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r"^ID width 3 differs from the core's \(5\); "
                                             r"generate the core with this ID width$"):
            BoardDesign(ulx3s, config, two, memory="sdram",
                        sdram=_fake_sdram_core(tmp_path, 5))
        gc.collect()
    assert synth.main(["--board", "icebreaker", "--memory", "sdram"]) == 2


def test_a_board_runs_its_configurations():
    from vdla.sim.board_host import BoardError, find_board
    ulx3s = synth.get_board("ulx3s")
    assert ulx3s.config == "ulx3s-8x4" and ulx3s.runs("ulx3s") and not ulx3s.runs("small")
    assert find_board(get_config("ulx3s")) is ulx3s
    assert find_board(get_config("ulx3s-8x4"), "ulx3s") is ulx3s
    with pytest.raises(BoardError, match=r"^board icebreaker runs configuration icebreaker, "
                                         r"not ulx3s-8x4$"):
        find_board(get_config("ulx3s-8x4"), "icebreaker")
    with pytest.raises(BoardError, match=r"^no board runs configuration small; boards: "
                                         r"ulx3s \(ulx3s-8x4, ulx3s, ulx3s-2x8\), icebreaker"):
        find_board(get_config("small"))
