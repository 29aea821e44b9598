"""``vdla run --port`` and ``vdla sim --port`` on the virtual board: the CLI's board path
(pyserial on a port, the host-link frames, the bridge's INFO check, the driver) against the
Verilator-built board top of ``ulx3s`` behind a pseudo-terminal.

The virtual board runs in a subprocess for the whole module, on the board-top build that
tests/test_rtl_board.py makes (same configuration, same top, so one build serves both), and
is killed by the fixture whatever happens; every CLI call on it runs as a subprocess with a
timeout, so a hang fails a test instead of blocking the suite. The argument checks at the end
need no board.
"""

import json
import os
import pathlib
import re
import selectors
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_cli import assert_one_line_error, run_cli
from vdla import cli
from vdla.compiler.ifp import read_ifp
from vdla.config import get_config
from vdla.sim.board_host import BoardError, find_board, run_program_on_board
from vdla.sim.rtl_build import get_build

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"
CONFIG = get_config("ulx3s")
VDLA = pathlib.Path(sys.executable).parent / "vdla"
#: Seconds the virtual board may take to print its port (the build is made beforehand).
START_SECONDS = 120
#: Seconds one CLI call on the virtual board may take (about 20 are needed).
CLI_SECONDS = 300
#: The virtual board's own bound, should its killer never run: ~10 minutes of simulation.
MAX_CYCLES = 50_000_000
INFERENCES = 2
SCENARIO = f"""\
description = "the digits CNN on one core of the virtual board"
config = "{CONFIG.name}"

[[tenant]]
name = "digits"
model = "{DIGITS.as_posix()}"
cores = 1
inferences = {INFERENCES}
seed = 3
"""


def _first_line(process, seconds):
    """The first line ``process`` prints on stdout, within ``seconds`` ("" if it ends)."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(seconds):
            return None
    return process.stdout.readline().strip()


def _stop(process):
    """SIGTERM (the board then kills its simulator), SIGKILL if that is not enough."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.stdout.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The virtual board's port, and its stderr (a file)."""
    started = time.perf_counter()
    rtl = get_build(CONFIG, "board_top")
    built = time.perf_counter() - started
    stderr = tmp_path_factory.mktemp("virtual-board") / "stderr.txt"
    # Not a pytest test itself: cocotb's runner would name its results after this one.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "vdla.sim.virtual_board", "--config", CONFIG.name,
             "--cycles", str(MAX_CYCLES)], stdout=subprocess.PIPE, stderr=err, text=True,
            env=env)
    try:
        port = _first_line(process, START_SECONDS)
        assert port, f"no port from the virtual board: {stderr.read_text()[-2000:]}"
        print(f"board top {'reused' if rtl.reused else 'built'} in {built:.1f} s; virtual "
              f"board ready on {port} in {time.perf_counter() - started - built:.1f} s")
        yield port, stderr, rtl
    finally:
        _stop(process)


def _vdla(*argv):
    started = time.perf_counter()
    result = subprocess.run([VDLA, *map(str, argv)], capture_output=True, text=True,
                            timeout=CLI_SECONDS)
    print(f"vdla {argv[0]} took {time.perf_counter() - started:.1f} s")
    return result


