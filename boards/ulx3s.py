"""ULX3S with the LFE5U-85F: the ``ulx3s`` configuration on its 25 MHz oscillator, FTDI UART
and eight LEDs (two per tenant)."""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board

__all__ = ["BOARD", "MULT18X18D", "dsp_budget"]

#: The 85F's multiplier blocks.
MULT18X18D = 156


def dsp_budget(config, blocks=MULT18X18D):
    """Per core, which multipliers go to DSP blocks: Yosys packs one int8 product per block
    (TOOLCHAIN.md), so ``icp * ocp`` for a PE array and two per output lane for
    post-processing. Cores take blocks in order while they last; the rest build theirs in
    LUTs: PE arrays on the carry chain ("carry", about half the LUTs of "lut"),
    post-processing's wider products as "lut"."""
    plan, left = [], blocks
    for _ in range(config.cores):
        pe = "dsp" if left >= config.icp * config.ocp else "carry"
        left -= config.icp * config.ocp if pe == "dsp" else 0
        post = "dsp" if left >= 2 * config.ocp else "lut"
        left -= 2 * config.ocp if post == "dsp" else 0
        plan.append((pe, post))
    return plan


BOARD = Board(
    name="ulx3s", platform=ULX3S_85F_Platform, family="ecp5", config="ulx3s",
    clock="clk25", clock_direct=False, reset="button_pwr",
    # The FT231X's top rate.
    baud=3_000_000,
    # What the cores leave of the 208 DP16KD; SDRAM is the way to larger models.
    ram_bytes=32 * 1024,
    multipliers=dsp_budget, synth_opts="", programmer=("-b", "ulx3s"), bitstream="bit")
