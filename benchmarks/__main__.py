"""`python -m benchmarks [--quick] [--large] [--only image,training,keypoints,decode,handpose,handaction,live,variants,int8,scale,accuracy]`.

Runs each area in this process (the training area also starts subprocesses to measure peak memory),
with the feature cache pointed at a private temp dir, and prints one table at the end.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
import traceback

from . import Context, fmt, load_average, private_cache

# area -> (module, function)
AREAS = {
    "image": ("image", "run"),
    "training": ("training", "run"),
    "keypoints": ("hands", "run_keypoints"),
    "handpose": ("hands", "run_handpose"),
    "handaction": ("hands", "run_handaction"),
    "decode": ("hand_decode", "run"),  # hand keypoints at every photo size and format
    "live": ("live", "run"),
    "variants": ("variants", "run"),  # every backbone variant tried; not part of "all"
    "int8": ("int8", "run"),  # int8 quantisation configurations; not in "all"
    "scale": ("scale", "run"),  # 1,000 / 10,000 (/ 100,000 with --large) photos, local and Dask; not in "all"
    "accuracy": ("accuracy", "run"),  # held-out accuracy against plain baselines (a few minutes); not in "all"
    "accuracy-variants": ("accuracy", "run_variants"),  # hand action: each change measured; not in "all"
}
DEFAULT = ["image", "training", "keypoints", "decode", "handpose", "handaction", "live"]
ALIASES = {"hands": ["keypoints", "decode", "handpose", "handaction"], "all": DEFAULT}


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer items and rounds (about 2-3 minutes)")
    ap.add_argument("--large", action="store_true", help="also the slowest sizes (10,000 hand-action clips, ~5 min)")
    ap.add_argument("--only", default="all",
                    help=f"comma-separated areas: {', '.join(AREAS)}; or hands, all (default: all = "
                         f"{','.join(DEFAULT)})")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    ap.add_argument("--quiet", action="store_true", help="print only the final table")
    args = ap.parse_args(argv)
    areas = []
    for name in (a.strip().lower() for a in args.only.split(",") if a.strip()):
        for a in ALIASES.get(name, [name]):
            if a not in AREAS:
                ap.error(f"unknown area {a!r}; choose from {', '.join(AREAS)}, hands, all")
            if a not in areas:
                areas.append(a)
    return args, areas


def table(rows) -> str:
    head = ("area", "benchmark", "value", "unit", "target", "note")
    body = [(r.area, r.name, fmt(r.value), r.unit, r.target, r.note) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head[:5])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head[:5], widths)) + "  note",
             "  ".join("-" * w for w in widths) + "  ----"]
    for b in body:
        lines.append("  ".join((b[i].rjust(widths[i]) if i == 2 else b[i].ljust(widths[i])) for i in range(5))
                     + "  " + b[5])
    return "\n".join(line.rstrip() for line in lines)


def main(argv=None) -> int:
    args, areas = parse(argv)
    ctx = Context(quick=args.quick, large=args.large, verbose=not args.quiet)
    import torch

    started = time.perf_counter()
    print(f"createml_widgets benchmarks ({'quick' if args.quick else 'full'}): {', '.join(areas)}; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"Python {platform.python_version()}, load average {load_average()}", file=sys.stderr, flush=True)
    failed = []
    with private_cache():
        for area in areas:
            module, func = AREAS[area]
            print(f"== {area}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                getattr(importlib.import_module(f".{module}", __package__), func)(ctx)
            except Exception as err:  # noqa: BLE001 - one broken area must not hide the others
                traceback.print_exc()
                ctx.add(area, "FAILED", f"{err.__class__.__name__}: {err}"[:120])
                failed.append(area)
            ctx.log(f"{area}: {time.perf_counter() - t:.0f}s")
    shutil.rmtree(ctx.scratch, ignore_errors=True)
    print(table(ctx.rows))
    print(f"\n{len(ctx.rows)} rows in {time.perf_counter() - started:.0f}s; load average at the end {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in ctx.rows], f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
