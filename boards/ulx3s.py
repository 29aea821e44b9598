"""ULX3S with the LFE5U-85F: the ``ulx3s-8x4`` configuration (or ``ulx3s``) on its 25 MHz
oscillator, FTDI UART, eight LEDs (two per tenant) and 32 MB SDRAM."""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board

__all__ = ["BOARD", "MULT18X18D", "dsp_budget"]

#: The 85F's multiplier blocks.
MULT18X18D = 156


def multiplier_plan(config):
    """The ULX3S's plan: :func:`dsp_budget`, except that two 8x8 cores keep both PE arrays on
    the carry chain. On DSP blocks they crowd the die's upper rows, where that build's routing
    congested; off them it routes (docs/boards.md), and at two thirds of the LUTs it has the
    LUTs to spare. Four cores need the blocks to fit."""
    plan = dsp_budget(config)
    if config.cores == 2:
        plan = [("carry", post) for _, post in plan]
    return plan


def dsp_budget(config, blocks=MULT18X18D):
    """Per core, which multipliers go to DSP blocks: Yosys packs one int8 product per block
    (TOOLCHAIN.md), so ``icp * ocp`` for a PE array and two per output lane for
    post-processing. Post-processing's 17 x 16 products save the most LUTs a block (an
    8 x 8 core's in LUTs: 14.2k LUT4 against 5.4k, 544 a block; its PE array on the carry
    chain: 6.5k against 1.8k, 74 a block), so every core's post-processing takes blocks
    first, then PE arrays while blocks last; the other PE arrays are built on the carry
    chain ("carry"). Post-processing falls back to "lut" only when blocks run out for it."""
    plan, left = [], blocks
    posts = []
    for _ in range(config.cores):
        post = "dsp" if left >= 2 * config.ocp else "lut"
        left -= 2 * config.ocp if post == "dsp" else 0
        posts.append(post)
    for post in posts:
        pe = "dsp" if left >= config.icp * config.ocp else "carry"
        left -= config.icp * config.ocp if pe == "dsp" else 0
        plan.append((pe, post))
    return plan


BOARD = Board(
    # Four 8x8 cores (``ulx3s``) do not fit the 85F's LUTs; four 8x4 cores do (docs/boards.md).
    name="ulx3s", platform=ULX3S_85F_Platform, family="ecp5", config="ulx3s-8x4",
    configs=("ulx3s", "ulx3s-2x8"),
    clock="clk25", clock_direct=False, reset="button_pwr",
    # The FT231X's top rate.
    baud=3_000_000,
    # What the cores leave of the 208 DP16KD; SDRAM is the way to larger models.
    ram_bytes=32 * 1024,
    multipliers=multiplier_plan, synth_opts="", programmer=("-b", "ulx3s"), bitstream="bit",
    # 32 MB of SDR SDRAM (boards/sdram.py) with MEMORY=sdram. On-chip RAM (ram_bytes above)
    # stays the default: its netlist is checked at gate level, and the host sizes its DRAM
    # from ram_bytes.
    sdram=True, memory="bram")
