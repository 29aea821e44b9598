"""Static checks of instruction frames: legality, buffer bounds, tokens and data races.

:func:`check_frame` proves, for one frame and a Config, that

* it starts with FRAME, has a SETUP before any CONV/MISC and no control instruction inside;
* every dependency flag is legal for its unit, every size field is >= 1, DRAM addresses are
  8-byte aligned and every buffer range lies inside the Config's depths;
* the token protocol cannot deadlock and leaves every token queue empty;
* every pair of accesses to the same buffer word from different units, one of them a write,
  is ordered by the tokens in program order (so any unit interleaving computes the same).

Used by the tests and available to any tool that wants to vet a program.
"""

import numpy as np

from vdla import isa

from .program import ints_from_words

__all__ = ["FrameCheckError", "decode_frame", "check_frame", "check_program"]

_OP = isa.Opcode
_U = isa.Unit
_UNITS = (_U.LOAD, _U.COMPUTE, _U.SAVE)
_QUEUES = {("LOAD", "push_next"): "LC", ("COMPUTE", "pop_prev"): "LC",
           ("COMPUTE", "push_prev"): "CL", ("LOAD", "pop_next"): "CL",
           ("COMPUTE", "push_next"): "CS", ("SAVE", "pop_prev"): "CS",
           ("SAVE", "push_prev"): "SC", ("COMPUTE", "pop_next"): "SC"}
_BUFS = ("IBUF", "WBUF", "PBUF", "OBUF")


class FrameCheckError(ValueError):
    """A frame that breaks a rule; the message names the frame and the instruction."""


def decode_frame(ints):
    """``[(Opcode, deps dict, fields dict)]`` of a frame's 128-bit words."""
    out = []
    for w in ints:
        head = isa.unpack_fields(isa.FIELDS["head"], w)
        try:
            op = _OP(head["opcode"])
        except ValueError:
            op = _OP.INVALID
        deps = {k[5:]: v for k, v in head.items() if k.startswith("deps.")}
        view = isa.BODY_OF.get(op)
        out.append((op, deps, isa.unpack_fields(isa.FIELDS[view], w) if view else {}))
    return out


