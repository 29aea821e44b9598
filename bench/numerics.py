"""Numerics against ONNX Runtime: every test graph (``tests/graphs.py``) on the golden model.

For each graph, quantized by ONNX Runtime and compiled for ``small``, the largest difference
of vdla's output (the instruction-set simulator, bit-exact with the RTL) from ONNX Runtime, in
output quantization steps, over a few seeded inputs:

* ``reference_steps``: against the reference, ORT with graph optimizations disabled (the QDQ
  graph's own semantics); the tests hold it to at most one step;
* ``optimized_steps``: against ORT's default optimized session, for information: its fused
  int8 kernels depend on the CPU (``cpu_flags`` records whether this one has VNNI).
"""

import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)


def cpu_flags():
    """The x86 flags that decide ORT's int8 kernels, as this machine reports them."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni"))


def bench_numerics(config_name="small", log=print):
    sys.path.insert(0, str(ROOT / "tests"))
    import graphs
    from vdla.compiler.frontend import load_model
    from vdla.compiler.static import compile_graph
    from vdla.config import get_config
    from vdla.sim.host import run_program
    from vdla.sim.onnx_reference import optimized_session, output_steps, reference_session

    config = get_config(config_name)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vdla-numerics-") as scratch:
        for name in sorted(graphs.GRAPHS):
            path = graphs.quantized(name, pathlib.Path(scratch))
            program = compile_graph(load_model(path), config)
            (in_name,), (out_name,) = program.inputs, program.outputs
            scale = program.tensor(out_name).scale
            sessions = {"reference_steps": reference_session(path),
                        "optimized_steps": optimized_session(path)}
            worst = dict.fromkeys(sessions, 0.0)
            for seed in SEEDS:
                x = graphs.sample_input(graphs.build(name), seed=seed)
                ours = run_program(program, config, {in_name: x})[out_name]
                for key, session in sessions.items():
                    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
                    worst[key] = max(worst[key], output_steps(ours, ref, scale))
            rows.append({"graph": name, **{k: round(v, 3) for k, v in worst.items()}})
            log(f"  {name}: {rows[-1]}")
    return {"config": config.name, "seeds": len(SEEDS), "cpu_flags": cpu_flags(),
            "graphs": rows,
            "worst_reference_steps": max(r["reference_steps"] for r in rows),
            "worst_optimized_steps": max(r["optimized_steps"] for r in rows)}


def markdown(r):
    """The ``## Numerics`` section of results.md."""
    lines = ["## Numerics against ONNX Runtime", "",
             f"Largest |vdla - ORT| in output steps over {r['seeds']} seeded inputs per graph "
             f"(configuration {r['config']}). The reference is ORT with graph optimizations "
             "disabled; the optimized column is for information only (CPU flags: "
             f"{', '.join(r['cpu_flags']) or 'unknown'}).", "",
             "| graph | reference | optimized (information) |", "|---|---|---|"]
    for row in r["graphs"]:
        lines.append(f"| {row['graph']} | {row['reference_steps']} | "
                     f"{row['optimized_steps']} |")
    lines.append(f"| **worst** | **{r['worst_reference_steps']}** | "
                 f"{r['worst_optimized_steps']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(bench_numerics()))
