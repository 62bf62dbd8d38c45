#!/usr/bin/env python3
"""Draws kvmem-bench's JSON as PNG charts, one per table that carries a plot spec.

    kvmem_plot.py RESULTS.json OUT_DIR

Each chart is named <suite>-<n>-<slug of the table title>.png. Uses Debian's
python3-matplotlib with the Agg backend (no display needed).
"""
import json
import os
import re
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def column(table, name):
    try:
        return table["columns"].index(name)
    except ValueError:
        raise SystemExit(f"kvmem_plot: table '{table['title']}' has no column '{name}'")


def numeric(rows, idx):
    return [r[idx] if isinstance(r[idx], (int, float)) else float("nan") for r in rows]


def draw(table, path):
    spec = table["plot"]
    rows = table["rows"]
    xi = column(table, spec["x"])
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    if spec["kind"] == "bar":
        labels = [str(r[xi]) for r in rows]
        n = len(spec["y"])
        width = 0.8 / max(n, 1)
        for k, name in enumerate(spec["y"]):
            yi = column(table, name)
            xs = [i + (k - (n - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, numeric(rows, yi), width=width, label=name)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    else:  # line or cdf
        xs = numeric(rows, xi)
        if all(x != x for x in xs):  # labels, not numbers: plot against row index
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([str(r[xi]) for r in rows], rotation=45, ha="right")
            xs = list(range(len(rows)))
        order = sorted(range(len(xs)), key=lambda i: xs[i])  # numeric x: draw left to right
        for name in spec["y"]:
            ys = numeric(rows, column(table, name))
            ax.plot([xs[i] for i in order], [ys[i] for i in order], marker="o", markersize=3, label=name)
    ax.set_xlabel(spec["x"])
    ax.set_ylabel(spec.get("y_label") or ", ".join(spec["y"]))
    if spec.get("log_x"):
        ax.set_xscale("log")
    if spec.get("log_y"):
        ax.set_yscale("log")
    ax.set_title(textwrap.fill(table["title"], 110), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        results = json.load(f)
    os.makedirs(argv[2], exist_ok=True)
    written = []
    for suite in results["suites"]:
        for n, table in enumerate(suite["tables"]):
            if not table.get("plot"):
                continue
            path = os.path.join(argv[2], f"{suite['name']}-{n}-{slug(table['title'])}.png")
            draw(table, path)
            written.append(path)
    for p in written:
        print(f"kvmem_plot: wrote {p}")
    if not written:
        print("kvmem_plot: no table asked for a chart", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
