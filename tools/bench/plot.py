"""Plots for docs/BENCHMARKS.md from `latte bench --trace FILE` output (matplotlib, tools only).

    python tools/bench/plot.py --steps layerwise.json --memory "layerwise=layerwise.json" \
        "layerwise --mem-budget=budget.json" "dense=dense.json" --out docs/

Writes bench_step_times.png (seconds per sampling step through one generation, coloured by the expert
group that ran it) and bench_memory.png (resident memory over time during one generation per run).
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def first_trace(path, test=None):
    with open(path) as f:
        traces = json.load(f)
    for t in traces:
        if test is None or t["test"] == test:
            return t
    raise SystemExit(f"{path}: no trace{'' if test is None else ' for ' + test}")


def plot_steps(trace, out):
    steps = trace["steps"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    groups = sorted({s["group"] for s in steps})
    for g in groups:
        xs = [i for i, s in enumerate(steps) if s["group"] == g]
        ax.bar(xs, [steps[i]["seconds"] for i in xs], color=COLOURS[g % len(COLOURS)], label=f"group {g}")
    ax.set_xlabel("sampling step")
    ax.set_ylabel("seconds")
    ax.set_title(f"seconds per step through one generation ({trace['test']}, {trace['threads']} threads)")
    ax.legend(ncol=len(groups), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_memory(runs, out):
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (label, trace) in enumerate(runs):
        rss = trace["rss"]
        ax.plot([r[0] for r in rss], [r[1] / 2**20 for r in rss], label=label, color=COLOURS[i % len(COLOURS)])
    ax.set_xlabel("seconds since the generation started")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("resident memory during one generation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", required=True, help="trace JSON whose first 'img' trace is plotted")
    ap.add_argument("--memory", nargs="+", required=True, help="LABEL=TRACE.json, one line each")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    plot_steps(first_trace(args.steps, "img"), os.path.join(args.out, "bench_step_times.png"))
    runs = []
    for item in args.memory:
        label, path = item.rsplit("=", 1)
        runs.append((label, first_trace(path)))
    plot_memory(runs, os.path.join(args.out, "bench_memory.png"))


if __name__ == "__main__":
    main()
