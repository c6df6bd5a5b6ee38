"""``lottery-ticket demo``: the Lottery Ticket result of Frankle & Carbin (2019), on real data.

By default: a LeNet-300-100-shaped MLP (40-300-100-10) on MNIST-1D (Greydanus 2020, generated
locally by the ``mnist1d`` package, no download), iterative magnitude pruning with
``LotteryTicketPruner`` (global, 20% of the remaining weights per round, biases excluded,
rewinding the whole model to W0) for 15 rounds down to 3.5% of the weights, over 3 seeds, each
winning ticket compared with the same sparse network randomly re-initialised. ``--data digits``
runs the earlier demo on scikit-learn's digits (64-300-100-10, 20 rounds). ``--method`` adds
one-shot pruning, random pruning, SNIP and supermask training, on the same data and seeds.
Prints a table, writes ``results.json`` and ``lottery-ticket.png``.

Why MNIST-1D: on digits a randomly re-initialised sparse network keeps up with the ticket
down to ~2% of the weights (digits is too easy for this network); MNIST-1D was made for such
small-scale studies, and there re-initialised networks fall behind from ~20% remaining.

The pieces: ``data`` (data sets and their training recipes), ``train`` (model, training loop
with early stopping), ``experiment`` (IMP and controls per seed), ``methods`` (the other
methods), ``report`` (table, JSON, figure).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._deps import TORCH, Requirement
from .._errors import UserError

DEFAULT_OUT = "lottery-ticket-demo"
FIGURE_NAME = "lottery-ticket.png"
RESULTS_NAME = "results.json"
# --quick: a smoke run for tests and first impressions (seconds, not minutes).
QUICK = {"seeds": 2, "rounds": 4, "iterations": 200}
SEEDS = 3


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _rewind_strategy(text: str) -> str:
    from ...config import RewindStrategy

    try:
        return str(RewindStrategy.parse(text))
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (imports nothing heavy)."""
    from .data import DATA_SETS
    from .experiment import METHODS

    recipes = "; ".join(f"{d.name}: {d.rounds} rounds, {d.iterations} iterations" for d in DATA_SETS.values())
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"output directory for results.json and the figure (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--data",
        choices=tuple(DATA_SETS),
        default="mnist1d",
        help="data set: mnist1d (generated locally, the default) or digits (scikit-learn's)",
    )
    parser.add_argument(
        "--method",
        dest="methods",
        choices=METHODS,
        nargs="+",
        action="extend",
        default=None,
        help="methods to compare, several allowed (default: imp): imp (with the random re-init "
        "control), one-shot, random, snip, supermask",
    )
    parser.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help=f"number of seeds, 0..N-1 (default: {SEEDS}; --quick: {QUICK['seeds']})",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help=f"pruning rounds of 20%% each (default: {recipes}; --quick: {QUICK['rounds']})",
    )
    parser.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help=f"training iterations per round (default: the data set's; --quick: {QUICK['iterations']})",
    )
    parser.add_argument(
        "--rewind",
        type=_rewind_strategy,
        default="init",
        help="rewind strategy: init, early:K, late:F, lr or none (default: init)",
    )
    parser.add_argument(
        "--random-masks",
        action="store_true",
        help="imp: also train the original init under random masks of the same per-layer sparsity",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="seeds (--study: independent runs) trained in parallel, one process each (default: 2 "
        "where there are 2+ cores, 1 with --quick; results do not depend on it)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run for a smoke test: "
        f"{QUICK['seeds']} seeds, {QUICK['rounds']} rounds, {QUICK['iterations']} iterations",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--study",
        choices=("rewind", "stability", "early-bird", "greydanus"),
        default=None,
        help="instead of the default demo, a rewinding study on a 1-D CNN (rewind: init, early:k, "
        "late:f, lr, none side by side; stability: instability vs. rewind point; early-bird: IMP "
        "with and without early-bird rounds) or greydanus (the MNIST-1D paper's lottery table); "
        "writes study-NAME.json and study-NAME.png; --quick makes it a smoke run",
    )


def requires(args: argparse.Namespace) -> list[Requirement]:
    """What the demo imports: torch trains, mnist1d (or scikit-learn) has the data, matplotlib draws."""
    digits = args.data == "digits"
    data = Requirement("sklearn", "scikit-learn", "demo") if digits else Requirement("mnist1d", "mnist1d", "demo")
    return [TORCH, data, Requirement("matplotlib", "matplotlib", "demo")]


