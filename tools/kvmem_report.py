#!/usr/bin/env python3
"""Renders kvmem-bench's JSON as Markdown: the body of docs/benchmarks.md.

    kvmem_report.py RESULTS.json [--command "..."] [--charts DIR] > benchmarks.md

Every table of every suite is written with its note; key figures follow each suite. With
--charts, the PNG charts kvmem_plot.py drew for a suite are linked under it.
"""
import argparse
import json
import os
import platform
import re


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def cell(value):
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 1000 or value == int(value):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1000 else str(value)
    return str(value).replace("|", "\\|")


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json")
    parser.add_argument("--command", default="")
    parser.add_argument("--charts", default="")
    args = parser.parse_args()
    with open(args.json) as f:
        results = json.load(f)

    out = []
    if args.command:
        out.append(f"Command: `{args.command}`  ")
    out.append(f"Machine: {machine()}; seed {results['seed']}"
               f"{' (smoke run: sizes too small for the figures to mean anything)' if results['smoke'] else ''}.")
    out.append("")
    for suite in results["suites"]:
        out.append(f"## kvmem-bench {suite['name']}: {suite['summary']}")
        out.append("")
        for n, table in enumerate(suite["tables"]):
            out.append(f"### {table['title']}")
            out.append("")
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in table["columns"]) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(table["columns"]) - 1)) + "|")
            for row in table["rows"]:
                out.append("| " + " | ".join(cell(v) for v in row) + " |")
            if table.get("note"):
                out.append("")
                out.append(f"*{table['note']}*")
            if args.charts and table.get("plot"):
                png = f"{suite['name']}-{n}-{slug(table['title'])}.png"
                if os.path.exists(os.path.join(args.charts, png)):
                    out.append("")
                    out.append(f"![{table['title']}]({os.path.join(args.charts, png)})")
            out.append("")
        if suite["figures"]:
            out.append("Key figures:")
            out.append("")
            for key, value in suite["figures"].items():
                out.append(f"- `{key}` = {cell(value)}")
            out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
