#!/usr/bin/env python3
"""Print the decision benchmark's medians as a Markdown table (run after
`cargo bench -p switchyard-controller --bench decision`). Given several copies of
criterion's `decision` folder (one per run), each cell is the lowest of the runs' medians:
on a shared machine, neighbours slow whole seconds at a time, and the least disturbed run
is the closest to the code's own cost."""
import json
import pathlib
import sys

roots = [pathlib.Path(arg) for arg in sys.argv[1:]] or [pathlib.Path("target/criterion/decision")]


def run_median_ns(root, policy, kind, n):
    path = root / f"{policy}_{kind}" / str(n) / "new" / "estimates.json"
    if not path.exists():
        path = root / f"{policy}/{kind}" / str(n) / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"]


def median_ns(policy, kind, n):
    return min(run_median_ns(root, policy, kind, n) for root in roots)


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def legacy(policy, version, n):
    try:
        return fmt(median_ns(policy, f"wasm-{version}", n))
    except FileNotFoundError:
        return "-"


print("| policy | nodes | Wasm, contract 0.3.0 (median) | a 0.2.0 component | a 0.1.0 component | native (median) | 0.3.0 / native |")
print("|---|---|---|---|---|---|---|")
for policy in ["least-loaded", "seed-rules"]:
    for n in [3, 16, 256]:
        wasm, native = median_ns(policy, "wasm", n), median_ns(policy, "native", n)
        print(
            f"| {policy} | {n} | {fmt(wasm)} | {legacy(policy, '0.2.0', n)} | {legacy(policy, '0.1.0', n)} "
            f"| {fmt(native)} | {wasm / native:.1f}x |"
        )
