"""RTL benchmarks of one core (CoreTop on Verilator, cocotbext-axi's AxiRam as DRAM).

All measurements share one simulator launch:

* cycles per layer of the digits CNN (``models/digits/digits_qdq.onnx``), from the cycles at
  which the core takes each SYNC, next to the golden model's estimate;
* MAC utilization of a 3x3 convolution, C = K = 64, 28 x 28 (one synthetic layer):
  ``MACs / (cycles * icp * ocp)``, over the layer (first FRAME to done) and over the whole run
  (the tenant start clears every buffer first);
* DMA bandwidth on long bursts (LOAD / SAVE of rows of 128 words) as a fraction of the bus
  peak of one beat per cycle per direction: ``beats / unit busy cycles`` for each direction
  alone, and for a LOAD and a SAVE in one frame ``beats / (2 * wall span)``, the span from
  the core taking the FRAME to done (busy counters would read the same for transfers made one
  after the other);
* the Verilator build time (as measured when the build was made, or a fresh build into a
  scratch directory) and the simulated cycles per second.
"""

import json
import pathlib
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"
DMA_SEG_BASE = 0x10000
DMA_ROWS, DMA_LENGTH = 8, 128


def _dma_program(kind, config):
    """LOAD (rows of 128 words into IBUF), SAVE (from OBUF), or both at once in one frame."""
    from vdla import isa
    words_load = min(DMA_ROWS, config.ibuf_depth * config.cb // 8 // DMA_LENGTH)
    words_save = min(DMA_ROWS, config.obuf_depth * config.cb // 8 // DMA_LENGTH)
    fields = dict(buf_addr=0, length=DMA_LENGTH, planes=1, plane_stride=0,
                  row_stride=DMA_LENGTH)
    if kind == "both":          # the same number of beats each way
        words_load = words_save = min(words_load, words_save)
    load = isa.encode(isa.Opcode.LOAD, buf=isa.Buffer.IBUF.value, dram_addr=0,
                      rows=words_load, **fields)
    save = isa.encode(isa.Opcode.SAVE, buf=isa.Buffer.OBUF.value, dram_addr=0x10000,
                      rows=words_save, **fields)
    body = {"load": [load], "save": [save], "both": [load, save]}[kind]
    words = [isa.encode(isa.Opcode.STREAM, vcore=0, count=1, offset=1),
             isa.encode(isa.Opcode.FRAME), *body, isa.encode(isa.Opcode.END)]
    beats = {"load": words_load * DMA_LENGTH, "save": words_save * DMA_LENGTH}
    return np.array([[w & (2**64 - 1), w >> 64] for w in words], np.uint64), beats


def _fresh_build_seconds(config):
    """Build CoreTop into a scratch directory (the shared cache stays as it is); seconds of
    Verilator and the C++ compiler."""
    from vdla.hw.core_top import CoreTop
    from vdla.sim.rtl_build import build
    with tempfile.TemporaryDirectory(prefix="vdla-rtl-build-") as scratch:
        rtl = build(CoreTop(config), "core_top", config, scratch,
                    log_file=pathlib.Path(scratch) / "build.log")
        return rtl.build_seconds


def bench_rtl(config_name="small", fresh_build=False, log=print):
    from vdla.compiler.frontend import load_model
    from vdla.compiler.static import compile_graph
    from vdla.compiler.synthetic import IRBuilder, random_input
    from vdla.config import get_config
    from vdla.sim import rtl_host

    config = get_config(config_name)
    started = time.perf_counter()
    rtl = rtl_host.get_build(config)
    build_info = {"reused": rtl.reused, "get_build_s": round(time.perf_counter() - started, 2)}
    recorded = rtl.build_dir / "build_time.json"
    if fresh_build:
        log("  fresh Verilator build of CoreTop into a scratch directory")
        build_info["verilator_build_s"] = round(_fresh_build_seconds(config), 1)
    elif recorded.exists():
        times = json.loads(recorded.read_text())
        build_info["verilator_build_s"] = round(times["verilator_s"], 1)
        build_info["with_conversion_s"] = round(times["with_conversion_s"], 1)

    digits = compile_graph(load_model(DIGITS), config)
    rng = np.random.default_rng(0)
    x = {digits.inputs[0]: rng.integers(-128, 128, digits.tensor(digits.inputs[0]).shape,
                                        dtype=np.int8)}
    b = IRBuilder("conv3x3_64", seed=1)
    b.output(b.conv(b.input((64, 28, 28)), 64, 3))
    conv_graph = b.graph()
    conv = compile_graph(conv_graph, config)
    runs = [rtl_host.program_run(digits, config, x, marks=True),
            rtl_host.program_run(conv, config, random_input(conv_graph, 1), marks=True)]
    dma_beats = {}
    for kind in ("load", "save", "both"):
        words, dma_beats[kind] = _dma_program(kind, config)
        runs.append(rtl_host.RtlRun(words=words, seg_base=DMA_SEG_BASE, seg_size=0x20000,
                                    max_cycles=200_000, marks=kind == "both"))
    log(f"  {len(runs)} runs on the RTL ({config.name})")
    facts = rtl_host.run_batch(runs, config, rtl=rtl)
    for run in runs:
        if not run.ok:
            raise rtl_host.RtlError(f"bench run {run.describe()}")

    layers, overhead = runs[0].layer_cycles()
    estimate = np.bincount(digits.frames["layer"], weights=digits.frames["cycles"],
                           minlength=len(digits.layers))
    digits_rows = [{"layer": layer.name, "kind": layer.kind, "macs": layer.macs,
                    "rtl_cycles": int(c), "iss_estimate": int(e)}
                   for layer, c, e in zip(digits.layers, layers, estimate)]

    conv_cycles, _ = runs[1].layer_cycles()
    macs = conv.layers[0].macs
    peak = config.icp * config.ocp
    mac = {"shape": "3x3 conv, C=K=64, 28x28, stride 1, pad 1", "macs": macs,
           "layer_cycles": int(conv_cycles[0]), "run_cycles": runs[1].status["cycles"],
           "iss_estimate": int(conv.frames["cycles"].sum()),
           "utilization": round(macs / (conv_cycles[0] * peak), 4),
           "utilization_run": round(macs / (runs[1].status["cycles"] * peak), 4)}

    load, save, both = (r.status for r in runs[2:5])
    dma = {"bus_bits": config.bus_bits, "row_words": DMA_LENGTH,
           "load_beats": dma_beats["load"]["load"], "load_cycles": load["load_busy"],
           "save_beats": dma_beats["save"]["save"], "save_cycles": save["save_busy"],
           "both_beats": dma_beats["both"]["load"] + dma_beats["both"]["save"],
           "both_cycles": int(sum(runs[4].layer_cycles()[0]))}
    dma["load_fraction_of_peak"] = round(dma["load_beats"] / dma["load_cycles"], 4)
    dma["save_fraction_of_peak"] = round(dma["save_beats"] / dma["save_cycles"], 4)
    dma["both_fraction_of_peak"] = round(dma["both_beats"] / (2 * dma["both_cycles"]), 4)

    sim = {"sim_cycles": facts["sim_cycles"], "sim_seconds": round(facts["wall_seconds"], 2),
           "cycles_per_second": round(facts["sim_cycles"] / facts["wall_seconds"]),
           "launch_overhead_s": round(facts["launch_seconds"] - facts["wall_seconds"], 2)}
    return {"config": config.name, "build": build_info, "simulation": sim,
            "digits_layers": digits_rows, "digits_total_cycles": runs[0].status["cycles"],
            "digits_start_overhead_cycles": int(overhead), "mac_utilization": mac, "dma": dma}


def markdown(r):
    """The ``## RTL`` section of results.md."""
    b, s, m, d = r["build"], r["simulation"], r["mac_utilization"], r["dma"]
    lines = [f"## RTL: one core on Verilator ({r['config']})", ""]
    built = b.get("verilator_build_s")
    lines.append(f"Verilator build of CoreTop: {built if built is not None else '?'} s "
                 f"({'cached build reused' if b['reused'] else 'built in this run'}); "
                 f"simulation {s['cycles_per_second']} cycles/s ({s['sim_cycles']} cycles in "
                 f"{s['sim_seconds']} s, launch overhead {s['launch_overhead_s']} s).")
    lines += ["", f"MAC utilization, {m['shape']}: **{100 * m['utilization']:.1f} %** "
              f"({m['macs']} MACs in {m['layer_cycles']} cycles; "
              f"{100 * m['utilization_run']:.1f} % over the whole run of {m['run_cycles']} "
              f"cycles, tenant start included; ISS estimate {m['iss_estimate']}).", "",
              f"DMA on rows of {d['row_words']} words, fraction of the peak of one "
              f"{d['bus_bits']}-bit beat per cycle: "
              f"LOAD **{100 * d['load_fraction_of_peak']:.1f} %**, "
              f"SAVE **{100 * d['save_fraction_of_peak']:.1f} %**, both at once "
              f"{100 * d['both_fraction_of_peak']:.1f} % of two directions over the wall span "
              f"(AxiRam's own per-burst turnaround included).", "",
              f"Digits CNN, cycles per layer (start overhead {r['digits_start_overhead_cycles']} "
              f"cycles, total {r['digits_total_cycles']}):", "",
              "| layer | kind | MACs | RTL cycles | ISS estimate |", "|---|---|---|---|---|"]
    for row in r["digits_layers"]:
        lines.append(f"| {row['layer']} | {row['kind']} | {row['macs']} | {row['rtl_cycles']} "
                     f"| {row['iss_estimate']} |")
    return "\n".join(lines) + "\n"
