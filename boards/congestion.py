"""Where a placement is too congested to route: nextpnr's router2 progress and its heatmaps.

router2 first routes every net allowing wires to be shared, then rips up and reroutes until
no wire is used twice. A placement that cannot be routed shows as an ``overused`` count that
stops falling, while each iteration of a large design takes minutes. :func:`stalled` says when
to stop waiting, and :func:`by_block` sums router2's congestion-by-net heatmap
(``--router2-heatmap PREFIX`` writes ``PREFIX_congestion_by_net_N.csv`` after iteration N)
into the design's blocks, so a build that does not route names what crowds the wires.

``python -m vdla.boards.congestion PREFIX`` prints that summary for the last iteration written.
"""

import argparse
import collections
import csv
import pathlib
import re
import sys

__all__ = ["PATIENCE", "router_progress", "stalled", "latest_heatmap", "by_block", "main"]

#: Iterations router2 gets to cut its overused wires by :data:`_GAIN` before a build gives up.
PATIENCE = 4
#: The least fraction of the overused wires a run of :data:`PATIENCE` iterations must remove.
_GAIN = 0.05
#: Below this many overused wires the router is left to finish, however slowly: the last few
#: hundred conflicts of a routable design can take many iterations.
_FLOOR = 2000
#: No verdict before this many iterations: the first ones remove most conflicts.
_FIRST = 8
#: A run whose fewest overused wires lie this many times ``patience`` iterations back, and
#: which now has twice as many, has turned away from a routing (router2's congestion costs
#: keep growing): it climbs back only rarely.
_DIVERGE = 5

_ITERATION = re.compile(r"\biter=(\d+) wires=\d+ overused=(\d+)")


def router_progress(log_text):
    """``[(iteration, overused wires), ...]`` from router2's lines in a nextpnr log."""
    return [(int(i), int(n)) for i, n in _ITERATION.findall(log_text)]


def stalled(progress, patience=PATIENCE):
    """The reason to stop a router2 run whose ``progress`` (:func:`router_progress`) shows it
    will not finish, else ``None``. After :data:`_FIRST` iterations it has *stalled* when the
    last ``patience`` removed less than 5% of the overused wires left before them and more
    than :data:`_FLOOR` remain, and it *diverges* when its fewest overused wires are
    ``_DIVERGE * patience`` iterations old and it now has twice as many (however few).
    ``patience`` 0 never stops."""
    if not patience or len(progress) < max(_FIRST, patience + 1):
        return None
    best_iteration, best = min(progress, key=lambda step: (step[1], step[0]))
    iteration, now = progress[-1]
    if iteration - best_iteration >= _DIVERGE * patience and now >= 2 * best:
        return (f"router2 diverging: {now} wires overused after {iteration} iterations, "
                f"{best} at iteration {best_iteration}")
    before = min(n for _, n in progress[:-patience])
    recent = min(n for _, n in progress[-patience:])
    if recent < _FLOOR or recent < (1 - _GAIN) * before:
        return None
    return (f"router2 stalled: {recent} wires still overused after {iteration} "
            f"iterations ({before} {patience} iterations earlier)")


def latest_heatmap(prefix):
    """Path of the last congestion-by-net heatmap written under ``prefix``, or ``None``."""
    prefix = pathlib.Path(prefix)
    found = []
    for path in prefix.parent.glob(f"{prefix.name}_congestion_by_net_*.csv"):
        tail = path.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            found.append((int(tail), path))
    return max(found)[1] if found else None


def _block(net, depth):
    # Net names carry the hierarchy of the signal that drives them (``top.accelerator.core0
    # .compute.post.l0_v[3]``); the last part is the signal itself.
    parts = net.split(".")
    if len(parts) < 3 or parts[0] != "top":
        return "(board top)"
    return ".".join(parts[1:-1][:depth])


def by_block(path, depth=4):
    """Overused wires of each block in the heatmap at ``path`` (nets summed by the first
    ``depth`` levels of their hierarchy below the top), and the nets with most; returns
    ``(blocks, nets)``, each a list of ``(name, overused wires)``, largest first."""
    blocks, nets = collections.Counter(), collections.Counter()
    with open(path, newline="") as file:
        for row in csv.reader(file):
            if len(row) < 2 or not row[1].strip().isdigit():
                continue
            count = int(row[1])
            nets[row[0]] += count
            blocks[_block(row[0], depth)] += count
    return blocks.most_common(), nets.most_common()


def render(path, rows=12):
    """Markdown lines of the summary of the heatmap at ``path``."""
    blocks, nets = by_block(path)
    total = sum(n for _, n in blocks)
    lines = [f"Overused wires by block (router2's `{pathlib.Path(path).name}`, {total} in all):",
             "", "| block | overused wires | share |", "|---|---|---|"]
    lines += [f"| {name} | {n} | {100 * n / total:.0f}% |" for name, n in blocks[:rows]]
    lines += ["", "Nets with most overused wires:", "", "| net | overused wires |", "|---|---|"]
    lines += [f"| `{name}` | {n} |" for name, n in nets[:rows]]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vdla.boards.congestion",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", help="the --router2-heatmap prefix of a nextpnr run")
    args = parser.parse_args(argv)
    path = latest_heatmap(args.prefix)
    if path is None:
        print(f"error: no {args.prefix}_congestion_by_net_N.csv", file=sys.stderr)
        return 2
    print("\n".join(render(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
