"""Lookup-table activations, nearest upsampling, kernels cut into bands and ConvTranspose on
the Verilator-simulated accelerator, bit for bit against the instruction-set simulator.

tests/test_lut_activation.py, tests/test_resize.py, tests/test_big_kernels.py and
tests/test_conv_transpose.py check the models against ONNX Runtime on the ISS. Here they share
the ``small`` accelerator, as in tests/test_rtl_models.py (whose checks these reuse): in one
simulator launch, one core each, the EfficientNet-like block (SiLU), the MobileNetV3-like block
(HardSwish, HardSigmoid), an FPN merge (Resize x2, whose LOADs read each pixel twice, then an
Add) and a 15x15 convolution of a 4-row input in row bands summed in ABUF (two of them wholly
in the padding); in a second, a decoder stage whose ConvTranspose (kernel 4, stride 2) is four
phase convolutions saved interleaved, on two cores, and convolutions of strides (2, 1) and
(1, 2) (two phases each, the same way) and of dilation 2 (a zero-expanded kernel), on one. Two inferences each. Every output and the
tenant's whole DRAM segment after its last inference must equal the ISS's. The accelerator is
the one the other RTL tests build (cached under build/rtl).
"""

import numpy as np
import pytest

from graphs import sample_input
from test_concat import _qdq
from test_lut_activation import efficientnet_block, mobilenetv3_block
from test_big_kernels import bands_in_the_padding
from test_conv_transpose import conv_transpose_model
from test_strides_dilation import strides_atrous_model
from test_resize import _qdq as _qdq_as_built, fpn
from test_rtl_models import INFERENCES, quiet, rtl_problems
from vdla.sim.rtl_scenario import run_scenario_rtl
from vdla.sim.scenario_file import load_scenario

pytestmark = pytest.mark.rtl

#: Simulator launches, each ``{tenant name: (builder, quantizer, cores)}``; the FPN's Resize
#: and the decoder's ConvTranspose would be rewritten by ORT's pre-processing, so they are
#: quantized as built.
LAUNCHES = (
    {"efficientnet": (efficientnet_block, _qdq, 1), "mobilenetv3": (mobilenetv3_block, _qdq, 1),
     "fpn": (fpn, _qdq_as_built, 1), "bands": (bands_in_the_padding, _qdq, 1)},
    {"decoder": (conv_transpose_model, _qdq_as_built, 2),
     "strides": (strides_atrous_model, _qdq_as_built, 1)},
)
#: The layer kind each tenant is here for.
KINDS = {"efficientnet": "lut", "mobilenetv3": "lut", "fpn": "resize", "bands": "conv",
         "decoder": "convt", "strides": "convt"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(i)``: ``(scenario, RTL report)`` of launch ``i``'s tenants running together."""
    done = {}

    def run(i):
        if i not in done:
            done[i] = _launch(tmp_path_factory.mktemp(f"rtl_ops{i}"), LAUNCHES[i])
        return done[i]
    return run


def _launch(d, tenants):
    text = 'config = "small"\n'
    for name, (builder, quantize, cores) in tenants.items():
        model = builder()
        sub = d / name
        sub.mkdir()
        path = quantize(model, sub)
        np.save(d / f"{name}_x.npy", sample_input(model, seed=9, count=INFERENCES))
        text += (f'\n[[tenant]]\nname = "{name}"\nmodel = "{path}"\ncores = {cores}\n'
                 f'inferences = {INFERENCES}\ninputs = "{d / f"{name}_x.npy"}"\n')
    (d / "ops.toml").write_text(text)
    scenario = load_scenario(d / "ops.toml")
    report = run_scenario_rtl(scenario, log=quiet, keep_outputs=True, dram_dump=True)
    return scenario, report


@pytest.mark.parametrize("launch, name", [(i, name) for i, tenants in enumerate(LAUNCHES)
                                          for name in tenants])
def test_rtl_matches_iss(runs, launch, name):
    scenario, report = runs(launch)
    spec = next(s for s in scenario.tenants if s.name == name)
    t = next(t for t in report["tenants"] if t["name"] == name)
    assert any(layer.kind == KINDS[name] for layer in spec.reference.layers)
    assert not t["faults"] and t["state"] == "finished", t
    assert t["completed"] == t["inferences"] == len(t["outputs"]) == INFERENCES, t
    problems, segment = rtl_problems(spec, t, report)
    assert not problems, f"{name}: RTL differs from the ISS:\n" + "\n".join(problems)
    assert t["exact"] == t["compared"] == INFERENCES, t
    cores = LAUNCHES[launch][name][2]
    print(f"{name} ({cores} cores): {INFERENCES} inferences and the "
          f"{len(segment)}-byte segment exact, latency {t['latency_cycles']} cycles")