def build_config(args: argparse.Namespace) -> Any:
    """The ``DemoConfig`` the parsed options ask for (explicit options win over --quick)."""
    from .data import DATA_SETS
    from .experiment import DemoConfig

    recipe = DATA_SETS[args.data]
    preset = QUICK if args.quick else {"seeds": SEEDS, "rounds": recipe.rounds, "iterations": recipe.iterations}
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    config = DemoConfig(
        seeds=tuple(range(seeds)),
        rounds=args.rounds if args.rounds is not None else preset["rounds"],
        iterations=args.iterations if args.iterations is not None else preset["iterations"],
        rewind=args.rewind,
        random_masks=args.random_masks,
        data=args.data,
        methods=tuple(args.methods or ("imp",)),
    )
    check_options(config)
    return config


def check_options(config: Any) -> None:
    """Refuse option combinations that could only fail after training has started."""
    from ...config import RewindStrategy

    strategy = RewindStrategy.parse(config.rewind)
    if strategy.kind == "early" and (strategy.iteration or 0) > config.iterations:
        raise UserError(
            f"--rewind: {strategy} rewinds to iteration {strategy.iteration}, but a round trains only "
            f"{config.iterations} iterations (--iterations); pick early:K with K <= {config.iterations}"
        )


def prepare_out(out: Path) -> None:
    """Create ``--out`` (a folder) and check it is writable, before any training."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot create {out}: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out: {out} is not writable")


def _print_checks(checks: dict[str, Any]) -> None:
    print(
        f"Dense accuracy {checks['dense_accuracy_points']:.1f}%; winning tickets stay within "
        f"{checks['match_tolerance_points']:g} point of it down to "
        f"{checks['ticket_matches_dense_down_to_percent']:.3g}% of weights remaining."
    )
    high = {p: g for p, g in checks["reinit_gap_points"].items() if float(p) <= checks["high_sparsity_percent"]}
    if high:
        listed = ", ".join(f"{float(p):.3g}%: {g:+.1f}" for p, g in high.items())
        print(
            f"Winning ticket minus random re-init at <= {checks['high_sparsity_percent']:g}% remaining "
            f"(points): {listed}."
        )
    beats = checks["ticket_beats_reinit_from_percent"]
    margin = checks["reinit_margin_points"]
    if beats is None:
        print(f"Random re-init stays within {margin:g} points of the winning ticket at the sparsest round.")
    else:
        print(f"Winning tickets beat random re-init by >= {margin:g} points at <= {beats:.3g}% remaining.")


def run_one_seed(
    seed: int, config: Any, data: Any = None, on_round_done: Callable[..., None] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every method of ``config`` for one seed: (rows by round, supermask results). Runs in a
    worker process too, so it loads the data itself when not given and trains on one thread."""
    import torch

    from .data import load
    from .experiment import run_seed
    from .methods import run_methods

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)  # bit-identical reruns on one machine
    data = load(config.data) if data is None else data
    rows = run_seed(seed, data, config, on_round_done=on_round_done) if "imp" in config.methods else []
    found = run_methods(seed, data, config, rows, on_round_done=on_round_done)
    return rows, ([{"seed": seed, **found}] if found is not None else [])


