"""The vdla command line: help everywhere, one-line errors with exit status 2, no tracebacks."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from vdla import cli

COMMANDS = ("compile", "quantize", "link", "disasm", "info", "run", "sim")
DIGITS = pathlib.Path(__file__).resolve().parent.parent / "models" / "digits" / "digits_qdq.onnx"


def run_cli(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: vdla " + command in capsys.readouterr().out


def test_entry_point_is_installed():
    bin_dir = pathlib.Path(sys.executable).parent
    result = subprocess.run([bin_dir / "vdla", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.fixture(scope="module")
def digits_ifp(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "digits.ifp"
    assert cli.main(["compile", str(DIGITS), "-o", str(path)]) == 0
    return path


def test_compile_info_disasm_link(digits_ifp, tmp_path, capsys):
    status, out, _ = run_cli(capsys, "info", digits_ifp)
    assert status == 0 and "frames" in out and "input" in out
    status, out, _ = run_cli(capsys, "disasm", digits_ifp, "--frame", 0)
    assert status == 0 and out.splitlines()[1].split()[1] == "FRAME"
    status, out, _ = run_cli(capsys, "link", digits_ifp, "--cores", 2, "-o", tmp_path / "img")
    assert status == 0
    words = (tmp_path / "img.bin").read_bytes()
    hex_lines = (tmp_path / "img.hex").read_text().split()
    assert len(words) == 16 * len(hex_lines)
    assert int(hex_lines[0], 16) == int.from_bytes(words[:16], "little")


def test_run_matches_shape_and_batch(digits_ifp, tmp_path, capsys):
    from models.digits.data import held_out
    images, _ = held_out()
    np.save(tmp_path / "x.npy", images[:3])
    status, out, err = run_cli(capsys, "run", digits_ifp, "--input", tmp_path / "x.npy",
                               "--output", tmp_path / "y.npy", "--cores", 2)
    assert status == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 10) and y.dtype == np.float32


def _unsupported_model(path):
    node = helper.make_node("Softsign", ["input"], ["output"], name="soft0")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph), path)


def test_errors_are_one_line(digits_ifp, tmp_path, capsys):
    status, _, err = run_cli(capsys, "compile", tmp_path / "missing.onnx", "-o", tmp_path / "m.ifp")
    assert_one_line_error(status, err, "missing.onnx")

    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 this is not a model")
    status, _, err = run_cli(capsys, "compile", tmp_path / "junk.onnx", "-o", tmp_path / "m.ifp")
    assert_one_line_error(status, err, "junk.onnx")

    _unsupported_model(tmp_path / "soft.onnx")
    status, _, err = run_cli(capsys, "compile", tmp_path / "soft.onnx", "-o", tmp_path / "m.ifp")
    assert_one_line_error(status, err, "soft0", "Softsign")

    status, _, err = run_cli(capsys, "compile", DIGITS, "-o", tmp_path / "m.ifp", "--config", "x")
    assert_one_line_error(status, err, "unknown configuration 'x'")

    data = bytearray(digits_ifp.read_bytes())
    (tmp_path / "cut.ifp").write_bytes(bytes(data[: len(data) // 2]))
    status, _, err = run_cli(capsys, "info", tmp_path / "cut.ifp")
    assert_one_line_error(status, err, "cut.ifp")

    data[len(data) - 5] ^= 0xFF
    (tmp_path / "flip.ifp").write_bytes(bytes(data))
    status, _, err = run_cli(capsys, "disasm", tmp_path / "flip.ifp")
    assert_one_line_error(status, err, "flip.ifp")

    status, _, err = run_cli(capsys, "info", digits_ifp, "--config", "ulx3s")
    assert_one_line_error(status, err, "small", "ulx3s")

    status, _, err = run_cli(capsys, "link", digits_ifp, "--cores", 9, "-o", tmp_path / "i")
    assert_one_line_error(status, err, "9")

    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    status, _, err = run_cli(capsys, "run", digits_ifp, "--input", tmp_path / "bad.npy",
                             "--output", tmp_path / "y.npy")
    assert_one_line_error(status, err, "does not match the model input")

    (tmp_path / "bad2.npy").write_bytes(b"nonsense")
    status, _, err = run_cli(capsys, "run", digits_ifp, "--input", tmp_path / "bad2.npy",
                             "--output", tmp_path / "y.npy")
    assert_one_line_error(status, err, "bad2.npy")

    status, _, err = run_cli(capsys, "quantize", DIGITS, "--calib", tmp_path / "bad.npy",
                             "-o", tmp_path / "q.onnx")
    assert_one_line_error(status, err)


SCENARIOS = DIGITS.parent.parent.parent / "scenarios"


def test_sim_runs_a_scenario_and_writes_the_report(tmp_path, capsys):
    report_path = tmp_path / "r.json"
    status, out, err = run_cli(capsys, "sim", SCENARIOS / "two_tenants.toml", "--report",
                               report_path)
    assert status == 0, err
    assert "all outputs exact" in out and "digits" in out and "resnet" in out
    progress = err.strip().splitlines()
    assert sum("linked in" in line for line in progress) == 2
    assert sum("finished" in line for line in progress) == 2
    report = json.loads(report_path.read_text())
    assert report["backend"] == "iss" and report["config"] == "small" and report["exact"]
    assert report["total_cycles"] > 0
    for tenant in report["tenants"]:
        assert tenant["exact"] == tenant["compared"] == tenant["completed"] > 0
        assert len(tenant["latency_cycles"]) == tenant["completed"]
        assert tenant["throughput_ips"] > 0 and tenant["allocations"][0]["link_ms"] > 0


def test_sim_fault_and_reallocate_scenarios(capsys):
    status, out, err = run_cli(capsys, "sim", SCENARIOS / "fault.toml")
    assert status == 0 and "SEGMENT" in out and "faulted SEGMENT" in err
    status, out, err = run_cli(capsys, "sim", SCENARIOS / "reallocate_both.toml")
    assert status == 0 and "1->3->2" in out and "3->1->2" in out
    assert sum(line.startswith("event[") for line in err.splitlines()) == 4


def test_sim_rtl_backend_needs_its_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vdla.sim.rtl_scenario", None)    # as if missing
    status, _, err = run_cli(capsys, "sim", SCENARIOS / "two_tenants.toml", "--backend", "rtl")
    assert_one_line_error(status, err, "needs vdla.sim.rtl_scenario")


def test_sim_errors_are_one_line(tmp_path, capsys):
    status, _, err = run_cli(capsys, "sim", tmp_path / "none.toml")
    assert_one_line_error(status, err, "none.toml", "no such file")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[tenant]]\nname = "A"\nmodel = "{DIGITS.as_posix()}"\ncores = 9\n')
    status, _, err = run_cli(capsys, "sim", bad)
    assert_one_line_error(status, err, "bad.toml", "tenant[0] (A).cores", "exceeds")
    status, _, err = run_cli(capsys, "sim", SCENARIOS / "two_tenants.toml", "--config", "u9")
    assert_one_line_error(status, err, "two_tenants.toml", "config", "unknown configuration")
