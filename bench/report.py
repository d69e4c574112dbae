"""Turn a list of Results into the Markdown table and the PNG plots of a results folder.

Ratios are only ever computed inside a group (results measured side by side in one run):
for times, ``baseline median / median`` (a speedup: above 1 is faster than the baseline);
for bytes, ``median / baseline median`` (a size relative to the baseline).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import Result

SPEEDUP_PLOT = "speedup.png"
SEND_COST_PLOT = "send_cost.png"


def _fmt_value(value: float, unit: str) -> str:
    if unit == "byte":
        if value >= 1 << 20:
            return f"{value / (1 << 20):.1f} MiB"
        if value >= 1 << 10:
            return f"{value / (1 << 10):.1f} KiB"
        return f"{value:.0f} B"
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value / 1e-9:.3g} ns"


def _spread(r: Result) -> str:
    if len(r.values) < 2:
        return ""
    return f"± {100 * statistics.stdev(r.values) / r.median:.0f}%"


def ratio(r: Result, base: Result) -> float:
    if r.unit == "byte":
        return r.median / base.median
    return base.median / r.median


def groups(results: list[Result]) -> dict[str, list[Result]]:
    by_group: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_group[r.group or r.name.split("/")[0]].append(r)
    return dict(by_group)


def baseline_of(members: list[Result]) -> Result | None:
    return next((r for r in members if r.baseline), None)


def _short(name: str, group: str) -> str:
    prefix = group + "/"
    return name[len(prefix):] if name.startswith(prefix) else name


def markdown_table(results: list[Result], meta: dict[str, str],
                   failures: dict[str, str] | None = None) -> str:
    lines = ["# subsandbox benchmark results", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items()]
    lines += ["", "Values are medians of the repeats (± one standard deviation, relative). "
              "Ratios compare results of one group, measured side by side in this run: for "
              "times, baseline / value (above 1: faster than the baseline); for memory, "
              "value / baseline.", ""]
    for name, error in (failures or {}).items():
        lines.append(f"**{name} failed**: {error}")
    for group, members in groups(results).items():
        base = baseline_of(members)
        lines += [f"## {group}", ""]
        header = "| benchmark | median | spread | n |"
        rule = "|---|---:|---:|---:|"
        if base is not None:
            header += f" vs {_short(base.name, group)} |"
            rule += "---:|"
        lines += [header + " note |", rule + "---|"]
        for r in members:
            row = (f"| {_short(r.name, group)} | {_fmt_value(r.median, r.unit)} | "
                   f"{_spread(r)} | {len(r.values)} |")
            if base is not None:
                row += f" {ratio(r, base):.2f}x |"
            lines.append(row + f" {r.note} |")
        lines.append("")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def plot_speedup(results: list[Result], meta: dict[str, str], path: Path) -> bool:
    """Speedup over the group's baseline vs worker count, one panel per kernel."""
    by_kernel: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(list))
    for group, members in groups(results).items():
        base = baseline_of(members)
        if base is None:
            continue
        for r in members:
            p = r.params
            if "kernel" in p and "workers" in p and "runner" in p and not r.baseline:
                kernel = str(p["kernel"])
                by_kernel[kernel][str(p["runner"])].append((int(p["workers"]), ratio(r, base)))
    if not by_kernel:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(by_kernel), figsize=(4.6 * len(by_kernel), 4.2),
                             squeeze=False)
    top = 1
    for ax, (kernel, runners) in zip(axes[0], sorted(by_kernel.items())):
        for runner, points in sorted(runners.items()):
            points.sort()
            ax.plot([w for w, _ in points], [s for _, s in points], marker="o", label=runner)
            top = max(top, max(w for w, _ in points))
        ax.plot([1, top], [1, top], color="grey", linestyle=":", label="ideal")
        ax.set_title(kernel)
        ax.set_xlabel("workers")
        ax.set_ylabel("speedup over one thread, no pool")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{meta.get('python', '')}, {meta.get('cores', '')} cores: {meta.get('cpu', '')}",
                 fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_send_cost(results: list[Result], meta: dict[str, str], path: Path) -> bool:
    """Time to send a value vs its size, one line per method, log-log."""
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in results:
        p = r.params
        if "payload_bytes" in p and "method" in p and r.unit == "second":
            lines[str(p["method"])].append((int(p["payload_bytes"]), r.median))
    if not lines:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method, points in sorted(lines.items()):
        points.sort()
        ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("payload (bytes)")
    ax.set_ylabel("seconds per send (median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    ax.set_title(f"{meta.get('python', '')}, {meta.get('cpu', '')}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: list[Result], meta: dict[str, str], failures: dict[str, str],
                 out: Path) -> list[Path]:
    written = [out / "results.md"]
    written[0].write_text(markdown_table(results, meta, failures))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with written[0].open("a") as f:
            f.write("\nNo plots: matplotlib is not installed (pip install .[bench]).\n")
        return written
    if plot_speedup(results, meta, out / SPEEDUP_PLOT):
        written.append(out / SPEEDUP_PLOT)
    if plot_send_cost(results, meta, out / SEND_COST_PLOT):
        written.append(out / SEND_COST_PLOT)
    return written