def run(args: argparse.Namespace) -> int:
    """Run the demo for parsed ``args``; print the table; write results.json and the figure."""
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    import torch

    from ..._files import write_atomic
    from . import report as demo_report
    from .data import DATA_SETS, load

    if args.study is not None:
        return run_study(args)
    config = build_config(args)
    out: Path = args.out
    prepare_out(out)
    # The matrices are tiny (100x40 @ 40x300): a second intra-op thread costs more in
    # synchronisation than it saves on 2 cores.
    previous_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    started = time.perf_counter()
    # --quick: starting worker processes would cost more than its few seconds of training.
    default_jobs = 1 if args.quick else min(2, os.cpu_count() or 1)
    jobs = min(len(config.seeds), args.jobs if args.jobs is not None else default_jobs)
    data = load(config.data) if jobs == 1 else None  # workers load their own
    recipe = DATA_SETS[config.data]
    rows: list[dict[str, Any]] = []
    supermasks: list[dict[str, Any]] = []
    per_seed = (config.rounds + 1) * ("imp" in config.methods) + config.rounds * len(
        [n for n in config.networks if n not in ("ticket", "reinit", "random_mask")]
    )
    sizes = "-".join(map(str, recipe.layer_sizes))
    print(
        f"MLP {sizes} on {config.data}: {', '.join(config.methods)}; {len(config.seeds)} seed(s) x "
        f"{config.rounds} rounds of 20%, {config.iterations} iterations each, rewind={config.rewind}",
        flush=True,
    )
    try:
        with tqdm(total=len(config.seeds) * per_seed, unit="round", disable=args.no_progress, file=sys.stderr) as bar:
            if jobs == 1:
                for seed in config.seeds:
                    bar.set_description(f"seed {seed}")
                    seed_rows, found = run_one_seed(seed, config, data, lambda *_: bar.update(1))
                    rows.extend(seed_rows)
                    supermasks.extend(found)
            else:
                # Seeds are independent and each is deterministic on one thread, so the results
                # are the same as in one process; "spawn" avoids forking torch's and rayon's threads.
                context = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
                    bar.set_description(f"{jobs} processes")
                    futures = [pool.submit(run_one_seed, seed, config) for seed in config.seeds]
                    for _ in concurrent.futures.as_completed(futures):
                        bar.update(per_seed)
                    for future in futures:
                        seed_rows, found = future.result()
                        rows.extend(seed_rows)
                        supermasks.extend(found)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(deterministic)
    elapsed = time.perf_counter() - started
    summary = demo_report.summarize(rows, config.networks)
    checks = demo_report.science_checks(summary) if "imp" in config.methods else None
    results = {
        "config": config.to_dict(),
        "setup": {
            "model": f"LeNet-300-100-shaped MLP ({sizes} ReLU, Gaussian Glorot init, zero biases)",
            "data": recipe.description,
            "optimizer": f"Adam, lr {recipe.learning_rate:g}, minibatch {recipe.batch_size}",
            "accuracy": "test accuracy at the early-stop iteration (minimum validation loss)",
            "pruning": "global, Linear weights only (biases excluded), 20% of survivors per round",
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": 1,
            "jobs": jobs,
        },
        "elapsed_seconds": elapsed,
        "checks": checks,
        "summary": summary,
        "supermask": demo_report.summarize_supermask(supermasks) if supermasks else None,
        "runs": rows,
        "supermask_runs": supermasks,
    }
    demo_report.write_json(out / RESULTS_NAME, results)
    title = (
        f"Lottery tickets, MLP {sizes} on {config.data} (mean ± std over {len(config.seeds)} seeds, "
        f"rewind={config.rewind}, {config.iterations} iterations/round)"
    )
    figure = demo_report.render_figure(summary, config.networks, title, config.iterations, results["supermask"])
    write_atomic(out / FIGURE_NAME, figure)
    print(demo_report.format_table(summary, config.networks, results["supermask"]))
    if checks is not None:
        _print_checks(checks)
    print(f"Wrote {out / RESULTS_NAME} and {out / FIGURE_NAME} in {elapsed:.0f} s.")
    return 0


def run_study(args: argparse.Namespace) -> int:
    """``--study NAME``: run it (``studies``), print its table, write its JSON and figure."""
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    import torch

    from ..._files import write_atomic
    from . import study_report
    from .data import load
    from .report import write_json
    from .studies import PRESETS
    from .studies import run_study as run_named

    if args.data != "mnist1d":
        raise UserError("--study: the studies run on MNIST-1D only (drop --data)")
    out: Path = args.out
    prepare_out(out)
    preset = "quick" if args.quick else "full"
    sizes = PRESETS[preset][args.study]
    steps = (
        len(sizes.seeds) * {"rewind": 5, "stability": len(sizes.rewind_ks), "early-bird": 2, "greydanus": 1}[args.study]
    )
    jobs = args.jobs if args.jobs is not None else 1 if args.quick else min(2, os.cpu_count() or 1)
    started = time.perf_counter()
    with tqdm(total=steps, unit="run", disable=args.no_progress, file=sys.stderr) as bar:
        results = run_named(args.study, preset, load("mnist1d"), lambda: bar.update(1), jobs)
    results["elapsed_seconds"] = time.perf_counter() - started
    environment = {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": 1}
    results["environment"] = {**environment, "jobs": jobs}
    summary = study_report.summarize(results)
    results["summary"] = summary
    name = f"study-{args.study}"
    write_json(out / f"{name}.json", results)
    title = f"--study {args.study} on MNIST-1D ({preset}, {len(sizes.seeds)} seed(s), {sizes.iterations} steps/round)"
    write_atomic(out / f"{name}.png", study_report.render_figure(results, summary, title))
    print(study_report.format_table(results, summary))
    print(f"Wrote {out / name}.json and {out / name}.png in {results['elapsed_seconds']:.0f} s.")
    return 0
