"""Summaries, tables and figures of ``lottery-ticket demo --study`` (see ``studies``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _by_round(runs: Sequence[Sequence[dict[str, Any]]], key: str) -> list[dict[str, float]]:
    """Mean over seeds of ``key`` per round (runs: one list of round rows per seed)."""
    rounds = sorted({row["round"] for rows in runs for row in rows})
    out = []
    for r in rounds:
        rows = [row for seed_rows in runs for row in seed_rows if row["round"] == r]
        out.append(
            {
                "round": r,
                "remaining_percent": _mean([row["remaining_percent"] for row in rows]),
                key: 100 * _mean([row[key] for row in rows]),
                "steps": _mean([row["steps"] for row in rows]),
            }
        )
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the table and the figure show (accuracies in %, means over seeds)."""
    study = results["study"]
    if study == "rewind":
        return {s: _by_round(results["runs"][s], "accuracy") for s in results["strategies"]}
    if study == "early-bird":
        summary = {}
        for name, runs in results["runs"].items():
            rounds = _by_round(runs, "accuracy")
            total = 0.0
            for row in rounds:
                total += row["steps"]
                row["total_steps"] = total
            summary[name] = rounds
        return summary
    if study == "greydanus":
        return {name: _by_round(runs, "best_accuracy") for name, runs in results["runs"].items()}
    ks = sorted({p["k"] for p in results["points"]})
    rows = []
    for k in ks:
        at = [p for p in results["points"] if p["k"] == k]
        rows.append(
            {
                "k": k,
                "dense_barrier": 100 * _mean([p["dense"]["barrier"] for p in at]),
                "sparse_barrier": 100 * _mean([p["sparse"]["barrier"] for p in at]),
                "dense_accuracy": 100 * _mean([p["dense_accuracy"] for p in at]),
                "sparse_accuracy": 100 * _mean([p["sparse_accuracy"] for p in at]),
                "remaining_percent": _mean([p["remaining_percent"] for p in at]),
            }
        )
    return {"by_k": rows}


def format_table(results: dict[str, Any], summary: dict[str, Any]) -> str:
    """A plain-text table of ``summary``."""
    study = results["study"]
    if study == "stability":
        lines = ["      k  dense barrier  sparse barrier  dense acc  sparse acc  (sparse: % remaining)"]
        for row in summary["by_k"]:
            lines.append(
                f"{row['k']:>7}  {row['dense_barrier']:>12.1f}%  {row['sparse_barrier']:>13.1f}%  "
                f"{row['dense_accuracy']:>8.1f}%  {row['sparse_accuracy']:>9.1f}%  ({row['remaining_percent']:.1f}%)"
            )
        return "\n".join(lines)
    names = list(summary)
    key = "best_accuracy" if study == "greydanus" else "accuracy"
    head = "remaining  " + "  ".join(f"{n:>12}" for n in names)
    if study == "early-bird":
        head += "  " + "  ".join(f"{'steps ' + n:>16}" for n in names)
    lines = [head]
    first = summary[names[0]]
    for i, row in enumerate(first):
        cells = []
        for n in names:
            match = [x for x in summary[n] if x["round"] == row["round"]]
            cells.append(f"{match[0][key]:>11.1f}%" if match else f"{'-':>12}")
        line = f"{row['remaining_percent']:>8.1f}%  " + "  ".join(cells)
        if study == "early-bird":
            line += "  " + "  ".join(f"{summary[n][i]['total_steps']:>16.0f}" for n in names)
        lines.append(line)
    return "\n".join(lines)


def _paper_rows(results: dict[str, Any]) -> list[tuple[str, list[float], list[float]]]:
    """(label, our best accuracy per seed, the paper's two runs) for the dense network and for
    tickets and random pruning at the rounds nearest the paper's 91% and 96% sparsity."""
    paper, runs = results["paper"], results["runs"]

    def ours(kind: str, remaining: float) -> list[float]:
        picked = []
        for seed_rows in runs[kind]:
            row = min(seed_rows, key=lambda r: abs(r["remaining_percent"] - remaining))
            picked.append(100 * row["best_accuracy"])
        return picked

    rows = [("dense", ours("ticket", 100.0), list(paper["dense"]))]
    for sparsity in ("91", "96"):
        for kind in ("ticket", "random"):
            rows.append((f"{kind} {sparsity}%", ours(kind, 100.0 - int(sparsity)), list(paper[kind][sparsity])))
    return rows


def _against_paper(ax: Any, results: dict[str, Any]) -> None:
    """Our runs beside Greydanus (2020)'s, one column per row of the paper's table."""
    rows = _paper_rows(results)
    for x, (_, ours, theirs) in enumerate(rows):
        ax.plot([x - 0.12] * len(ours), ours, "o", color="C0", label="ours (each seed)" if x == 0 else None)
        ax.plot([x + 0.12] * len(theirs), theirs, "x", color="C3", label="Greydanus 2020" if x == 0 else None)
    ax.set_xticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    ax.set(ylabel="best test accuracy (%)", xlim=(-0.5, len(rows) - 0.5))


def render_figure(results: dict[str, Any], summary: dict[str, Any], title: str) -> bytes:
    """The study's figure as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = results["study"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if study == "stability":
        rows = summary["by_k"]
        ks = [max(r["k"], 0.5) for r in rows]
        axes[0].plot(ks, [r["dense_barrier"] for r in rows], "o-", label="dense")
        axes[0].plot(ks, [r["sparse_barrier"] for r in rows], "o-", label=f"IMP, {rows[0]['remaining_percent']:.1f}%")
        axes[0].axhline(2.0, color="gray", ls=":", label="2% (stable below)")
        axes[0].set(xscale="log", xlabel="rewind iteration k (0 drawn at 0.5)", ylabel="error barrier (points)")
        axes[1].plot(ks, [r["sparse_accuracy"] for r in rows], "o-", label="IMP subnetwork")
        axes[1].plot(ks, [r["dense_accuracy"] for r in rows], "s--", label="dense")
        axes[1].set(xscale="log", xlabel="rewind iteration k", ylabel="test accuracy (%)")
    else:
        key = "best_accuracy" if study == "greydanus" else "accuracy"
        for name, rows in summary.items():
            axes[0].plot([r["remaining_percent"] for r in rows], [r[key] for r in rows], "o-", label=name)
        accuracy = "best test accuracy (%), mean of seeds" if study == "greydanus" else "test accuracy (%)"
        axes[0].set(xscale="log", xlabel="weights remaining (%)", ylabel=accuracy)
        axes[0].invert_xaxis()
        if study == "greydanus":
            _against_paper(axes[1], results)
        elif study == "early-bird":
            for name, rows in summary.items():
                axes[1].plot([r["total_steps"] for r in rows], [r[key] for r in rows], "o-", label=name)
            axes[1].set(xlabel="total training steps so far", ylabel="test accuracy (%)")
        else:
            for name, rows in summary.items():
                axes[1].plot([r["remaining_percent"] for r in rows], [r["steps"] for r in rows], "o-", label=name)
            axes[1].set(xscale="log", xlabel="weights remaining (%)", ylabel="training steps in the round")
            axes[1].invert_xaxis()
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
