"""Cycle estimates of instruction frames, used for tiling choices and the frame table.

One function, :func:`estimate_cycles`, turns a frame's work into cycles on one core; the
tiler ranks tilings with it and the frame table records it, so the dynamic stage balances
frames across cores by the same numbers. The constants are first guesses that the cycle
model calibrates against RTL counts.
"""

import math

__all__ = ["estimate_cycles", "layer_cost", "FRAME_OVERHEAD", "INSN_OVERHEAD", "DMA_OVERHEAD",
           "ROW_OVERHEAD", "CORE_COUNTS"]

#: Cycles a core spends at a frame boundary (drain, FRAME, SETUP, pipeline fill).
FRAME_OVERHEAD = 64
#: Dispatch cycles per instruction of the frame.
INSN_OVERHEAD = 2
#: Cycles of DRAM latency exposed per DMA instruction (address phase to first beat).
DMA_OVERHEAD = 16
#: Cycles per DMA burst (one per row of a LOAD/SAVE: address phase, row turnaround).
ROW_OVERHEAD = 4
#: Core counts the tiler optimizes the spread of a layer's frames for.
CORE_COUNTS = (1, 2, 4, 8, 16)


def estimate_cycles(config, compute, dma_words, n_insns=0, n_dma=0, dma_rows=0):
    """Estimated cycles of one frame on one core.

    ``compute``: PE-array cycles, the sum over CONV of
    ``out_h*out_w*n_ob*kh*kw*n_icg*(cb//ocp)`` (``n_icg`` is 1 for depthwise) plus, for MISC,
    ``entries*window`` (a LUT: ``entries*cb``, one lane a cycle); ``dma_words``: 8-byte words moved by LOAD and SAVE; ``n_insns``: the
    frame's instructions; ``n_dma``: how many of them are LOAD/SAVE; ``dma_rows``: their
    bursts (``planes*rows`` each). Loads, compute and saves overlap through double buffering,
    so the frame takes the longer of compute and transfer.
    """
    dma = dma_words * 64 / config.bus_bits + n_dma * DMA_OVERHEAD + dma_rows * ROW_OVERHEAD
    return int(math.ceil(max(compute, dma))) + FRAME_OVERHEAD + n_insns * INSN_OVERHEAD


def layer_cost(n_frames, frame_cycles):
    """Figure of merit of splitting a layer into ``n_frames`` frames of ``frame_cycles`` each.

    Sum over :data:`CORE_COUNTS` of the core-cycles the layer occupies on ``P`` cores, i.e.
    ``P * ceil(n/P) * cycles``: it charges both the total work (overhead of many small frames)
    and the idle cores of a layer with too few frames to spread.
    """
    return sum(p * -(-n_frames // p) for p in CORE_COUNTS) * frame_cycles
