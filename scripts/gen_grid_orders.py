#!/usr/bin/env python3
"""Dump the tile-grid candidate order that InternVL's `dynamic_preprocess` sees.

InternVL builds its candidate grids as

    sorted(set((i, j) for n in range(min_num, max_num + 1)
               for i in range(1, n + 1) for j in range(1, n + 1)
               if min_num <= i * j <= max_num), key=lambda x: x[0] * x[1])

so among grids with the same number of tiles the order is CPython's set iteration
order. `find_closest_aspect_ratio` breaks some ties by that order, so the Rust port
emulates CPython's set and is tested against this dump.

Usage: python3 scripts/gen_grid_orders.py  (CPython >= 3.8; the order depends on
the tuple hash and set implementation, which have been stable since 3.8)
"""

import json
import platform
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/processing/grid_orders.json"


def internvl_grid_order(min_num, max_num):
    """The candidate (columns, rows) list exactly as InternVL-Chat computes it."""
    target_ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    return sorted(target_ratios, key=lambda x: x[0] * x[1])


def main():
    if platform.python_implementation() != "CPython" or sys.version_info < (3, 8):
        sys.exit("needs CPython >= 3.8 (the order is CPython's set iteration order)")
    cases = []
    for min_num in (1, 2, 3):
        for max_num in range(1, 41):
            grids = internvl_grid_order(min_num, max_num)
            cases.append({"min_num": min_num, "max_num": max_num, "grids": [list(g) for g in grids]})
    lines = ",\n".join("    " + json.dumps(case, separators=(",", ":")) for case in cases)
    header = json.dumps({"python": platform.python_version()})[1:-1]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("{" + header + ',\n  "cases": [\n' + lines + "\n  ]\n}\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
