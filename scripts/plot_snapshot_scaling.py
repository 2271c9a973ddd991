#!/usr/bin/env python3
"""Draws snapshot time against documents from the CSV of scripts/bench_snapshot_scaling.sh.

    plot_snapshot_scaling.py CSV PNG SUBTITLE
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, target, subtitle = sys.argv[1:4]
series = {}
with open(source) as f:
    for row in csv.DictReader(f):
        series.setdefault(row["variant"], []).append((int(row["documents"]), float(row["median_ms"])))

fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
styles = {"legacy_snapshot": "o-", "hand-written SQL": "s-", "COPY floor": "^--"}
for variant in ["hand-written SQL", "legacy_snapshot", "COPY floor"]:
    points = sorted(series.get(variant, []))
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], styles[variant], label=variant)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("documents in the session")
ax.set_ylabel("median time per snapshot (ms)")
ax.set_title("Building a session snapshot\n" + subtitle, fontsize=10)
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(target)
