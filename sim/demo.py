"""``make demo``: two tenants, two models, sharing the simulated 4-core accelerator.

Tenant 0 runs the digits CNN (models/digits) on cores 0-1 over held-out images; tenant 1 runs
ResNet-8 (32x32 input, seeded weights, quantized here through ONNX Runtime) on cores 2-3 at the
same time. The run is a scenario (written to build/demo/demo.toml, see docs/scenarios.md): the
models are compiled once, linked for two cores each, loaded through the async host driver over
AXI4-Lite, and executed by the Verilator-simulated accelerator (``--backend iss``: by the
instruction-set simulator). Every output is compared bit for bit with the golden model running
that tenant alone, and with ONNX Runtime running the same QDQ models with graph optimizations
disabled (the QDQ graph's own semantics, :mod:`vdla.sim.onnx_reference`). The verdict is every
one of those checks for every tenant; ORT's optimized int8 kernels, whose results depend on the
CPU, are reported as information only.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

from vdla.compiler import zoo
from vdla.compiler.quantize import quantize_model

from .host import dequantize
from .onnx_reference import optimized_session, output_steps, reference_session, run_batch
from .scenario import format_report, load_scenario, run_scenario_iss

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"
#: Inferences per tenant by default: the 4-core RTL simulates ~20k cycles/s, the ISS far faster.
DEFAULTS = {"rtl": (32, 1), "iss": (360, 4)}


def log(message=""):
    print(message, flush=True)


def _held_out_digits():
    sys.path.insert(0, str(ROOT))
    from models.digits.data import held_out
    return held_out()


def _second_model(out_dir, samples):
    float_path = out_dir / "resnet8.onnx"
    qdq_path = out_dir / "resnet8_qdq.onnx"
    if not qdq_path.exists():
        import onnx
        onnx.save(zoo.resnet8(size=32, classes=10), float_path)
        calib = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
        quantize_model(float_path, calib, qdq_path)
    inputs = np.random.default_rng(2).standard_normal((samples, 3, 32, 32)).astype(np.float32)
    return qdq_path, inputs


def _write_scenario(out_dir, digits_inputs, second_path, second_inputs):
    np.save(out_dir / "digits_inputs.npy", digits_inputs)
    np.save(out_dir / "resnet8_inputs.npy", second_inputs)
    text = f'''# Written by make demo (sim/demo.py); run it again with: vdla sim {out_dir / "demo.toml"}
description = "digits CNN on cores 0-1 and ResNet-8 on cores 2-3, at the same time"
config = "small"

[[tenant]]
name = "digits"
model = "{DIGITS}"
cores = 2
core_mask = 0b0011
inferences = {len(digits_inputs)}
inputs = "digits_inputs.npy"

[[tenant]]
name = "resnet8"
model = "{second_path}"
cores = 2
core_mask = 0b1100
inferences = {len(second_inputs)}
inputs = "resnet8_inputs.npy"
'''
    path = out_dir / "demo.toml"
    path.write_text(text)
    return path


def _outputs(report, name, program):
    """A tenant's outputs, dequantized and flattened (one row per inference)."""
    tenant = next(t for t in report["tenants"] if t["name"] == name)
    entry = program.tensor(program.outputs[0])
    return np.stack([dequantize(np.asarray(out[entry.name], np.int8), entry.scale,
                                entry.zero_point).reshape(-1) for out in tenant["outputs"]])


def _against_ort(report, tenant, model, inputs):
    """A tenant's outputs, ONNX Runtime's reference outputs, and the largest difference in
    output steps from the reference and (information only) from ORT's optimized session."""
    ours = _outputs(report, tenant.name, tenant.program)
    scale = tenant.program.tensor(tenant.program.outputs[0]).scale
    ref = run_batch(reference_session(model), inputs)
    info = run_batch(optimized_session(model), inputs)
    return ours, ref, output_steps(ours, ref, scale), output_steps(ours, info, scale)


