"""Files of a linked image: raw binary, ``$readmemh`` hex and a JSON sidecar of the registers.

* ``stem.bin``: the program region's 128-bit words, 16 little-endian bytes each (what a host
  writes through the instruction-memory window);
* ``stem.hex``: one word per line as 32 hex digits, most significant first (Verilog
  ``$readmemh`` of a 128-bit memory, and what simulators preload);
* ``stem.json``: the tenant register values, the streams and a summary of the frame
  assignment (frames, and estimated cycles when the program is given, per virtual core).
"""

import json
import pathlib

import numpy as np

from vdla import isa

from .program import ints_from_words, words_from_ints

__all__ = ["write_image", "read_image_bin", "read_image_hex", "memory_init", "image_summary"]


def _as_words(words):
    words = np.ascontiguousarray(words, np.uint64)
    if words.ndim != 2 or words.shape[1] != 2:
        raise ValueError(f"instruction words must be an (n, 2) uint64 array, not {words.shape}")
    return words


def image_summary(image, program=None):
    """JSON-ready description of ``image`` (registers, streams, per-core assignment)."""
    assignment = np.asarray(image.assignment, np.int64)
    per_core = np.bincount(assignment, minlength=image.cores)
    summary = {
        "format": "vdla-image",
        "isa_version": isa.ISA_VERSION,
        "words": int(len(image.words)),
        "cores": int(image.cores),
        "registers": {name: int(value) for name, value in image.registers.items()},
        "streams": [{"vcore": k, "offset": int(off), "length": int(length)}
                    for k, (off, length) in enumerate(image.streams)],
        "assignment": {"frames_per_core": per_core.tolist()},
    }
    if program is not None:
        cycles = np.bincount(assignment, weights=program.frames["cycles"].astype(np.float64),
                             minlength=image.cores)
        summary["model"] = program.model
        summary["assignment"]["cycles_per_core"] = [int(c) for c in cycles]
        # Sum over layers of the busiest core's share: what the barriers make the cores wait for.
        layer = program.frames["layer"].astype(np.int64)
        n_layers = len(program.layers)
        per_layer = np.zeros((n_layers, image.cores))
        np.add.at(per_layer, (layer, assignment), program.frames["cycles"].astype(np.float64))
        summary["assignment"]["critical_path_cycles"] = int(per_layer.max(axis=1).sum())
    return summary


def write_image(image, stem, program=None):
    """Write ``stem.bin``, ``stem.hex`` and ``stem.json``; return the three paths.

    ``program`` (optional, the linked :class:`~vdla.compiler.program.Program`) adds the
    estimated cycles per virtual core to the JSON summary.
    """
    stem = pathlib.Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    words = _as_words(image.words)
    # Appended, not substituted: a stem like "resnet.v2" keeps its dot.
    paths = tuple(stem.with_name(stem.name + suffix) for suffix in (".bin", ".hex", ".json"))
    paths[0].write_bytes(words.astype("<u8").tobytes())
    # Most significant 64 bits first on each line, each half as 16 hex digits.
    text = "".join(f"{hi:016x}{lo:016x}\n" for lo, hi in words.tolist())
    paths[1].write_text(text)
    paths[2].write_text(json.dumps(image_summary(image, program), indent=2) + "\n")
    return paths


def read_image_bin(path):
    """Read a ``.bin`` image back as an ``(n, 2)`` uint64 array."""
    data = pathlib.Path(path).read_bytes()
    if len(data) % isa.INSN_BYTES:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of "
                         f"{isa.INSN_BYTES}-byte words")
    return np.frombuffer(data, "<u8").astype(np.uint64).reshape(-1, 2)


def read_image_hex(path):
    """Read a ``$readmemh`` image (32 hex digits a line) as an ``(n, 2)`` uint64 array."""
    lines = [line.split("//")[0].strip() for line in pathlib.Path(path).read_text().splitlines()]
    return words_from_ints([int(line, 16) for line in lines if line])


def memory_init(words):
    """``(n, 2)`` uint64 words -> list of 128-bit ints (an ``amaranth.lib.memory`` init)."""
    return ints_from_words(_as_words(words))
