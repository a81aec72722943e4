"""The plots of `odex-report` (odex/sweep/report.py), each as PNG and PDF: curves, nfe, epoch_time,
heatmap. Bands are the completed replicates' own range, axes and colour scales are fitted to the
data of the completed configurations. Design notes: docs/design-notes.md, "odex/sweep/report_plots.py".
"""
from __future__ import annotations

import math
import statistics
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odex.sweep.jobs import SHARED_MARK, Config, _number, short, tally

if TYPE_CHECKING:       # the report imports this module; this one needs only the type
    from odex.sweep.report import Selection

MARKERS = "osD^vP*Xh<>p"        # 12 markers x 10 colours: 120 distinct (colour, marker) pairs


def styles(n: int) -> list[dict[str, Any]]:
    """A distinct (colour, marker) pair per series: colours cycle with period 10 and markers with
    period 12, so the pairs repeat only after 60 series (lcm), and past 10 series no two share both."""
    return [{"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]} for i in range(n)]


def _curve(config: Config, key: str, x: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """The mean, minimum and maximum of `key` over the completed replicates, epoch by epoch,
    against `x` ('epoch', or 'time' = the mean time/total_s at that epoch). Epochs only some
    replicates reached are left out, so the band always covers the same jobs. A min-max band stays
    inside the range of the values themselves (NFE >= 0, a loss > 0 on a log axis)."""
    runs = [j for j in config.completed if j.series(key)]
    if not runs:
        return [], [], [], []
    epochs = sorted(set.intersection(*(set(j.series(key)) for j in runs)))
    xs, means, lows, highs = [], [], [], []
    for e in epochs:
        vals = [j.series(key)[e] for j in runs]
        if x == "time":
            ts = [j.series("time/total_s").get(e) for j in runs]
            if any(t is None for t in ts):
                continue
            xs.append(statistics.fmean(ts))
        else:
            xs.append(e)
        means.append(statistics.fmean(vals))
        lows.append(min(vals))
        highs.append(max(vals))
    return xs, means, lows, highs


def _epoch_axis(ax, configs: list[Config], key: str) -> None:
    """Epoch ticks at the epochs themselves (up to 20), integers otherwise."""
    from matplotlib.ticker import MaxNLocator

    epochs = sorted({e for c in configs for j in c.completed for e in j.series(key)})
    if 0 < len(epochs) <= 20:
        ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _legend_below(fig, handles, labels) -> None:
    ncol = 1 if max(map(len, labels), default=0) > 45 else 2 if max(map(len, labels), default=0) > 25 else 3
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=7, frameon=False)
    lines = -(-len(labels) // min(ncol, max(len(labels), 1)))
    fig.tight_layout(rect=(0, min(0.5, 0.03 + lines * 0.032 * 6 / fig.get_figheight()), 1, 1))


def _save(fig, out: Path, stem: str) -> list[str]:
    fig.savefig(out / f"{stem}.png", dpi=130)
    fig.savefig(out / f"{stem}.pdf")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return [f"{stem}.png", f"{stem}.pdf"]


def _label(c: Config) -> str:
    return c.label + (f" {SHARED_MARK}" if c.shared else "")


def plot_curves(configs: list[Config], out: Path) -> tuple[list[str], list[str]]:
    """Rows: training loss, val/acc, test/acc (those logged); columns: against epoch, against
    wall-clock. Mean line with a min-max band over the replicates; accuracy axes fitted to the data
    (within 0-1), the loss on a log axis when it spans more than a factor 5."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    keys = [k for k in ("train/loss", "val/acc", "test/acc") if any(j.series(k) for c in configs for j in c.completed)]
    drawn = [c for c in configs if any(j.series(k) for j in c.completed for k in keys)]
    if not keys or not drawn:
        return [], []
    sty = styles(len(drawn))
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 2.8 * len(keys) + 0.25 * len(drawn)), squeeze=False)
    names = {"train/loss": "training loss", "val/acc": "validation accuracy", "test/acc": "test accuracy"}
    for r, key in enumerate(keys):
        for col, x in enumerate(("epoch", "time")):
            ax = axes[r][col]
            drawn_values: list[float] = []
            for c, s in zip(drawn, sty):
                xs, m, lo, hi = _curve(c, key, x)
                if not xs:
                    continue
                ax.plot(xs, m, label=_label(c), ms=4, lw=1.3, **s)
                drawn_values += lo + hi
                if lo != hi:
                    ax.fill_between(xs, lo, hi, color=s["color"], alpha=0.15, lw=0)
            if key.endswith("/acc") and drawn_values:      # fitted to the data (5% margin), within 0-1
                bottom, top = min(drawn_values), max(drawn_values)
                pad = (top - bottom) * 0.05 or abs(top) * 0.02 or 0.01
                ax.set_ylim(max(bottom - pad, 0.0), min(top + pad, 1.0))
            ax.set_ylabel(names[key])
            if x == "epoch":
                _epoch_axis(ax, drawn, key)
            else:
                ax.set_xlabel("wall-clock time since training started (s)")
            ax.ticklabel_format(axis="y", useOffset=False)
            if key == "train/loss":
                vals = [v for c in drawn for j in c.completed for v in j.series(key).values()]
                if vals and min(vals) > 0 and max(vals) / min(vals) > 5:
                    ax.set_yscale("log")
                    # plain numbers on a log axis (0.3, not 3 x 10^-1)
                    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
                    ax.yaxis.set_minor_formatter(FuncFormatter(
                        lambda v, _: short(v) if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
            ax.grid(alpha=0.3)
    n_rep = sorted({len(c.completed) for c in drawn})
    title = ("mean over completed replicates (n=" + ",".join(map(str, n_rep)) + ")"
             + (", band: their minimum to maximum" if max(n_rep) > 1 else ""))
    if any(c.shared for c in drawn):
        title += f"; {SHARED_MARK}: jobs ran side by side, wall-clock includes sharing the machine"
    fig.suptitle(title, fontsize=9)
    _legend_below(fig, *axes[0][0].get_legend_handles_labels())
    return _save(fig, out, "curves"), []


def plot_nfe(configs: list[Config], out: Path) -> tuple[list[str], list[str]]:
    """Forward NFE per batch by epoch for every configuration; backward NFE only for those with a
    non-zero nfe/backward; identical curves as nested hollow markers (docs/design-notes.md)."""
    import matplotlib.pyplot as plt

    drawn = [c for c in configs if any(j.series("nfe/forward") for j in c.completed)]
    if not drawn:
        return [], []
    backward = [c for c in drawn if any(v > 0 for j in c.completed for v in j.series("nfe/backward").values())]
    notes = []
    if not backward:
        notes.append("nfe: no backward panel: no configuration makes a backward solve (backward NFE is 0 "
                     "in every job, as with grad=direct).")
    elif len(backward) < len(drawn):
        notes.append(f"nfe: the backward panel shows the {len(backward)} of {len(drawn)} configurations that "
                     f"make a backward solve; the others have backward NFE 0.")
    panels = [("nfe/forward", drawn)] + ([("nfe/backward", backward)] if backward else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6 + 0.25 * len(drawn)), squeeze=False)
    sty = dict(zip((c.label for c in drawn), styles(len(drawn))))
    for ax, (key, group) in zip(axes[0], panels):
        for i, c in enumerate(group):
            xs, m, lo, hi = _curve(c, key, "epoch")
            s = sty[c.label]
            ax.plot(xs, m, label=_label(c), color=s["color"], marker=s["marker"], mfc="none", mew=1.3,
                    ms=max(3.0, 11 - 7 * i / max(len(group) - 1, 1)), lw=1.2, zorder=2 + i)
            if lo != hi:
                ax.fill_between(xs, lo, hi, color=s["color"], alpha=0.12, lw=0)
        _epoch_axis(ax, group, key)
        ax.set_ylim(bottom=0)           # NFE per batch is a count
        ax.set_ylabel(f"{'forward' if key.endswith('forward') else 'backward'} NFE per batch")
        band = ", band min-max" if any(len(c.completed) > 1 for c in group) else ""
        ax.set_title(f"{key} (mean over replicates{band})", fontsize=9)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    if notes:       # the figure says it too, so it stands alone in a paper draft
        fig.suptitle(textwrap.fill(notes[0].removeprefix("nfe: "), 75 * len(panels)), fontsize=8)
    _legend_below(fig, *axes[0][0].get_legend_handles_labels())
    return _save(fig, out, "nfe"), notes


def plot_epoch_time(configs: list[Config], out: Path) -> tuple[list[str], list[str]]:
    """Seconds per training epoch per configuration: bar = mean over replicates of each job's mean
    epoch time, whisker = the jobs' minimum to maximum, markers = the jobs; the value is written to
    the right of all of them (never under a marker); hatched bars had jobs running side by side."""
    import matplotlib.pyplot as plt

    drawn = [c for c in configs if c.stats("time/epoch_mean_s")[2]]
    if not drawn:
        return [], []
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.42 * len(drawn)))
    sty = styles(len(drawn))
    jobs_s = [[v for j in c.completed if (v := j.value("time/epoch_mean_s")) is not None] for c in drawn]
    right = max(map(max, jobs_s))
    for i, (c, s, pts) in enumerate(zip(drawn, sty, jobs_s)):
        mean, std, n = c.stats("time/epoch_mean_s")
        ax.barh(i, mean, xerr=[[mean - min(pts)], [max(pts) - mean]], color=s["color"], alpha=0.55, capsize=3,
                hatch="//" if c.shared else None, edgecolor="black" if c.shared else s["color"])
        ax.plot(pts, [i] * len(pts), ls="none", color="black", ms=4, marker=s["marker"])
        ax.text(max(pts) + right * 0.03, i, f"{mean:#.3g} s" + (f" ± {std:.2g}" if std is not None else "")
                + f" (n={n})", va="center", ha="left", fontsize=7)
    ax.set_yticks(range(len(drawn)), [_label(c) for c in drawn], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per training epoch (bar: mean over replicates, whisker: min-max, markers: jobs)")
    ax.set_xlim(0, right * 1.45)
    title = "training time per epoch"
    if any(c.shared for c in drawn):
        title += f"\nhatched, {SHARED_MARK}: jobs ran side by side (overlapping wall-clock), times include sharing"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "epoch_time"), []


def _sort_values(values) -> list[str]:
    """Numbers in numeric order, then anything else (a bad value such as `abc`) as written."""
    nums = sorted((v for v in values if _number(v) is not None), key=lambda v: _number(v))
    return nums + sorted(v for v in values if _number(v) is None)


def plot_heatmap(configs: list[Config], metric: str, maximize: bool, out: Path, best: Config | None = None,
                 selected: str = "") -> tuple[list[str], list[str]]:
    """The metric's mean over learning rate x batch size, each cell with mean, ± std and n, when both
    are swept and nothing else is (besides the replicate axis); a continuous search is a scatter."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import Normalize

    keys = {k for c in configs for k, _ in c.values}
    lr_key, bs_key = "optim.lr", "dataset.batch_size"
    if not {lr_key, bs_key} <= keys:
        return [], []
    if keys - {lr_key, bs_key}:
        return [], [f"heatmap: not drawn, the sweep varies {', '.join(sorted(keys - {lr_key, bs_key}))} "
                    f"besides {lr_key} and {bs_key} (see the table)."]
    cell = {(dict(c.values)[lr_key], dict(c.values)[bs_key]): c for c in configs}
    lrs, bss = _sort_values({k[0] for k in cell}), _sort_values({k[1] for k in cell})
    # a grid search: every (lr, batch size) pair present, at most 12 values per axis. Anything else
    # (Optuna's continuous learning rates: 6 values x 3 batch sizes, 6 of 18 cells filled) would be
    # put on an evenly spaced grid with empty cells, and is drawn as a scatter instead.
    grid_like = len(lrs) <= 12 and len(bss) <= 12 and len(cell) == len(lrs) * len(bss)
    title = f"{metric}: mean ± std over replicates (n completed)" if grid_like else f"{metric} per configuration"
    if best is not None:
        title += "\nred " + ("box" if grid_like else "ring") + f": the best, {selected or 'selected'}"
    elif metric.startswith("test/"):
        title += "\ntest data: for reading, not for selection"
    # the colour scale: configurations with every job completed (a diverged row must not set it)
    clean = [c.stats(metric)[0] for c in configs if not c.failed and c.stats(metric)[0] is not None]
    every = [c.stats(metric)[0] for c in configs if c.stats(metric)[0] is not None]
    scale = clean or every
    norm = Normalize(min(scale), max(scale)) if scale else Normalize(0, 1)
    cmap = plt.get_cmap("viridis" if maximize else "viridis_r").with_extremes(bad="lightgrey")
    if grid_like:
        fig, ax = plt.subplots(figsize=(2.2 + 1.8 * max(len(bss), 2), 1.6 + 0.95 * max(len(lrs), 2)))
        grid = np.full((len(lrs), len(bss)), np.nan)
        for (lr, bs), c in cell.items():
            mean = c.stats(metric)[0]
            if mean is not None and not c.failed:
                grid[lrs.index(lr), bss.index(bs)] = mean
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", origin="lower")
        ax.set_xticks(range(len(bss)), [short(b) for b in bss])
        ax.set_yticks(range(len(lrs)), [short(lr) for lr in lrs])
        for (lr, bs), c in cell.items():
            r, col = lrs.index(lr), bss.index(bs)
            mean, std, n = c.stats(metric)
            if mean is None:
                text = "no value"
            else:
                text = f"{mean:#.3g}\n" + (f"± {std:.2g}, " if std is not None else "") + f"n={n}"
            if c.failed:        # hatched grey: not coloured, whatever its survivors' mean
                text += "\n" + tally(c.jobs)
                ax.add_patch(plt.Rectangle((col - 0.5, r - 0.5), 1, 1, fill=False, hatch="//", ec="grey", lw=0))
            r_, g_, b_ = cmap(norm(mean))[:3] if mean is not None and not c.failed else (0.83, 0.83, 0.83)
            bright = 0.299 * r_ + 0.587 * g_ + 0.114 * b_ > 0.5      # luma: dark text on light cells
            ax.text(col, r, text, ha="center", va="center", fontsize=8, color="black" if bright else "white",
                    bbox=dict(boxstyle="round,pad=0.15", fc="lightgrey", ec="none") if c.failed else None)
            if c is best:
                ax.add_patch(plt.Rectangle((col - 0.5, r - 0.5), 1, 1, fill=False, lw=2.5, ec="red"))
        if any(c.failed for c in configs):
            title += "\nhatched grey: jobs that did not complete (not coloured; the scale is the others')"
    else:       # a continuous search (Optuna): one point per configuration, log axes
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        fig, ax = plt.subplots(figsize=(6.5, 4.6))
        pts = [(_number(lr), _number(bs), c) for (lr, bs), c in cell.items()]
        pts = [(lr, bs, c) for lr, bs, c in pts if lr is not None and bs is not None]
        ok = [(lr, bs, c) for lr, bs, c in pts if c.stats(metric)[0] is not None and not c.failed]
        bad = [(lr, bs, c) for lr, bs, c in pts if (lr, bs, c) not in ok]
        im = ax.scatter([p[1] for p in ok], [p[0] for p in ok], c=[p[2].stats(metric)[0] for p in ok],
                        cmap=cmap, norm=norm, s=40, zorder=3)
        if bad:
            ax.scatter([p[1] for p in bad], [p[0] for p in bad], marker="x", color="red", zorder=3,
                       label="did not complete (" + ", ".join(sorted({tally(p[2].jobs) or "no value" for p in bad}))[:60] + ")")
            ax.legend(fontsize=7, loc="best")
        for lr, bs, c in pts:
            if c is best:
                ax.scatter([bs], [lr], s=160, facecolors="none", edgecolors="red", linewidths=2, zorder=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        bs_values = sorted({p[1] for p in pts})
        if len(bs_values) <= 12:
            ax.xaxis.set_major_locator(FixedLocator(bs_values))
            ax.xaxis.set_minor_locator(NullLocator())
            if len(bs_values) == 1:
                ax.set_xlim(bs_values[0] / 1.5, bs_values[0] * 1.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
        ax.grid(alpha=0.3)
    fig.colorbar(im, ax=ax, label=metric, extend="both" if scale is clean and len(every) > len(clean) else "neither")
    ax.set_xlabel("batch size")
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out, "heatmap"), []


def make_plots(configs: list[Config], sel: Selection, out: Path) -> tuple[list[str], list[str]]:
    try:
        import matplotlib
    except ImportError:
        print("odex-report: matplotlib is not installed (pip install odex[report]): tables only", file=sys.stderr)
        return [], []
    matplotlib.use("Agg")           # files only, no display
    heat_metric = sel.metric if sel.best is not None else next(
        (m for m in (sel.metric, "val/acc", "test/acc") if any(c.stats(m)[2] for c in configs)), sel.metric)
    made, notes = [], []
    for files, n in (plot_curves(configs, out), plot_nfe(configs, out), plot_epoch_time(configs, out),
                     plot_heatmap(configs, heat_metric, sel.maximize, out, sel.best, selected=sel.where)):
        made += files
        notes += n
    return made, notes