def _checks(report, compared):
    """``[(what, passed)]``: every check of every tenant; the verdict is all of them."""
    checks = []
    for t in report["tenants"]:
        checks.append((f"tenant {t['index']} ({t['name']}) bit-identical to the golden model",
                       t["exact"] == t["compared"] == t["inferences"]))
        checks.append((f"tenant {t['index']} ({t['name']}) completed {t['inferences']} "
                       f"inferences", t["completed"] == t["inferences"]))
    for name, (_, _, steps, _) in compared.items():
        checks.append((f"{name}: within one output step of ONNX Runtime", steps <= 1.0001))
    return checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("rtl", "iss"), default="rtl",
                        help="Verilator-simulated accelerator (default) or the ISS")
    parser.add_argument("--out", default=str(ROOT / "build" / "demo"))
    parser.add_argument("--limit", type=int, default=None, help="held-out digits to run")
    parser.add_argument("--second", type=int, default=None, help="ResNet-8 inferences")
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    limit, second = DEFAULTS[args.backend]
    limit = args.limit or limit
    second = args.second or second

    images, labels = _held_out_digits()
    images, labels = images[:limit], labels[:limit]
    second_path, second_inputs = _second_model(out_dir, second)
    path = _write_scenario(out_dir, images, second_path, second_inputs)
    log(f"vdla demo: {path}")
    start = time.perf_counter()
    scenario = load_scenario(path)
    config = scenario.config
    log(f"static stage ({time.perf_counter() - start:.2f} s), configuration {config.name}: "
        f"{config.cores} cores of {config.icp}x{config.ocp} int8 MACs")
    for t in scenario.tenants:
        p = t.program
        log(f"  {t.name}: {len(p.layers)} layers, {len(p.frames)} frames, {len(p.code)} "
            f"instructions, {p.segment_size} bytes of DRAM")

    backend = ("the Verilator-simulated accelerator" if args.backend == "rtl"
               else "the instruction-set simulator")
    log(f"running {len(images)} digits inferences on tenant 0 and {second} ResNet-8 "
        f"inferences on tenant 1 concurrently on {backend} ...")
    start = time.perf_counter()
    if args.backend == "rtl":
        from .rtl_scenario import RtlScenarioError, run_scenario_rtl
        try:
            report = run_scenario_rtl(scenario, out_dir / "report.json", keep_outputs=True,
                                      log=lambda m: log(f"  {m}"))
        except RtlScenarioError as error:
            log(f"demo: {error}")
            return 2
    else:
        report = run_scenario_iss(scenario, log=lambda m: log(f"  {m}"), keep_outputs=True)
    elapsed = time.perf_counter() - start
    log(format_report(report))

    digits, resnet = scenario.tenants
    compared = {tenant.name: _against_ort(report, tenant, model, inputs)
                for tenant, model, inputs in ((digits, DIGITS, images),
                                              (resnet, second_path, second_inputs))}
    checks = _checks(report, compared)

    ours, ref, _, _ = compared["digits"]
    pred, ref_pred = ours.argmax(1), ref.argmax(1)
    log("tenant 0 (digits CNN), first predictions:")
    log("  label " + " ".join(str(v) for v in labels[:16]))
    log("  vdla  " + " ".join(str(v) for v in pred[:16]))
    log(f"  accuracy: vdla {100 * (pred == labels).mean():.2f} %, ONNX Runtime "
        f"{100 * (ref_pred == labels).mean():.2f} % on {len(labels)} held-out images; "
        f"same class on {100 * (pred == ref_pred).mean():.2f} %")
    for index, name in enumerate(("digits", "resnet8")):
        _, _, steps, info_steps = compared[name]
        log(f"tenant {index} ({name}): max |diff| vs ONNX Runtime (reference: graph "
            f"optimizations disabled) {steps:.2f} output steps; for information, vs ORT's "
            f"optimized int8 kernels on this CPU {info_steps:.2f}")
    for t in report["tenants"]:
        log(f"tenant {t['index']} ({t['name']}): {t['exact']}/{t['compared']} outputs "
            f"bit-identical to the golden model running it alone; median latency "
            f"{int(np.median(t['latency_cycles']))} cycles on 2 cores "
            f"({np.median(t['latency_cycles']) / config.clock_mhz:.1f} us at "
            f"{config.clock_mhz:g} MHz)")
    sim = report.get("simulator")
    if sim:
        log(f"simulated {report['total_cycles']} cycles in {sim['wall_seconds']} s "
            f"({sim['cycles_per_second']} cycles/s); {elapsed:.1f} s in all, with the "
            f"Verilator model's build if it was made now")
    else:
        log(f"simulated {report['total_cycles']} cycles in {elapsed:.1f} s")
    failed = [what for what, passed in checks if not passed]
    for what in failed:
        log(f"  FAILED: {what}")
    log(f"demo: OK ({len(checks)} checks)" if not failed
        else f"demo: MISMATCH ({len(failed)} of {len(checks)} checks failed)")
    return 0 if not failed else 1

if __name__ == "__main__":
    sys.exit(main())