def _words_per_entry(config):
    cb = config.cb
    return {"IBUF": cb // 8, "WBUF": cb * cb // 8, "PBUF": 2, "OBUF": cb // 8}


def _accesses(op, f, setup, config):
    """``[(buffer, first entry, entries, is_write)]`` of one instruction."""
    cb = config.cb
    if op in (_OP.LOAD, _OP.SAVE):
        buf = _BUFS[f["buf"]]
        ew = _words_per_entry(config)[buf]
        words = f["length"] * f["rows"] * f["planes"]
        return [(buf, f["buf_addr"], -(-words // ew), op == _OP.LOAD)]
    if op == _OP.CONV:
        n_icg = 1 if setup["dw"] else setup["n_icg"]
        planes = f["n_ob"] if setup["dw"] else n_icg
        acc = [("IBUF", f["ibuf_addr"], planes * f["in_h"] * f["in_w"], False),
               ("WBUF", f["wbuf_addr"], f["n_ob"] * setup["kh"] * setup["kw"] * n_icg, False),
               ("OBUF", f["obuf_addr"], f["n_ob"] * f["out_h"] * f["out_w"], True)]
        if f["acc_final"]:
            acc.append(("PBUF", f["pbuf_addr"], f["n_ob"] * cb, False))
        return acc
    if op == _OP.MISC:
        out_n = f["n_cb"] * f["out_h"] * f["out_w"]
        acc = [("OBUF", f["obuf_addr"], out_n, True),
               ("PBUF", f["pbuf_addr"], f["n_cb"] * cb, False)]
        if f["func"] == isa.MiscFunc.LUT.value:
            return [acc[0], ("PBUF", f["pbuf_addr"], isa.LUT_ENTRIES, False),
                    ("IBUF", f["src_a"], out_n, False)]
        if f["func"] == isa.MiscFunc.ADD.value:
            return acc + [("IBUF", f["src_a"], out_n, False), ("IBUF", f["src_b"], out_n, False)]
        return acc + [("IBUF", f["src_a"], f["n_cb"] * f["in_h"] * f["in_w"], False)]
    return []


def _legality(insns, config, where):
    depth = {"IBUF": config.ibuf_depth, "WBUF": config.wbuf_depth, "PBUF": config.pbuf_depth,
             "OBUF": config.obuf_depth}
    if not insns or insns[0][0] != _OP.FRAME:
        raise FrameCheckError(f"{where}: does not start with FRAME")
    setup, setups = None, []
    for k, (op, deps, f) in enumerate(insns):
        at = f"{where}, instruction {k} ({op.name})"
        if k and op in (_OP.FRAME, _OP.SYNC, _OP.END, _OP.STREAM, _OP.INVALID):
            raise FrameCheckError(f"{at}: not allowed inside a frame")
        unit = isa.UNIT_OF[op] if op != _OP.INVALID else None
        bad = {"LOAD": ("pop_prev", "push_prev"), "SAVE": ("pop_next", "push_next")}
        illegal = (deps.keys() if op in (_OP.SETUP, _OP.FRAME) else
                   bad.get(unit.name, ()) if unit else ())
        if any(deps[flag] for flag in illegal):
            raise FrameCheckError(f"{at}: illegal dependency flag")
        if op == _OP.SETUP:
            if min(f["kh"], f["kw"], f["stride"], f["n_icg"]) < 1 or (f["dw"] and f["n_icg"] != 1):
                raise FrameCheckError(f"{at}: invalid window {f}")
            setup = f
        elif op in (_OP.LOAD, _OP.SAVE):
            if min(f["length"], f["rows"], f["planes"]) < 1 or f["dram_addr"] % 8:
                raise FrameCheckError(f"{at}: empty or misaligned transfer {f}")
            if (op == _OP.SAVE) != (f["buf"] == isa.Buffer.OBUF.value):
                raise FrameCheckError(f"{at}: wrong buffer {f['buf']}")
        elif op in (_OP.CONV, _OP.MISC):
            if setup is None:
                raise FrameCheckError(f"{at}: before any SETUP")
            sizes = ("out_h", "out_w", "n_ob") if op == _OP.CONV else ("out_h", "out_w", "n_cb")
            if min(f[s] for s in sizes) < 1:
                raise FrameCheckError(f"{at}: invalid fields {f}")
        acc = _accesses(op, f, setup, config)
        for buf, first, n, _ in acc:
            if first + n > depth[buf]:
                raise FrameCheckError(f"{at}: {buf} entries {first}..{first + n} outside "
                                      f"its depth {depth[buf]}")
        setups.append(acc)
    return setups


def _schedule(insns, where):
    """Execute the token protocol; return each instruction's vector clock at start."""
    queues = {u: [k for k, (op, _, _) in enumerate(insns) if op != _OP.INVALID and k
                  and isa.UNIT_OF[op] == u] for u in _UNITS}
    pos = {u: 0 for u in _UNITS}
    tokens = {q: [] for q in ("LC", "CL", "CS", "SC")}    # vector clocks of pushers
    done_vc = {u: np.zeros(3, np.int64) for u in _UNITS}
    start_vc = {}
    progress = True
    while progress:
        progress = False
        for ui, u in enumerate(_UNITS):
            if pos[u] == len(queues[u]):
                continue
            k = queues[u][pos[u]]
            _, deps, _ = insns[k]
            pops = [_QUEUES[(u.name, flag)] for flag in ("pop_prev", "pop_next")
                    if deps[flag] and (u.name, flag) in _QUEUES]
            if any(not tokens[q] for q in pops):
                continue
            vc = done_vc[u].copy()
            for q in pops:
                vc = np.maximum(vc, tokens[q].pop(0))
            start_vc[k] = vc
            vc = vc.copy()
            vc[ui] = pos[u] + 1
            done_vc[u] = vc
            for flag in ("push_prev", "push_next"):
                if deps[flag] and (u.name, flag) in _QUEUES:
                    tokens[_QUEUES[(u.name, flag)]].append(vc)
            pos[u] += 1
            progress = True
    stuck = [u.name for u in _UNITS if pos[u] < len(queues[u])]
    if stuck:
        raise FrameCheckError(f"{where}: deadlock: {', '.join(stuck)} wait(s) for a token")
    left = [q for q, t in tokens.items() if t]
    if left:
        raise FrameCheckError(f"{where}: tokens left in queue(s) {', '.join(left)}")
    index = {k: i for u in _UNITS for i, k in enumerate(queues[u])}
    return start_vc, index


def check_frame(ints, config, where="frame"):
    """Raise :class:`FrameCheckError` if the frame (list of 128-bit ints) breaks a rule."""
    insns = decode_frame(ints)
    accesses = _legality(insns, config, where)
    start_vc, index = _schedule(insns, where)
    depth = {"IBUF": config.ibuf_depth, "WBUF": config.wbuf_depth, "PBUF": config.pbuf_depth,
             "OBUF": config.obuf_depth}
    # Per buffer entry: last writer (unit, index) and the latest reader index per unit.
    w_unit = {b: np.full(depth[b], -1, np.int64) for b in depth}
    w_idx = {b: np.zeros(depth[b], np.int64) for b in depth}
    r_idx = {b: np.full((3, depth[b]), -1, np.int64) for b in depth}
    for k, acc in enumerate(accesses):
        if not acc:
            continue
        ui = _UNITS.index(isa.UNIT_OF[insns[k][0]])
        vc, me = start_vc[k], index[k]
        for buf, first, n, write in acc:
            sl = slice(first, first + n)
            wu, wi = w_unit[buf][sl], w_idx[buf][sl]
            other = (wu >= 0) & (wu != ui)
            if np.any(vc[wu[other]] <= wi[other]):
                raise FrameCheckError(f"{where}, instruction {k} ({insns[k][0].name}): "
                                      f"{buf} {first}..{first + n} races with an earlier write")
            if write:
                for ru in range(3):
                    if ru != ui and np.any(r_idx[buf][ru, sl] >= vc[ru]):
                        raise FrameCheckError(f"{where}, instruction {k} ({insns[k][0].name}):"
                                              f" overwrites {buf} {first}..{first + n} while "
                                              f"{_UNITS[ru].name} may still read it")
                w_unit[buf][sl] = ui
                w_idx[buf][sl] = me
            else:
                r_idx[buf][ui, sl] = np.maximum(r_idx[buf][ui, sl], me)
    return True


def check_program(program, config):
    """Check every frame of a :class:`~.program.Program`."""
    code = ints_from_words(program.code)
    for f, row in enumerate(program.frames):
        first, count = int(row["first"]), int(row["count"])
        check_frame(code[first:first + count], config, f"frame {f} (layer {int(row['layer'])})")
    return True
