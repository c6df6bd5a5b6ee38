"""Turning the demo's per-seed rows into a summary, a table, ``results.json`` and a figure."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._files import write_atomic

LABELS = {
    "ticket": "winning ticket",
    "reinit": "random re-init",
    "random_mask": "random mask",
    "one_shot": "one-shot",
    "random": "random pruning",
    "snip": "SNIP",
    "supermask": "supermask",
}
SHORT = {
    "ticket": "ticket",
    "reinit": "re-init",
    "random_mask": "rnd mask",
    "one_shot": "one-shot",
    "random": "random",
    "snip": "SNIP",
    "supermask": "supermask",
}
COLORS = {
    "ticket": "tab:blue",
    "reinit": "tab:orange",
    "random_mask": "tab:green",
    "one_shot": "tab:purple",
    "random": "tab:gray",
    "snip": "tab:red",
    "supermask": "tab:brown",
}
SUMMARY_KEYS = ("test_accuracy", "early_stop_iteration", "final_test_accuracy")
# The paper's claims, checked (and printed) on every run: tickets stay within this many points of
# the dense accuracy, and beat random re-initialisation by at least this many at high sparsity.
MATCH_TOLERANCE_POINTS = 1.0
REINIT_MARGIN_POINTS = 2.0
HIGH_SPARSITY_PERCENT = 5.5


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    # Sample standard deviation across seeds (0 for a single seed).
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def summarize(rows: Sequence[dict[str, Any]], networks: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over seeds, one entry per round.

    Args:
        rows: per-seed, per-round rows as returned by ``demo_experiment.run_seed``.
        networks: which networks the rows hold (``"ticket"``, ``"reinit"``, ``"random_mask"``).

    Returns:
        ``[{"round", "remaining_percent", "seeds", <network>: {"test_accuracy": {"mean", "std"},
        "early_stop_iteration": {...}, "final_test_accuracy": {...}}}]`` sorted by round.

    Example:
        >>> r = [{"round": 0, "remaining_percent": 100.0, "ticket": {"test_accuracy": 0.9,
        ...       "early_stop_iteration": 10, "final_test_accuracy": 0.9}}]
        >>> summarize(r, ["ticket"])[0]["ticket"]["test_accuracy"]
        {'mean': 0.9, 'std': 0.0}
    """
    by_round: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_round.setdefault(int(row["round"]), []).append(row)
    summary = []
    for round_index in sorted(by_round):
        group = by_round[round_index]
        entry: dict[str, Any] = {
            "round": round_index,
            "remaining_percent": group[0]["remaining_percent"],
            "seeds": len(group),
        }
        for net in networks:
            present = [r[net] for r in group if net in r]
            if present:
                keys = SUMMARY_KEYS + (("density",) if all("density" in m for m in present) else ())
                entry[net] = {key: _mean_std([float(m[key]) for m in present]) for key in keys}
        summary.append(entry)
    return summary


