"""The ISA module: fast encoder agrees with Insn.const, docs agree with the module."""

import pytest
from hypothesis import given, settings, strategies as st

from vdla import docgen, isa
from vdla.config import CONFIGS, ConfigError, get_config


def _field_values(view):
    fields = {}
    for name, (off, width, signed) in isa.FIELDS[view].items():
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if name == "buf":
            fields[name] = st.sampled_from(list(isa.Buffer))
        elif name == "func":
            fields[name] = st.sampled_from(list(isa.MiscFunc))
        else:
            fields[name] = st.integers(lo, hi)
    return st.fixed_dictionaries(fields)


@st.composite
def instructions(draw):
    opcode = draw(st.sampled_from([op for op in isa.Opcode if op != isa.Opcode.INVALID]))
    deps = draw(st.fixed_dictionaries({f: st.booleans() for f in
                                       ("pop_prev", "pop_next", "push_prev", "push_next")}))
    view = isa.BODY_OF[opcode]
    fields = draw(_field_values(view)) if view else {}
    return opcode, deps, fields


@settings(max_examples=200, deadline=None)
@given(instructions())
def test_encode_matches_insn_const(insn):
    opcode, deps, fields = insn
    const_fields = {k: v for k, v in fields.items()}
    deps_int = {k: int(v) for k, v in deps.items()}
    word = isa.encode(opcode, deps, **fields)
    assert word == isa.encode_const(opcode, deps_int, **const_fields)
    view = isa.BODY_OF[opcode]
    decoded = isa.decode(word)
    assert decoded.opcode == opcode
    if view:
        unpacked = isa.unpack_fields(isa.FIELDS[view], word)
        for name, value in fields.items():
            assert unpacked[name] == int(value.value if hasattr(value, "value") else value)


def test_words_are_128_bits():
    from amaranth.lib import data
    assert data.Layout.cast(isa.Insn).size == isa.INSN_BITS
    assert data.Layout.cast(isa.PostParams).size == isa.POST_BYTES * 8


def test_encode_rejects_out_of_range_field():
    with pytest.raises(ValueError, match="out_h=256 does not fit 8 bits"):
        isa.encode(isa.Opcode.CONV, out_h=256)


def test_every_opcode_has_a_unit_and_view():
    for op in isa.Opcode:
        if op != isa.Opcode.INVALID:
            assert op in isa.UNIT_OF and op in isa.BODY_OF


@pytest.mark.parametrize("name", sorted(docgen.GENERATED))
def test_generated_docs_are_current(name):
    text = (docgen.DOCS / name).read_text()
    assert text == docgen.GENERATED[name](), f"docs/{name} is stale: run `make docs`"


def test_doc_lists_every_field_of_every_view():
    text = (docgen.DOCS / "isa.md").read_text()
    for view, table in isa.FIELDS.items():
        for field in table:
            assert f"`{field.split('.')[-1]}`" in text


def test_config_hash_is_stable_and_core_only():
    small = get_config("small")
    assert small.core_hash() == get_config("small").core_hash()
    assert small.replace(cores=2, tenants=1).core_hash() == small.core_hash()
    assert small.replace(ibuf_depth=512).core_hash() != small.core_hash()
    assert len({c.full_hash() for c in CONFIGS.values()}) == len(CONFIGS)
    # Configurations differing only in cores and tenants run the same programs.
    pools = {}
    for config in CONFIGS.values():
        pools.setdefault(config.replace(name="", cores=1, tenants=1, clock_mhz=1.0),
                         set()).add(config.core_hash())
    assert all(len(hashes) == 1 for hashes in pools.values())
    assert len({c.core_hash() for c in CONFIGS.values()}) == len(pools)
    assert get_config("ulx3s-2x8").core_hash() == get_config("ulx3s").core_hash()


@pytest.mark.parametrize("changes, message", [
    ({"cores": 0}, "cores must be a positive integer"),
    ({"icp": 12}, "icp must be a multiple of 8"),
    ({"ocp": 3}, r"ocp \(3\) must divide icp"),
    ({"ibuf_depth": 1 << 15}, "exceeds the ISA's 14-bit address field"),
])
def test_config_validation(changes, message):
    with pytest.raises(ConfigError, match=message):
        get_config("small").replace(**changes)


def test_unknown_config_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown configuration 'nope'; known: icebreaker"):
        get_config("nope")