@pytest.fixture(scope="module")
def ulx3s_ifp(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-board") / "digits-ulx3s.ifp"
    assert cli.main(["compile", str(DIGITS), "--config", CONFIG.name, "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from models.digits.data import held_out
    images, _ = held_out()
    path = tmp_path_factory.mktemp("cli-board") / "x.npy"
    np.save(path, images[:2])
    return path


@pytest.mark.rtl
def test_the_virtual_board_runs_the_board_top_build_of_the_rtl_tests(board):
    _, stderr, rtl = board
    log = stderr.read_text()
    assert rtl.build_dir.name == f"board_top-{CONFIG.full_hash()}"
    assert f"simulating {rtl.build_dir} " in log
    assert "building" not in log        # it found the build current, made no other


@pytest.mark.rtl
def test_a_board_of_another_configuration_is_refused(board, ulx3s_ifp, inputs, tmp_path,
                                                    capsys):
    port, _, _ = board
    status, _, err = run_cli(capsys, "run", ulx3s_ifp, "--input", inputs, "--output",
                             tmp_path / "y.npy", "--port", port, "--board", "icebreaker")
    assert_one_line_error(status, err, "board icebreaker runs configuration icebreaker, "
                                       "not ulx3s")
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.rtl
def test_sim_on_the_virtual_board_is_exact(board, tmp_path):
    port, _, _ = board
    scenario = tmp_path / "digits.toml"
    scenario.write_text(SCENARIO)
    result = _vdla("sim", scenario, "--port", port, "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "all outputs exact" in result.stdout, result.stdout
    assert "on backend board ulx3s" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["backend"] == "board ulx3s" and report["exact"]
    digits, = report["tenants"]
    assert digits["completed"] == digits["exact"] == digits["compared"] == INFERENCES
    assert digits["faults"] == []


@pytest.mark.rtl
def test_run_on_the_virtual_board_equals_the_iss(board, ulx3s_ifp, inputs, tmp_path, capsys):
    port, _, _ = board
    status, _, err = run_cli(capsys, "run", ulx3s_ifp, "--input", inputs, "--output",
                             tmp_path / "iss.npy", "--backend", "iss")
    assert status == 0, err
    result = _vdla("run", ulx3s_ifp, "--input", inputs, "--output", tmp_path / "board.npy",
                   "--port", port)
    assert result.returncode == 0, result.stderr
    assert f"backend board ulx3s on {port}" in result.stdout
    assert sum(line.startswith("inference ") for line in result.stderr.splitlines()) == 2
    on_board, on_iss = np.load(tmp_path / "board.npy"), np.load(tmp_path / "iss.npy")
    assert on_board.shape == (2, 10) and on_board.dtype == np.float32
    np.testing.assert_array_equal(on_board, on_iss)
    # The two digits differ, so equal outputs are not one inference read back twice.
    assert not np.array_equal(on_board[0], on_board[1])


def test_board_options_are_checked_before_any_port_is_opened(ulx3s_ifp, inputs, tmp_path,
                                                              capsys):
    run = ("run", ulx3s_ifp, "--input", inputs, "--output", tmp_path / "y.npy")
    missing = tmp_path / "no-such-port"
    status, _, err = run_cli(capsys, *run, "--port", missing, "--backend", "rtl")
    assert_one_line_error(status, err, "--port", "--backend rtl")
    status, _, err = run_cli(capsys, *run, "--board", "ulx3s")
    assert_one_line_error(status, err, "--board needs --port")
    status, _, err = run_cli(capsys, *run, "--baud", 115200)
    assert_one_line_error(status, err, "--baud needs --port")
    status, _, err = run_cli(capsys, *run, "--port", missing, "--board", "de10")
    assert_one_line_error(status, err, "unknown board 'de10'", "ulx3s, icebreaker")
    status, _, err = run_cli(capsys, *run, "--port", missing)
    assert_one_line_error(status, err, "cannot open", str(missing))
    scenario = tmp_path / "digits.toml"
    scenario.write_text(SCENARIO)
    status, _, err = run_cli(capsys, "sim", scenario, "--port", missing, "--board",
                             "icebreaker")
    assert_one_line_error(status, err, "board icebreaker runs configuration icebreaker, "
                                       "not ulx3s")


def test_a_configuration_without_a_board_is_refused(tmp_path, capsys):
    ifp = tmp_path / "digits-small.ifp"
    assert cli.main(["compile", str(DIGITS), "-o", str(ifp)]) == 0
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    status, _, err = run_cli(capsys, "run", ifp, "--input", tmp_path / "x.npy", "--output",
                             tmp_path / "y.npy", "--port", tmp_path / "tty")
    assert_one_line_error(status, err, "no board runs configuration small",
                          "ulx3s (ulx3s-8x4, ulx3s, ulx3s-2x8), icebreaker (icebreaker)")


def test_a_silent_port_is_a_one_line_error_not_a_hang(ulx3s_ifp):
    """A pty nobody serves: INFO gets no answer, and the host gives up after its timeout."""
    master, slave = os.openpty()
    try:
        started = time.perf_counter()
        with pytest.raises(BoardError) as error:
            run_program_on_board(read_ifp(ulx3s_ifp), CONFIG, [], os.ttyname(slave),
                                 find_board(CONFIG), timeout=0.5)
        waited = time.perf_counter() - started
    finally:
        os.close(master)
        os.close(slave)
    assert re.fullmatch(r"/dev/pts/\d+: 0 of 2 bytes within 0.5 s", str(error.value))
    assert 0.5 <= waited < 5, waited