def summarize_supermask(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of the supermask runs (each with its learned density).

    Example:
        >>> runs = [{"test_accuracy": 0.5, "early_stop_iteration": 10, "final_test_accuracy": 0.5,
        ...          "density": 0.4}, {"test_accuracy": 0.7, "early_stop_iteration": 30,
        ...          "final_test_accuracy": 0.6, "density": 0.6}]
        >>> {k: round(v, 4) for k, v in summarize_supermask(runs)["density"].items()}
        {'mean': 0.5, 'std': 0.1414}
    """
    summary = {key: _mean_std([float(r[key]) for r in runs]) for key in SUMMARY_KEYS + ("density",)}
    return {"seeds": len(runs), **summary}


def science_checks(summary: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paper's two claims, measured on the seed-averaged accuracies (in points).

    Returns:
        ``dense_accuracy_points``; ``ticket_matches_dense_down_to_percent``: the lowest %
        remaining such that every round down to it is within ``MATCH_TOLERANCE_POINTS`` of dense;
        ``reinit_gap_points``: {"% remaining": ticket - reinit} for every pruned round;
        ``ticket_beats_reinit_at_high_sparsity``: every gap at or below ``HIGH_SPARSITY_PERCENT``
        is at least ``REINIT_MARGIN_POINTS``; ``ticket_beats_reinit_from_percent``: the highest %
        remaining from which every sparser round has a gap of at least that margin (None if the
        sparsest round has not).
    """
    dense = 100.0 * summary[0]["ticket"]["test_accuracy"]["mean"]
    matches_down_to = summary[0]["remaining_percent"]
    for entry in summary:
        if 100.0 * entry["ticket"]["test_accuracy"]["mean"] < dense - MATCH_TOLERANCE_POINTS:
            break
        matches_down_to = entry["remaining_percent"]
    gaps = [
        (e["remaining_percent"], 100.0 * (e["ticket"]["test_accuracy"]["mean"] - e["reinit"]["test_accuracy"]["mean"]))
        for e in summary[1:]
    ]
    beats_from = None
    for remaining, gap in reversed(gaps):
        if gap < REINIT_MARGIN_POINTS:
            break
        beats_from = remaining
    high = [gap for remaining, gap in gaps if remaining <= HIGH_SPARSITY_PERCENT]
    return {
        "dense_accuracy_points": dense,
        "match_tolerance_points": MATCH_TOLERANCE_POINTS,
        "ticket_matches_dense_down_to_percent": matches_down_to,
        "reinit_margin_points": REINIT_MARGIN_POINTS,
        "reinit_gap_points": {f"{remaining:.2f}": gap for remaining, gap in gaps},
        "high_sparsity_percent": HIGH_SPARSITY_PERCENT,
        "ticket_beats_reinit_at_high_sparsity": bool(high) and min(high) >= REINIT_MARGIN_POINTS,
        "ticket_beats_reinit_from_percent": beats_from,
    }


def format_table(
    summary: Sequence[dict[str, Any]], networks: Sequence[str], supermask: dict[str, Any] | None = None
) -> str:
    """A fixed-width table: % remaining, accuracy (mean ± std, %) per network, the early-stop
    iteration of the ticket and its re-init control, and the supermask's single point below."""
    stopped = [n for n in networks if n in ("ticket", "reinit")]
    header = (
        ["round", "remaining"]
        + [f"{LABELS[n]} acc %" if len(networks) <= 3 else f"{SHORT[n]} %" for n in networks]
        + [f"{SHORT[n]} stop" for n in stopped]
    )
    lines = []
    for e in summary:
        accs = [
            f"{100 * e[n]['test_accuracy']['mean']:5.1f} ± {100 * e[n]['test_accuracy']['std']:3.1f}" if n in e else "-"
            for n in networks
        ]
        stops = [f"{e[n]['early_stop_iteration']['mean']:.0f}" if n in e else "-" for n in stopped]
        lines.append([str(e["round"]), f"{e['remaining_percent']:.3g}%"] + accs + stops)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    if supermask is not None:
        d, a = supermask["density"], supermask["test_accuracy"]
        out.append(
            f"supermask (weights frozen at W0, learned mask): {100 * d['mean']:.3g}% ± {100 * d['std']:.2g} "
            f"remaining, accuracy {100 * a['mean']:.1f} ± {100 * a['std']:.1f}%"
        )
    return "\n".join(out)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """``results`` as indented JSON, written atomically."""
    write_atomic(path, (json.dumps(results, indent=2) + "\n").encode())


def render_figure(
    summary: Sequence[dict[str, Any]],
    networks: Sequence[str],
    title: str,
    iterations: int | None = None,
    supermask: dict[str, Any] | None = None,
) -> bytes:
    """PNG bytes: test accuracy and early-stop iteration vs. % weights remaining (log, reversed).

    Like Frankle & Carbin's Figure 4: mean over seeds with a ±1 std band, the dense accuracy as
    a dashed reference line; ``iterations`` (the training budget per round) as a dotted line on
    the right, since an early-stop iteration there means "still improving when training ended".
    Uses matplotlib's object API (no pyplot, no global backend change).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    remaining = [e["remaining_percent"] for e in summary]
    figure = Figure(figsize=(11, 5.0), dpi=120, layout="constrained")
    acc_ax, stop_ax = figure.subplots(1, 2)
    panels = [(acc_ax, "test_accuracy", 100.0), (stop_ax, "early_stop_iteration", 1.0)]
    for ax, key, scale in panels:
        for net in networks:
            xs = [e["remaining_percent"] for e in summary if net in e]
            mean = [scale * e[net][key]["mean"] for e in summary if net in e]
            std = [scale * e[net][key]["std"] for e in summary if net in e]
            ax.plot(xs, mean, marker="o", markersize=3.5, color=COLORS[net], label=LABELS[net])
            ax.fill_between(
                xs,
                [m - s for m, s in zip(mean, std)],
                [m + s for m, s in zip(mean, std)],
                color=COLORS[net],
                alpha=0.15,
                linewidth=0,
            )
        if supermask is not None:
            ax.errorbar(
                [100 * supermask["density"]["mean"]],
                [scale * supermask[key]["mean"]],
                xerr=[100 * supermask["density"]["std"]],
                yerr=[scale * supermask[key]["std"]],
                marker="D",
                color=COLORS["supermask"],
                label=LABELS["supermask"],
                capsize=3,
            )
        ax.set_xscale("log")
        ax.set_xlim(remaining[0] * 1.08, remaining[-1] / 1.08)  # reversed: dense on the left
        ax.xaxis.set_major_locator(FixedLocator(remaining[::2] if len(remaining) > 8 else remaining))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(lambda x, _pos: f"{x:.3g}")
        ax.set_xlabel("% of weights remaining (log scale)")
        ax.grid(True, alpha=0.3)
    dense_net = next(n for n in networks if n in summary[0]) if networks else None
    dense = 100.0 * summary[0][dense_net]["test_accuracy"]["mean"] if dense_net else float("nan")
    acc_ax.axhline(dense, color="gray", linestyle="--", linewidth=1, label=f"dense ({dense:.1f}%)")
    acc_ax.set_ylabel("test accuracy at early stop (%)")
    acc_ax.set_title("Accuracy")
    if iterations is not None:
        stop_ax.axhline(iterations, color="gray", linestyle=":", linewidth=1, label="iterations per round")
    stop_ax.set_ylabel("early-stop iteration (min. validation loss)")
    stop_ax.set_title("Learning speed")
    # One legend below both panels: inside them it would hide points (e.g. the supermask's).
    handles, labels = acc_ax.get_legend_handles_labels()
    more = [(h, label) for h, label in zip(*stop_ax.get_legend_handles_labels()) if label not in labels]
    handles, labels = handles + [h for h, _ in more], labels + [label for _, label in more]
    figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), frameon=False)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
