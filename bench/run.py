"""Benchmarks: ``make bench`` (all) and ``make bench-compile`` (static + dynamic stage).

Writes ``results.json`` and ``results.md`` into ``--out`` (a section run again replaces its
old results, the others are kept). Sections:

* ``compile``: for every benchmark model of :mod:`vdla.compiler.zoo` and every configuration
  of ``--config``: quantization through ONNX Runtime (cached), static compile time, link time
  p50/p99 over many repetitions, frames, instructions and IFP size;
* ``numerics``: every test graph on the golden model against ONNX Runtime, the reference
  (graph optimizations disabled) and, for information, the optimized session, on this CPU
  and, where qemu-user is installed, on an emulated CPU without VNNI (:mod:`numerics`);
* ``rtl``: one core on Verilator (:mod:`rtl`): cycles per layer, MAC utilization, DMA
  bandwidth, build time and simulation speed;
* ``multitenant``: the example scenarios and the core splits 75/25, 50/25/25, 25/25/25/25 on
  the 4-core accelerator (:mod:`multitenant`): per-tenant latency and throughput against the
  model alone on the whole pool, STP, ANTT, fairness, spatial vs time-shared throughput and
  the link time of re-allocations.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np

MODELS = ("resnet18", "resnet50", "vgg16", "mobilenetv2")
SECTIONS = ("compile", "numerics", "rtl", "multitenant")


def log(message):
    print(message, file=sys.stderr, flush=True)


def quantized_model(name, size, cache):
    """QDQ ONNX of a zoo model, quantized once with seeded calibration data and cached."""
    from vdla.compiler import zoo
    from vdla.compiler.quantize import quantize_model
    import onnx
    qdq = cache / f"{name}_{size}_qdq.onnx"
    if qdq.exists():
        return qdq
    float_path = cache / f"{name}_{size}.onnx"
    onnx.save(getattr(zoo, name)(size=size), float_path)
    calib = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    start = time.perf_counter()
    quantize_model(float_path, calib, qdq)
    log(f"  quantized {name} in {time.perf_counter() - start:.1f} s")
    return qdq


def bench_compile(name, size, config, cache, repeats, cores):
    from vdla.compiler import ifp
    from vdla.compiler.errors import LinkError
    from vdla.compiler.frontend import load_model
    from vdla.compiler.link import benchmark_link
    from vdla.compiler.static import compile_graph
    path = quantized_model(name, size, cache)
    start = time.perf_counter()
    graph = load_model(path)
    program = compile_graph(graph, config)
    compile_s = time.perf_counter() - start
    data = ifp.dumps(program)
    program = ifp.loads(data, config)
    try:
        timing = benchmark_link(program, config, cores, repeats=repeats)
        link = {f"link_ms_{k}": round(timing[f"{k}_ms"], 4) for k in ("p50", "p99", "max")}
    except LinkError as error:          # e.g. a program larger than the instruction memory
        link = {"link_error": str(error)}
    return {
        "model": name, "input": size, "config": config.name,
        "static_compile_s": round(compile_s, 3), **link,
        "link_cores": list(cores),
        "frames": int(len(program.frames)),
        "instructions": int(len(program.code)),
        "ifp_bytes": len(data),
        "layers": len(program.layers),
        "estimated_cycles_1core": int(program.frames["cycles"].sum()),
    }


def markdown(results):
    text = "# vdla benchmarks\n"
    if "compile" in results:
        text += "\n" + markdown_compile(results)
    if "numerics" in results:
        from numerics import markdown as markdown_numerics
        text += "\n" + markdown_numerics(results["numerics"], results.get("numerics_emulated"))
    if "rtl" in results:
        from rtl import markdown as markdown_rtl
        text += "\n" + markdown_rtl(results["rtl"])
    if "multitenant" in results:
        from multitenant import markdown as markdown_multitenant
        text += "\n" + markdown_multitenant(results["multitenant"])
    return text


def markdown_compile(results):
    rows = ["| model | config | static_compile_s | link_ms_p50 | link_ms_p99 | frames | "
            "instructions | ifp_bytes |", "|---|---|---|---|---|---|---|---|"]
    for r in results.get("compile", []):
        rows.append(f"| {r['model']} | {r['config']} | {r['static_compile_s']} | "
                    f"{r.get('link_ms_p50', 'no link')} | {r.get('link_ms_p99', '-')} | "
                    f"{r['frames']} | "
                    f"{r['instructions']} | {r['ifp_bytes']} |")
    return "## Static and dynamic compilation\n\n" + "\n".join(rows) + "\n"


def main(argv=None):
    from vdla.config import get_config
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--only", choices=SECTIONS, help="run one section only")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--config", default="u200,ulx3s",
                        help="comma-separated configurations of the compile section")
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--rtl-config", default="small", help="configuration of the RTL section")
    parser.add_argument("--rtl-fresh-build", action="store_true",
                        help="time a clean Verilator build (into a scratch directory)")
    parser.add_argument("--backend", choices=("rtl", "iss"), default="rtl",
                        help="backend of the multitenant section (iss: quick, estimated cycles)")
    parser.add_argument("--scenarios", help="multitenant section: comma-separated scenario "
                        "names under scenarios/ or .toml paths (default: all of the section's)")
    parser.add_argument("--alone-inferences", type=int, default=3,
                        help="multitenant section: inferences of each model alone on the pool")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    cache = out / "models"
    cache.mkdir(parents=True, exist_ok=True)
    configs = [get_config(name) for name in args.config.split(",")]
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    sections = [args.only] if args.only else list(SECTIONS)
    if "compile" in sections:
        results["compile"] = []
        for config in configs:
            for name in args.models.split(","):
                log(f"compile/link benchmark: {name} ({args.size}x{args.size}, {config.name})")
                row = bench_compile(name, args.size, config, cache, args.repeats,
                                    cores=sorted({1, 2, 4, config.cores}))
                log(f"  {row}")
                results["compile"].append(row)
    if "numerics" in sections:
        from numerics import bench_numerics, bench_numerics_emulated
        log("numerics: the test graphs on the golden model against ONNX Runtime")
        results["numerics"] = bench_numerics(log=log)
        results["numerics_emulated"] = bench_numerics_emulated(log=log)
    if "rtl" in sections:
        from rtl import bench_rtl
        log(f"RTL benchmark: one core on Verilator ({args.rtl_config})")
        results["rtl"] = bench_rtl(args.rtl_config, args.rtl_fresh_build, log=log)
        log(f"  {json.dumps({k: v for k, v in results['rtl'].items() if k != 'digits_layers'})}")
    if "multitenant" in sections:
        from multitenant import SCENARIOS, bench_multitenant
        names = args.scenarios.split(",") if args.scenarios else SCENARIOS
        log(f"multi-tenant benchmark on the {args.backend.upper()}: {', '.join(names)}")
        results["multitenant"] = bench_multitenant(args.backend, names,
                                                   alone_inferences=args.alone_inferences,
                                                   log=log)
        for s in results["multitenant"]["scenarios"]:
            log(f"  {s['scenario']}: STP {s['stp']}, ANTT {s['antt']}, fairness "
                f"{s['fairness']}, spatial/time-shared {s['spatial_vs_timeshared']}")
        log(f"  multi-tenant section: {results['multitenant']['elapsed_s']} s")
    results_path.write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    log(f"wrote {results_path} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
