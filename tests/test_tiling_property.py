"""Random single layers, compiled for the ``small`` core and run on the instruction-set
simulator, give exactly the layer reference's output (under both unit-scheduling policies)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vdla.compiler import static, synthetic, verify
from vdla.config import get_config
from vdla.sim import host, reference

SMALL = get_config("small")


def _run_and_compare(graph, config=SMALL, cores=1, policies=("load-first", "compute-first")):
    program = static.compile_graph(graph, config)
    verify.check_program(program, config)
    inputs = synthetic.random_input(graph, seed=7)
    expect = reference.run_graph(graph, inputs)
    for policy in policies:
        got = host.run_program_int(program, config, inputs, cores=cores, policy=policy)
        for name in graph.outputs:
            assert got[name].dtype == np.int8 and got[name].shape == expect[name].shape
            diff = np.argwhere(got[name] != expect[name])
            assert diff.size == 0, (f"{policy}: {len(diff)} of {expect[name].size} values "
                                    f"differ, first at {tuple(diff[0])}")
    return program


@st.composite
def _window(draw, h, w):
    """kernel, stride and pads giving at least one output pixel."""
    kh = draw(st.integers(1, min(7, h + 2)))
    kw = draw(st.integers(1, min(7, w + 2)))
    stride = draw(st.integers(1, 2))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
            draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    assume(h + pads[0] + pads[2] >= kh and w + pads[1] + pads[3] >= kw)
    return (kh, kw), stride, pads


@st.composite
def single_layers(draw):
    kind = draw(st.sampled_from(["conv", "conv", "dw", "maxpool", "avgpool", "add", "dense"]))
    c = draw(st.integers(1, 70))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    b = synthetic.IRBuilder(f"prop_{kind}", draw(st.integers(0, 2 ** 16)))
    x = b.input((c, h, w))
    if kind in ("conv", "dw"):
        kernel, stride, pads = draw(_window(h, w))
        k = draw(st.integers(1, 70))
        b.output(b.conv(x, k, kernel, stride, pads, depthwise=kind == "dw",
                        relu=draw(st.booleans())))
    elif kind.endswith("pool"):
        kernel, stride, pads = draw(_window(h, w))
        b.output(b.pool(x, kind[:3], kernel, stride, pads))
    elif kind == "add":
        b.output(b.add(x, b.input((c, h, w), "other"), relu=draw(st.booleans())))
    else:
        b.output(b.dense(x, draw(st.integers(1, 70))))
    return b.graph()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(single_layers(), st.integers(1, 2))
def test_random_layer_matches_reference(graph, cores):
    _run_and_compare(graph, cores=cores)


def _graph(build, shape, seed=0):
    b = synthetic.IRBuilder("case", seed)
    b.output(build(b, b.input(shape)))
    return b.graph()


@pytest.mark.parametrize("name, shape, build", [
    ("wide image, 2-D tiles", (3, 9, 300), lambda b, x: b.conv(x, 8, 3, 1)),
    ("stride 2, kernel 7", (5, 23, 19), lambda b, x: b.conv(x, 16, 7, 2)),
    ("weights over WBUF", (200, 6, 5), lambda b, x: b.conv(x, 70, 3)),
    ("global avgpool 16x16", (24, 16, 16), lambda b, x: b.global_avgpool(x)),
    ("global avgpool 7x7", (100, 7, 7), lambda b, x: b.global_avgpool(x)),
    ("dense, chunked input", (64, 7, 7), lambda b, x: b.dense(x, 20)),
    ("depthwise many blocks", (300, 9, 9), lambda b, x: b.conv(x, 0, 3, 2, depthwise=True)),
    ("big add", (70, 30, 31), lambda b, x: b.add(x, b.conv(x, 70, 1))),
])
def test_edge_cases(name, shape, build):
    _run_and_compare(_graph(build, shape), cores=2, policies=("compute-first",))


def test_small_network_multicore():
    b = synthetic.IRBuilder("net", 11)
    x = b.input((3, 21, 17))
    x = b.conv(x, 16, 3, 2)
    y = b.conv(x, 16, 3, depthwise=True)
    x = b.add(x, b.conv(y, 16, 1, relu=False))
    x = b.pool(x, "max", 3, 2, (1, 1, 1, 1))
    b.output(b.dense(b.global_avgpool(b.conv(x, 24, 3)), 10))
    for cores in (1, 3):
        _run_and_compare(b.graph(), cores=cores)
