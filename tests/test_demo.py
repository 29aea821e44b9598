"""``make demo``'s verdict, on the instruction-set simulator backend (the RTL run is the demo).

The verdict is every check of every tenant (bit-exact with the golden model, every inference
completed, within one step of the ONNX Runtime reference) and nothing else: ORT's optimized,
CPU-dependent kernels are reported but decide nothing.
"""

import numpy as np
import pytest

from vdla.sim import demo

ARGS = ["--backend", "iss", "--limit", "6", "--second", "1"]


class _Offset:
    """An ONNX Runtime session whose outputs are moved by ``delta``."""

    def __init__(self, session, delta):
        self.session, self.delta = session, delta

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        return [np.asarray(y) + self.delta for y in self.session.run(names, feeds)]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


def test_demo_passes_and_reports_optimized_ort_as_information(out_dir, capsys):
    assert demo.main(ARGS + ["--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "demo: OK (6 checks)" in out
    assert out.count("for information, vs ORT's optimized int8 kernels") == 2


def test_optimized_ort_far_off_does_not_decide(out_dir, capsys, monkeypatch):
    optimized = demo.optimized_session
    monkeypatch.setattr(demo, "optimized_session", lambda m: _Offset(optimized(m), 100.0))
    assert demo.main(ARGS + ["--out", str(out_dir)]) == 0
    assert "demo: OK" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["digits", "resnet8"])
def test_each_tenants_reference_check_decides(model, out_dir, capsys, monkeypatch):
    reference = demo.reference_session
    target = {"digits": demo.DIGITS.name, "resnet8": "resnet8_qdq.onnx"}[model]
    monkeypatch.setattr(demo, "reference_session", lambda m: _Offset(
        reference(m), 100.0 if str(m).endswith(target) else 0.0))
    assert demo.main(ARGS + ["--out", str(out_dir)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {model}: within one output step of ONNX Runtime" in out
    assert "demo: MISMATCH (1 of 6 checks failed)" in out
