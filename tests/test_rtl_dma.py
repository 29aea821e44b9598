"""LOAD + SAVE on Verilator through cocotb, with cocotbext-axi's AxiRam as DRAM.

Also the tool-chain smoke test of the project: Amaranth -> Verilog -> Verilator -> cocotb.
The build lands in build/rtl/ and is reused while the Verilog does not change.
"""

import json
import pathlib
import time

import pytest

from vdla.config import get_config
from vdla.sim.dma_top import DmaTop
from vdla.sim.rtl_build import build

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.rtl


def test_dma_roundtrip_verilator(tmp_path):
    config = get_config("small")
    started = time.perf_counter()
    rtl = build(DmaTop(config), "dma_top", config, ROOT / "build")
    stats_file = tmp_path / "stats.json"
    rtl.test("vdla.sim.cocotb_dma", test_dir=tmp_path,
             extra_env={"VDLA_CONFIG": config.name, "VDLA_DMA_SEED": "1",
                        "VDLA_RTL_STATS": str(stats_file)})
    stats = json.loads(stats_file.read_text())
    print(f"\nVerilator build: {'reused' if rtl.reused else f'{rtl.build_seconds:.1f} s'}; "
          f"simulation: {stats['sim_cycles']} cycles in {stats['wall_seconds']:.1f} s = "
          f"{stats['cycles_per_second']:.0f} cycles/s; long rows ({stats['beats']} beats): "
          f"LOAD {stats['load_beats_per_cycle']:.2f}, SAVE {stats['save_beats_per_cycle']:.2f}, "
          f"both at once {stats['both_beats_per_cycle']:.2f} beats/cycle; total {time.perf_counter() - started:.1f} s")
    # AxiRam adds its own per-burst turnaround, so the bar is lower than on the ideal model.
    assert stats["load_beats_per_cycle"] >= 0.5
    assert stats["save_beats_per_cycle"] >= 0.5
    assert stats["both_beats_per_cycle"] >= 1.0
