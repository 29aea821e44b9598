"""iCEBreaker (iCE40UP5K): the one-core ``icebreaker`` configuration on the 12 MHz
oscillator, FTDI UART and the board's LEDs; its eight SB_MAC16 DSPs are the PE array's."""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="icebreaker", platform=ICEBreakerPlatform, family="ice40", config="icebreaker",
    # The UP5K's PLL can only be driven from the clock pin itself (SB_PLL40_PAD).
    clock="clk12", clock_direct=True, reset="button",
    baud=3_000_000,
    # What the digits CNN's tenant needs (24 KiB). The UP5K's 15 KB of block RAM cannot hold
    # it next to the core's buffers: its 128 KB of single-port SPRAM is where it belongs, once
    # the on-chip RAM can be built on it.
    ram_bytes=32 * 1024,
    # -dsp: products into the SB_MAC16s (Yosys leaves them in LUTs otherwise).
    multipliers=lambda config: [("infer", "infer")] * config.cores,
    synth_opts="-dsp", programmer=("-b", "ice40_generic"), bitstream="bin")
