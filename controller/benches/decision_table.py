#!/usr/bin/env python3
"""Print the decision benchmark's medians as a Markdown table (run after
`cargo bench -p switchyard-controller --bench decision`). Given several copies of
criterion's `decision` folder (one per run), each cell is the median of the runs' medians,
with the lowest and highest run after it, so that a target is called met on the typical
run and the spread a shared machine adds is shown, not hidden."""
import json
import pathlib
import statistics
import sys

roots = [pathlib.Path(arg) for arg in sys.argv[1:]] or [pathlib.Path("target/criterion/decision")]


def run_median_ns(root, policy, kind, n):
    path = root / f"{policy}_{kind}" / str(n) / "new" / "estimates.json"
    if not path.exists():
        path = root / f"{policy}/{kind}" / str(n) / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"]


def runs_ns(policy, kind, n):
    return [run_median_ns(root, policy, kind, n) for root in roots]


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def cell(policy, kind, n):
    try:
        runs = runs_ns(policy, kind, n)
    except FileNotFoundError:
        return "-", None
    middle = statistics.median(runs)
    spread = f" ({fmt(min(runs))}-{fmt(max(runs))})" if len(runs) > 1 else ""
    return fmt(middle) + spread, middle


print(f"Medians of {len(roots)} run(s); in brackets the lowest and highest run.\n")
print("| policy | nodes | Wasm, contract 0.4.0 | a 0.2.0 component | a 0.1.0 component | Python | JavaScript | native | Wasm / native |")
print("|---|---|---|---|---|---|---|---|---|")
for policy in ["least-loaded", "seed-rules"]:
    for n in [3, 16, 256]:
        wasm, wasm_ns = cell(policy, "wasm", n)
        native, native_ns = cell(policy, "native", n)
        others = [cell(policy, kind, n)[0] for kind in ["wasm-0.2.0", "wasm-0.1.0", "python", "js"]]
        ratio = f"{wasm_ns / native_ns:.1f}x" if wasm_ns and native_ns else "-"
        print(f"| {policy} | {n} | {wasm} | {' | '.join(others)} | {native} | {ratio} |")
