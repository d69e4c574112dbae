"""Plot share() ÷ pickle.dumps from the pyperf JSON files that bench_share.py wrote.

    python bench/bench_share.py --sizes 1KB,1MB --measure share,pickle -o share-3.13.json
    python bench/plot_share_ratio.py share-3.13.json share-3.12.json -o share-vs-pickle.png

One panel per file (one Python each), one group of bars per data set, one bar per way of
sharing, each the ratio of two medians of the same run (bench_share.py's own table):

  fresh arena      share        ÷ pickle       Arena().share(value)
  memory reused    share-freed  ÷ pickle       the arena given back after each value
  default arena    share-dflt   ÷ pickle-fresh share() of new data ÷ pickle of new data
  new data, reused share-new    ÷ pickle-fresh the same, into memory given back and reused
  new memory alone fresh-mem    ÷ pickle       populating the new memory a fresh arena's
                                               objects take, and nothing else (hatched:
                                               not a way of sharing, what one pays for)

The target is a ratio of at most 1, drawn as a line.
"""

from __future__ import annotations

import argparse
import json
import statistics

MODES = (
    ("fresh arena", "share", "pickle"),
    ("memory reused", "share-freed", "pickle"),
    ("default arena (new data)", "share-dflt", "pickle-fresh"),
    ("new data, memory reused", "share-new", "pickle-fresh"),
    ("its new memory alone", "fresh-mem", "pickle"),
)


def medians(path: str) -> tuple[str, dict[str, float]]:
    """The Python version and each benchmark's median of its values, by name."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    out: dict[str, float] = {}
    version = doc.get("metadata", {}).get("python_version", path)
    for bench in doc["benchmarks"]:
        values = [v for run in bench["runs"] for v in run.get("values", [])]
        name = bench["metadata"]["name"]
        version = bench["metadata"].get("python_version", version)
        if values:
            out[name] = statistics.median(values)
    return str(version).split(" ")[0], out


def data_sets(found: dict[str, float]) -> list[str]:
    """'table-1KB', ... in the order bench_share.py ran them."""
    sets: list[str] = []
    for name in found:
        if name.startswith("pickle-") and not name.startswith("pickle-fresh-"):
            sets.append(name[len("pickle-"):])
    return sets


def ratios(found: dict[str, float], sets: list[str]) -> dict[str, list[float]]:
    """share ÷ pickle per way of sharing (MODES), one per data set; NaN where one of the
    two benchmarks did not run."""
    out: dict[str, list[float]] = {}
    for label, share_name, pickle_name in MODES:
        row: list[float] = []
        for ds in sets:
            share_t = found.get(f"{share_name}-{ds}")
            pickle_t = found.get(f"{pickle_name}-{ds}")
            row.append(share_t / pickle_t if share_t and pickle_t else float("nan"))
        out[label] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="pyperf JSON written by bench_share.py -o")
    parser.add_argument("-o", "--out", required=True, help="the PNG to write")
    args = parser.parse_args()

    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.json), figsize=(6.5 * len(args.json), 4.2),
                             squeeze=False, sharey=True)
    width = 0.8 / len(MODES)
    for ax, path in zip(axes[0], args.json):
        version, found = medians(path)
        sets = data_sets(found)
        for k, (label, row) in enumerate(ratios(found, sets).items()):
            xs = [i + (k - (len(MODES) - 1) / 2) * width for i in range(len(sets))]
            if label == MODES[-1][0]:   # not a way of sharing: drawn apart
                ax.bar(xs, row, width, label=label, color="lightgray", edgecolor="dimgray",
                       hatch="//")
            else:
                ax.bar(xs, row, width, label=label)
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels([ds.replace("-", "\n") for ds in sets])
        ax.set_title(f"CPython {version}")
        ax.set_yscale("log")
        ax.set_yticks([0.125, 0.25, 0.5, 1, 2, 4])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("share() time ÷ pickle.dumps time (≤ 1: target met)")
    # One legend under the panels: inside one, it hid bars.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(MODES), fontsize="small")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

