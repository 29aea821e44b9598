"""The board flows' own logic: PLLs from the FPGA families' calculators, how the ULX3S shares
its DSP blocks, what the flow takes from the platform's build script, the per-block
breakdown of a design that does not fit, and one-line errors. (The flow itself, to a
bitstream, is tests/test_board_flow.py.)"""

import pytest
from amaranth_boards.icebreaker import ICEBreakerPlatform

from vdla.boards import breakdown, program, synth
from vdla.boards.board import BoardDesign
from vdla.boards.pll import make_pll
from vdla.boards.ulx3s import MULT18X18D, dsp_budget
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


def test_ulx3s_dsp_budget():
    config = get_config("ulx3s")
    plan = dsp_budget(config)
    used = sum(config.icp * config.ocp * (pe == "dsp") + 2 * config.ocp * (post == "dsp")
               for pe, post in plan)
    assert plan == [("dsp", "dsp"), ("dsp", "lut"), ("carry", "lut"), ("carry", "lut")]
    assert used <= MULT18X18D
    assert dsp_budget(config.replace(cores=1)) == [("dsp", "dsp")]


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
