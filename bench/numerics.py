"""Numerics against ONNX Runtime: every test graph (``tests/graphs.py``) on the golden model.

For each graph, quantized by ONNX Runtime and compiled for ``small``, the largest difference
of vdla's output (the instruction-set simulator, bit-exact with the RTL) from ONNX Runtime, in
output quantization steps, over a few seeded inputs:

* ``reference_steps``: against the reference, ORT with graph optimizations disabled (the QDQ
  graph's own semantics); the tests hold it to at most one step;
* ``optimized_steps``: against ORT's default optimized session, for information: its fused
  int8 kernels depend on the CPU (``cpu_flags`` records whether this one has VNNI). On a
  CPU without it (``qemu-x86_64 -cpu EPYC-Rome``) they were up to 53 steps off.
"""

import json
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
#: An x86 CPU with AVX2 and neither AVX-512 nor VNNI, for qemu-x86_64's -cpu.
EMULATED_CPU = "EPYC-Rome"


def cpu_flags():
    """The x86 features that decide ORT's int8 kernels, as CPUID reports them to numpy (which,
    unlike /proc/cpuinfo, also holds under an emulated CPU)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return []
    return sorted(name for name in ("AVX2", "AVX512F", "AVX512VNNI", "AVX_VNNI")
                  if features.get(name))


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


def bench_numerics_emulated(cpu=EMULATED_CPU, log=print):
    """:func:`bench_numerics` in a process on an emulated ``cpu`` (Debian's qemu-user), or
    ``{"skipped": why}`` where that cannot run here."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None or platform.machine() != "x86_64":
        return {"skipped": "needs qemu-x86_64 (Debian package qemu-user) on an x86_64 host"}
    log(f"  the same on an emulated {cpu} CPU (qemu-x86_64; a minute or two)")
    run = subprocess.run([qemu, "-cpu", cpu, sys.executable, __file__, "--json"],
                         capture_output=True, text=True)
    if run.returncode:
        return {"skipped": f"the emulated run failed: {run.stderr.strip().splitlines()[-1:]}"}
    return dict(json.loads(run.stdout), emulated_cpu=cpu)


def markdown(r, emulated=None):
    """The ``## Numerics`` section of results.md."""
    text = _table(r, "this machine's CPU")
    if emulated and "skipped" not in emulated:
        text += "\n" + _table(emulated, f"an emulated {emulated['emulated_cpu']} CPU "
                             f"(qemu-x86_64)")
    elif emulated:
        text += f"\nOn an emulated CPU without VNNI: not run ({emulated['skipped']}).\n"
    return "## Numerics against ONNX Runtime\n\n" + text


def _table(r, where):
    lines = [f"On {where}:", "",
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
    results = bench_numerics(log=lambda message: print(message, file=sys.stderr))
    print(json.dumps(results) if "--json" in sys.argv[1:] else markdown(results))
