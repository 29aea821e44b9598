"""What the Verilator build's progress lines say, judged from the files a build leaves."""

import os
import time

from vdla.sim.rtl_build import build_stage


def _touch(path, when):
    path.write_text("")
    os.utime(path, (when, when))


def test_build_stage_follows_the_files_made_since_the_start(tmp_path):
    since = time.time()
    old = since - 100                      # left by an earlier build of the same design
    for name in ("top.v", "Vtop.mk", "Vtop.cpp", "Vtop.o", "Vtop__1.cpp", "Vtop__1.o"):
        _touch(tmp_path / name, old)
    assert build_stage(tmp_path, "top", since) == "converting the design to Verilog"
    _touch(tmp_path / "top.v", since + 1)
    assert build_stage(tmp_path, "top", since) == "Verilator translating the Verilog to C++"
    for name in ("Vtop.mk", "Vtop.cpp", "Vtop__1.cpp"):
        _touch(tmp_path / name, since + 2)
    assert build_stage(tmp_path, "top", since) == "compiling C++, 0 of 2 files done"
    _touch(tmp_path / "Vtop__1.o", since + 3)
    assert build_stage(tmp_path, "top", since) == "compiling C++, 1 of 2 files done"
    _touch(tmp_path / "Vtop.o", since + 4)
    assert build_stage(tmp_path, "top", since) == "linking"


def test_build_stage_of_an_empty_directory(tmp_path):
    assert build_stage(tmp_path / "none", "top", time.time()) == \
        "converting the design to Verilog"
