"""A build whose placement does not route stops, and says where the wires are crowded:
router2's progress read from its log, the stall rule, the heatmap summed by block, the tool
stopped mid-run, and the report of a design no seed routes."""

import json
import sys

import pytest

from vdla.boards import synth, toolflow
from vdla.boards.congestion import by_block, latest_heatmap, router_progress, stalled

#: The overused wires of the ULX3S's two 8x8 cores (ulx3s-2x8) in router2's first ten
#: iterations, as its log gave them.
TWO_CORES = [79075, 52747, 38444, 30138, 25618, 22421, 20814, 20375, 20640, 20179]


def _log(counts):
    return "".join(f"Info:     iter={i} wires={1000000 + i} overused={n} overuse={n + 7} "
                   f"archfail=NA\n" for i, n in enumerate(counts, 1))


def test_router_progress_is_read_from_the_log():
    text = "Info: Routing globals...\n" + _log(TWO_CORES[:3]) + "Info: iter=9 steplen=2.0\n"
    assert router_progress(text) == [(1, 79075), (2, 52747), (3, 38444)]


def test_a_run_that_keeps_converging_is_not_stopped():
    for k in range(1, len(TWO_CORES) + 1):
        assert stalled(router_progress(_log(TWO_CORES[:k]))) is None
    halving = [80000 // 2 ** k for k in range(12)]
    assert stalled(router_progress(_log(halving))) is None


def test_a_run_that_stalls_is_stopped():
    reason = stalled(router_progress(_log(TWO_CORES + [20300])))
    assert reason and "20179 wires still overused after 11 iterations" in reason
    assert stalled(router_progress(_log(TWO_CORES + [20300])), patience=0) is None


#: ulx3s-2x8 with both PE arrays on the carry chain: down to 140 overused wires, then back up.
TURNED = [75322, 47680, 32342, 22230, 16332, 11978, 9469, 7256, 5623, 4497, 3669, 3225, 2737,
          2099, 1732, 1500, 1345, 1112, 958, 821, 722, 640, 603, 525, 433, 452, 426, 389, 328,
          314, 262, 223, 218, 230, 212, 209, 212, 200, 184, 164, 176, 161, 165, 155, 161, 151,
          140, 146, 172, 154, 161, 155, 153, 149, 164, 168, 196, 232, 232, 259, 268, 323, 333,
          352, 405, 443, 476, 562]


def test_a_run_that_turns_away_is_stopped():
    """Stopped once its best (140, iteration 47) is 20 iterations old and it has doubled;
    not while it still hovers near that best."""
    stops = [k for k in range(1, len(TURNED) + 1)
             if stalled(router_progress(_log(TURNED[:k])))]
    assert stops and stops[0] == 67
    reason = stalled(router_progress(_log(TURNED[:67])))
    assert "diverging: 476 wires overused after 67 iterations, 140 at iteration 47" in reason
    assert stalled(router_progress(_log(TURNED)), patience=0) is None


def test_the_last_few_hundred_conflicts_are_left_to_finish():
    slow_tail = [9000, 5000, 3000, 1500, 900, 700, 600, 590, 585, 580, 579, 578, 577]
    assert stalled(router_progress(_log(slow_tail))) is None


def test_the_heatmap_is_summed_by_block(tmp_path):
    rows = ["top.accelerator.core0.compute.post.l0_v[3],40",
            "top.accelerator.core0.compute.post.l1_v[0],20",
            "top.accelerator.core1.compute.pe_array.prod_0_1_p[2],25",
            "top.accelerator.control.r_tenant3,10", "top_rst,4", "$PACKER_GND_NET,1"]
    for n in (1, 2, 10):
        (tmp_path / f"run_congestion_by_net_{n}.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "run_congestion_by_coordinate_11.csv").write_text("0,0\n")
    path = latest_heatmap(tmp_path / "run")
    assert path.name == "run_congestion_by_net_10.csv"
    blocks, nets = by_block(path)
    assert blocks == [("accelerator.core0.compute.post", 60),
                      ("accelerator.core1.compute.pe_array", 25),
                      ("accelerator.control", 10), ("(board top)", 5)]
    assert nets[0] == ("top.accelerator.core0.compute.post.l0_v[3]", 40)
    assert latest_heatmap(tmp_path / "other") is None


def test_a_tool_is_stopped_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(toolflow, "HEARTBEAT", 0.2)
    script = ("import time\nfor i in range(1, 1000):\n"
              "    print(f'iter={i} wires=1 overused=5000', flush=True); time.sleep(0.02)\n")
    lines = []
    with pytest.raises(toolflow.ToolStopped, match="router2 stalled"):
        toolflow.run_tool("router", [sys.executable, "-c", script], tmp_path / "router.log",
                          None, lines.append,
                          stop=lambda text: stalled(router_progress(text)))
    assert any("stopped after" in line for line in lines)
    # It was stopped, not left to finish its 999 iterations.
    assert len(router_progress((tmp_path / "router.log").read_text())) < 999


def test_the_report_of_a_design_that_does_not_route(tmp_path):
    heatmap = tmp_path / "congestion-1_congestion_by_net_11.csv"
    heatmap.write_text("top.accelerator.core0.compute.post.l0_v[3],40\n")
    unrouted = {1: {"reason": "router2 stalled: 20179 wires still overused after 11 "
                              "iterations (20814 4 iterations earlier)", "heatmap": heatmap}}
    packed = {"utilisation": {"TRELLIS_COMB": (55273, 83640)}}
    board = synth.get_board("ulx3s")
    with pytest.raises(synth.RouteError, match="ulx3s-2x8 does not route on the ulx3s: "
                                               "seed 1: router2 stalled"):
        synth._report_unrouted(board, type("C", (), {"name": "ulx3s-2x8"}), tmp_path,
                               unrouted, packed, None)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["routed"] is False and "1" in report["seeds"]
    text = (tmp_path / "report.md").read_text()
    assert "does not route" in text and "| accelerator.core0.compute.post | 40 | 100% |" in text
