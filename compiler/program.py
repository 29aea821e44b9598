"""In-memory forms of a compiled program (the IFP) and of a linked image.

:class:`Program` is what the static stage produces and what an IFP file holds
(:mod:`vdla.compiler.ifp` reads and writes it). :class:`LinkedImage` is what the dynamic stage
(:mod:`vdla.compiler.link`) makes of it for one allocation.

Instruction words are stored as ``(n, 2)`` little-endian uint64 arrays ``[low, high]`` (128-bit
words, see :mod:`vdla.isa`); :func:`words_from_ints` / :func:`ints_from_words` convert.

The tenant's DRAM segment holds the weight blob at offset 0 followed by the activation arena;
every DRAM address in the code is relative to the segment base.
"""

import dataclasses

import numpy as np

__all__ = ["TensorEntry", "LayerEntry", "FRAME_DTYPE", "Program", "Allocation", "LinkedImage",
           "words_from_ints", "ints_from_words"]

#: Frame table row: layer index, first instruction word (the frame's FRAME word), word count
#: and estimated cycles on one core.
FRAME_DTYPE = np.dtype([("layer", "<u4"), ("first", "<u4"), ("count", "<u4"),
                        ("cycles", "<u8")])

MASK64 = (1 << 64) - 1


def words_from_ints(ints):
    """List of 128-bit ints -> ``(n, 2)`` uint64 array."""
    out = np.empty((len(ints), 2), np.uint64)
    for i, w in enumerate(ints):
        out[i, 0] = w & MASK64
        out[i, 1] = w >> 64
    return out


def ints_from_words(words):
    """``(n, 2)`` uint64 array -> list of 128-bit ints."""
    return [int(lo) | (int(hi) << 64) for lo, hi in np.asarray(words, np.uint64)]


@dataclasses.dataclass
class TensorEntry:
    """An activation tensor as stored in the segment (layout ``[C/CB][H][W][CB]`` int8).

    ``host`` lists the float steps (:mod:`vdla.compiler.host_steps`) the host applies to a
    model input before quantizing it, or to a model output after dequantizing it.
    """
    name: str
    shape: tuple            # (C, H, W)
    scale: float
    zero_point: int
    onnx_shape: tuple
    offset: int             # byte offset in the segment
    size: int               # bytes (with channel padding)
    role: str               # "input", "output" or "activation"
    host: tuple = ()        # host steps (model input or output only)


@dataclasses.dataclass
class LayerEntry:
    name: str
    kind: str               # conv, dense, pool, add, lut, resize
    inputs: list            # tensor names
    output: str
    deps: list              # indices of the layers producing the inputs
    macs: int = 0


@dataclasses.dataclass
class Program:
    """A compiled, core-count-independent program (the contents of an IFP)."""
    model: str
    config: str             # configuration name it was compiled for
    core_hash: str          # Config.core_hash() it was compiled for
    tensors: list           # [TensorEntry]
    layers: list            # [LayerEntry], topological order
    frames: np.ndarray      # FRAME_DTYPE, ordered by layer
    code: np.ndarray        # (n, 2) uint64 instruction words, frames back to back
    weights: bytes          # placed at segment offset 0
    segment_size: int       # bytes of DRAM segment needed
    inputs: list            # names of input tensors
    outputs: list           # names of output tensors

    def tensor(self, name):
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclasses.dataclass
class Allocation:
    """What the dynamic stage re-targets a program to."""
    cores: int                      # number of virtual cores
    core_mask: int = None           # physical cores (default: the lowest ``cores``)
    prog_base: int = 0              # first instruction-memory word of the region
    prog_size: int = None           # words in the region (default: what the image needs)
    seg_base: int = 0               # DRAM segment base (bytes)
    seg_size: int = None            # DRAM segment size (default: what the program needs)


@dataclasses.dataclass
class LinkedImage:
    """Instruction-memory image of one tenant and the register values that go with it.

    ``words`` is the program region's content: ``cores`` STREAM headers, then each virtual
    core's stream (FRAME-delimited frames, a SYNC per layer boundary, END).
    ``registers`` maps tenant register names of :mod:`vdla.regs` to values.
    ``assignment[f]`` is the virtual core that runs frame ``f``.
    """
    words: np.ndarray
    cores: int
    registers: dict
    assignment: np.ndarray
    streams: list                   # [(offset, length)] per virtual core, in words
