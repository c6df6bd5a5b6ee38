"""`LotteryTicketPruner`: iterative magnitude pruning (IMP) with rewinding, driving your training.

Ten lines to find a winning ticket on a torch model::

    import torch
    from lottery_ticket import LotteryTicketPruner, RewindStrategy

    model = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))

    def train(model, round_index):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(100):
            opt.zero_grad(); loss = torch.nn.functional.cross_entropy(model(x), y); loss.backward(); opt.step()
        return {"loss": loss.item()}

    pruner = LotteryTicketPruner(target_sparsity=0.9, pruning_rounds=5, rewind_strategy=RewindStrategy.early(iteration=10))
    ticket = pruner.run(model, train)
    print(f"{ticket.sparsity:.1%} sparse, {ticket.compression_ratio():.1f}x, final loss {ticket.metrics[-1]['loss']:.3f}")

`run` calls ``train(model, r)`` for r = 0..n: round 0 trains the dense model from the weights it
had when `run` started (W0); before round r >= 1 the pruner removes this round's share of the
survivors by magnitude of the trained weights (exactly ``round(N (1 - s)^(r/n))`` remain) and
rewinds. Rewinding restores the **whole model state** (every parameter and buffer) from the
snapshot and then applies the masks, as Frankle & Carbin and open_lth do. While ``train`` runs,
pruned weights stay exactly zero whatever optimizer it creates: a global optimizer step hook,
limited to optimizers owning the pruned parameters and removed afterwards, re-applies the masks
after every step and counts steps, which is how ``early``/``late`` snapshots are captured.

``late(fraction=f)`` rewinds to iteration ``round(f * T)``; T, the number of optimizer steps in
a round, must be passed as ``iterations_per_round=T`` (the snapshot is taken *during* round 0, when
T is not yet known; capturing every step instead would cost a model copy per step). The pruner
checks afterwards that round 0 reached that iteration.

Optimizers created inside ``train`` start fresh each round; optimizers reused across rounds have
their state (momentum, Adam moments) cleared at every rewind. Learning-rate schedules created
inside ``train`` start at step 0; to restart at the rewind point, begin at
``pruner.rewind_iteration`` (k for early/late, 0 for init and lr, None for none). The step-wise
API (`start`, `on_step`, `prune`, `rewind`, `attach`) rewinds a scheduler you pass it exactly.

NumPy models are ``dict[str, np.ndarray]`` (every float entry pruned by default); ``train`` gets
the dict, updates it in place, and the masks are re-applied when it returns (call
``pruner.on_step()`` per step yourself for early/late).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import importance as _importance
from . import kernels
from .adapters import adapter_for
from .checkpoint import read_checkpoint, write_checkpoint
from .config import LotteryTicketConfig, NameFilter, PrunerBuilder, RewindStrategy, check_iterations_per_round
from .ticket import Ticket, metrics_row

TrainFn = Callable[[Any, int], Mapping[str, float] | None]
CHECKPOINT_NAME = "imp-checkpoint.safetensors"


def plan_masks(config: LotteryTicketConfig, scores: Mapping[str, Any], masks: Mapping[str, Any], round_index: int) -> Any:
    """Masks after pruning round ``round_index`` (1-based): exact kept counts, by the kernels,
    ranking ``|scores|`` (the weights themselves for magnitude pruning; see `importance`)."""
    if config.global_pruning:
        alive = sum(kernels.alive_counts(dict(masks)).values())
        total = sum(int(np.prod(tuple(w.shape), dtype=np.int64)) for w in scores.values())
        keep = config.remaining_after(round_index, total)
        return kernels.global_magnitude_masks(dict(scores), alive - keep, dict(masks), "global")
    result = {}
    for name, w in scores.items():
        alive = kernels.alive_counts({name: masks[name]})[name]
        keep = config.remaining_after(round_index, int(np.prod(tuple(w.shape), dtype=np.int64)))
        result.update(kernels.global_magnitude_masks({name: w}, alive - keep, {name: masks[name]}, "global"))
    return result


class LotteryTicketPruner:
    """Finds winning tickets by iterative magnitude pruning; see the module docstring.

    Args:
        target_sparsity: fraction of the prunable weights removed at the end, in [0, 1).
        pruning_rounds: number of prune + rewind rounds (>= 1).
        rewind_strategy: a `RewindStrategy` (or its string, e.g. ``"early:100"``).
        global_pruning: rank all tensors together (True) or prune each tensor alone (False).
        include, exclude: which tensors to prune: glob pattern(s) on names or a predicate
            ``(name, tensor) -> bool``; default: weights of Linear and Conv layers.
        iterations_per_round: optimizer steps per round (T); ``late(f)`` needs it.
        config: a `LotteryTicketConfig` instead of the four values above.
        importance, seed: what pruning ranks: ``"magnitude"``, ``"random"`` (seeded by ``seed``), a
            callable ``(name, weight) -> scores`` or a scorer such as ``torch.Snip``; see `importance`.
    """

    def __init__(
        self,
        target_sparsity: float | None = None,
        pruning_rounds: int | None = None,
        rewind_strategy: RewindStrategy | str | None = None,
        global_pruning: bool = True,
        include: NameFilter = None,
        exclude: NameFilter = None,
        *,
        iterations_per_round: int | None = None,
        config: LotteryTicketConfig | None = None,
        importance: _importance.Importance = "magnitude",
        seed: int = 0,
    ) -> None:
        if config is None:
            if target_sparsity is None or pruning_rounds is None:
                raise TypeError("target_sparsity and pruning_rounds are required (or pass config=)")
            config = LotteryTicketConfig(
                target_sparsity, pruning_rounds, rewind_strategy or RewindStrategy.init(), global_pruning  # type: ignore[arg-type]
            )
        elif not isinstance(config, LotteryTicketConfig):
            raise TypeError(f"config: expected a LotteryTicketConfig, got {type(config).__name__}")
        self.config = config
        self.importance = _importance.resolve(importance, seed)
        self.include, self.exclude = include, exclude
        self.iterations_per_round = check_iterations_per_round(iterations_per_round)
        self._adapter: Any = None
        self._applier: kernels.MaskApplier | None = None

    @classmethod
    def with_config(cls, config: LotteryTicketConfig, include: NameFilter = None, exclude: NameFilter = None) -> LotteryTicketPruner:
        """A pruner for ``config``."""
        return cls(include=include, exclude=exclude, config=config)

    @staticmethod
    def builder() -> PrunerBuilder:
        """``LotteryTicketPruner.builder().target_sparsity(0.95).pruning_rounds(15).build()``."""
        return PrunerBuilder()

    @property
    def strategy(self) -> RewindStrategy:
        return self.config.rewind_strategy

    @property
    def masks(self) -> dict[str, Any]:
        """Current masks (``torch.bool`` tensors for torch models, NumPy arrays otherwise)."""
        return dict(self._started()._masks)

    @property
    def density(self) -> float:
        """Fraction of the prunable weights alive now."""
        return self._started()._alive / self._total

    @property
    def round(self) -> int:
        """Pruning rounds done so far."""
        return self._started()._round

    @property
    def rewind_iteration(self) -> int | None:
        """Iteration the rewound weights belong to: 0 (init, lr), k (early/late), None (none)."""
        return {"init": 0, "lr": 0, "none": None}.get(self.strategy.kind, self._capture_step)

    def _started(self) -> LotteryTicketPruner:
        if self._adapter is None:
            raise RuntimeError("call start(model) (or run/apply_ticket) first")
        return self

    # -- step-wise API ------------------------------------------------------------------------

    def start(self, model: Any, *, optimizer: Any = None, scheduler: Any = None, iterations_per_round: int | None = None) -> None:
        """Track ``model``: snapshot its whole state as W0, all weights alive, round 0.

        ``optimizer``/``scheduler`` (optional) have their learning-rate state recorded so that
        `rewind` can restore it; ``iterations_per_round`` (T) is required by ``late(f)``.
        """
        adapter = adapter_for(model, self.include, self.exclude)
        steps = check_iterations_per_round(iterations_per_round) or self.iterations_per_round
        capture: int | None = None
        if self.strategy.kind == "early":
            capture = self.strategy.iteration
        elif self.strategy.kind == "late":
            if steps is None:
                raise ValueError("iterations_per_round: late(fraction) needs T, the optimizer steps per round")
            capture = round(float(self.strategy.fraction or 0.0) * steps)
        self._adapter, self._masks, self._round, self._step = adapter, adapter.full_masks(), 0, 0
        self._model = model
        self._total = self._alive = sum(int(np.prod(tuple(w.shape), dtype=np.int64)) for w in adapter.prunable.values())
        self._capture_step: int | None = capture
        self._steps_round0: int | None = None
        self._history: list[float] = []
        self._metrics: list[dict[str, Any]] = []
        self._optimizer, self._scheduler = optimizer, scheduler
        self._schedule_pending = False
        self._schedule_start = self._schedule_at_capture = self._schedule_state()
        self._snapshot: dict[str, Any] | None = adapter.state() if capture in (None, 0) else None
        self._watcher = adapter.step_watcher(self._after_optimizer_step)

    def on_step(self, iteration: int | None = None) -> None:
        """Count one optimizer step (or set the count to ``iteration``); captures W_k in round 0."""
        self._started()
        if iteration is None:
            self._step += 1
        elif isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
            raise ValueError(f"iteration: expected an int >= 0, got {iteration!r}")
        else:
            self._step = int(iteration)
        if self._schedule_pending:
            # The schedule state that step k+1 ran with is what training resumed from W_k needs.
            self._schedule_at_capture, self._schedule_pending = self._schedule_state(), False
        if self._round == 0 and self._snapshot is None and self._step == self._capture_step:
            self._snapshot = self._adapter.state()
            self._schedule_pending = True

    def _after_optimizer_step(self) -> None:
        # Runs after every optimizer step: validate once per set of masks, not once per step.
        applier = self._applier
        if applier is None or applier.masks is not self._masks or applier.weights is not self._adapter.prunable:
            self._applier = applier = kernels.MaskApplier(self._adapter.prunable, self._masks)
        applier()
        self.on_step()

    def attach(self, optimizer: Any) -> Any:
        """Re-apply the masks after every ``optimizer.step()`` (and count steps); returns a handle
        with ``remove()``. torch only; the optimizer must own some pruned parameter."""
        if self._started()._watcher is None:
            raise TypeError("optimizer: attach() needs a torch model; for NumPy models call apply_masks yourself")
        return self._watcher.attach(optimizer)

    def prune(self) -> None:
        """Prune this round's share of the survivors by magnitude of the current (trained) weights."""
        self._started()
        if self._round >= self.config.pruning_rounds:
            raise RuntimeError(f"all {self.config.pruning_rounds} pruning rounds are done")
        if self._round == 0:
            self._steps_round0 = self._step
            if self._snapshot is None:
                raise RuntimeError(
                    f"rewind strategy {self.strategy} needs the weights at iteration {self._capture_step}, "
                    f"but round 0 took only {self._step} optimizer steps"
                )
            if self._schedule_pending:
                self._schedule_at_capture, self._schedule_pending = self._schedule_state(), False
        scores = self.importance.scores(self._model, self._adapter.prunable)
        self._masks = plan_masks(self.config, scores, self._masks, self._round + 1)
        self._round += 1
        self._alive = sum(kernels.alive_counts(self._masks).values())
        self._history.append(1.0 - self._alive / self._total)

    def rewind(self, optimizer: Any = None, scheduler: Any = None) -> None:
        """Apply the strategy: restore the whole state from the snapshot (init/early/late) or keep
        the trained weights (lr/none), zero the pruned weights, clear optimizer state, and rewind
        the scheduler (init, lr: to its start; early/late: to iteration k; none: untouched)."""
        adapter = self._started()._adapter
        if self.strategy.rewinds_weights:
            snapshot = self._snapshot
            if snapshot is None:
                raise RuntimeError(f"no snapshot yet: {self.strategy} is captured at iteration {self._capture_step}")
            adapter.load_state(snapshot, skip=adapter.prunable)
            kernels.rewind(adapter.prunable, {n: snapshot[n] for n in adapter.prunable}, self._masks)
        else:
            kernels.apply_masks(adapter.prunable, self._masks)
            self._snapshot = adapter.state()
        for opt in (optimizer, self._optimizer):
            if opt is not None:
                opt.state.clear()
        if self._watcher is not None:
            self._watcher.reset_optimizers()
        if self.strategy.kind != "none":
            saved = self._schedule_at_capture if self.strategy.kind in ("early", "late") else self._schedule_start
            self._restore_schedule(saved, optimizer or self._optimizer, scheduler or self._scheduler)
        self._step = 0

    def _schedule_state(self) -> tuple[Any, Any]:
        opt, sched = self._optimizer, self._scheduler
        lrs = [g["lr"] for g in opt.param_groups] if opt is not None else None
        return (sched.state_dict() if sched is not None else None), lrs

    @staticmethod
    def _restore_schedule(saved: tuple[Any, Any], optimizer: Any, scheduler: Any) -> None:
        sched_state, lrs = saved
        if scheduler is not None:
            if sched_state is None:
                raise ValueError("scheduler: pass it to start() too, so its state can be rewound")
            scheduler.load_state_dict(sched_state)
        if optimizer is not None and lrs is not None:
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = lr

    def ticket(self) -> Ticket:
        """The ticket as of now: masks, rewind snapshot, history, metrics."""
        adapter = self._started()._adapter
        return Ticket(
            masks=adapter.masks_to_numpy(self._masks),
            snapshot=dict(self._snapshot) if self._snapshot is not None else adapter.state(),
            config=self.config,
            sparsity_history=list(self._history),
            metrics=[dict(m) for m in self._metrics],
            rewind_iteration=self.rewind_iteration,
            iterations_per_round=self._steps_round0,
            importance=self.importance.name,
        )

    # -- one-call driver ----------------------------------------------------------------------

    def run(
        self,
        model: Any,
        train_fn: TrainFn,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        *,
        iterations_per_round: int | None = None,
    ) -> Ticket:
        """Run IMP: ``train_fn(model, r)`` for r = 0..n with prune + rewind in between.

        Args:
            model: torch ``nn.Module`` (CPU) or ``dict[str, np.ndarray]``; its state now is W0.
            train_fn: trains one round in place; may return ``{name: float}`` metrics.
            checkpoint_dir: if given, state is saved there after every round and a later call
                resumes from the last complete round (the model is restored from the file).
            progress: show a tqdm bar over rounds.
            iterations_per_round: optimizer steps per round (T), required by ``late(f)``.

        Returns:
            The `Ticket`; ``ticket.metrics`` has one row per ``train_fn`` call. The model is left
            as the last round trained it.
        """
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        if not callable(train_fn):
            raise TypeError(f"train_fn: expected a callable (model, round) -> metrics, got {type(train_fn).__name__}")
        path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        self.start(model, iterations_per_round=iterations_per_round)
        first = self._resume(path) if path is not None and path.exists() else 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        rounds = self.config.pruning_rounds
        handle = self._watcher.install_global() if self._watcher is not None else None
        try:
            with tqdm(total=rounds + 1, initial=first, desc="IMP rounds", unit="round", disable=not progress) as bar:
                for r in range(first, rounds + 1):
                    returned = train_fn(model, r)
                    kernels.apply_masks(self._adapter.prunable, self._masks)
                    self._record(r, returned)
                    if r < rounds:
                        self.prune()
                        self.rewind()
                    if path is not None:
                        self._checkpoint(path, r + 1)
                    bar.set_postfix(density=f"{self.density:.4f}")
                    bar.update(1)
        finally:
            if handle is not None:
                handle.remove()
        return self.ticket()

    def _record(self, r: int, returned: Mapping[str, float] | None) -> None:
        self._metrics.append(metrics_row(r, self.density, self._alive, returned))

    def _checkpoint(self, path: Path, next_round: int) -> None:
        resume = {"next_round": next_round, "round": self._round, "step": self._step, "capture_step": self._capture_step}
        write_checkpoint(path, self.ticket(), self._adapter, resume)

    def _resume(self, path: Path) -> int:
        ticket, resume = read_checkpoint(path, self.config, self._adapter)
        self._masks = self._adapter.masks_from_numpy(ticket.masks)
        self._round, self._step, self._capture_step = resume["round"], resume["step"], resume["capture_step"]
        self._alive = ticket.remaining_parameters
        self._snapshot, self._steps_round0 = ticket.snapshot, ticket.iterations_per_round
        self._history, self._metrics = list(ticket.sparsity_history), list(ticket.metrics)
        return int(resume["next_round"])

    # -- tickets without training -------------------------------------------------------------

    def find_ticket(self, model: Any) -> Ticket:
        """One-shot: apply the whole schedule to the current weights, without training.

        The model is not modified; the ticket's snapshot is its current state and
        ``sparsity_history`` lists the sparsity after each of the ``pruning_rounds`` rounds.
        """
        adapter = adapter_for(model, self.include, self.exclude)
        masks = adapter.full_masks()
        total = sum(int(np.prod(tuple(w.shape), dtype=np.int64)) for w in adapter.prunable.values())
        history = []
        scores = self.importance.scores(model, adapter.prunable)
        for r in range(1, self.config.pruning_rounds + 1):
            masks = plan_masks(self.config, scores, masks, r)
            history.append(1.0 - sum(kernels.alive_counts(masks).values()) / total)
        return Ticket(adapter.masks_to_numpy(masks), adapter.state(), self.config, history, [], 0, None, self.importance.name)

    def apply_ticket(self, model: Any, ticket: Ticket) -> None:
        """Load the ticket's snapshot into ``model`` and apply its masks (checked first: names,
        shapes and dtypes must match, else nothing is modified). The pruner then tracks
        ``model`` with the ticket's masks, so `attach` keeps them during training."""
        if not isinstance(ticket, Ticket):
            raise TypeError(f"ticket: expected a Ticket, got {type(ticket).__name__}")
        adapter = adapter_for(model, names=list(ticket.masks))
        adapter.check_state(ticket.snapshot, "ticket.snapshot")
        for name, mask in ticket.masks.items():
            if tuple(mask.shape) != tuple(adapter.prunable[name].shape):
                raise ValueError(f"ticket.masks[{name!r}]: shape {tuple(mask.shape)} differs from the model's")
        adapter.load_state(ticket.snapshot, skip=adapter.prunable)
        kernels.rewind(adapter.prunable, {n: ticket.snapshot[n] for n in adapter.prunable}, ticket.masks)
        self._adapter, self._masks, self._model = adapter, adapter.masks_from_numpy(ticket.masks), model
        self._total, self._alive = ticket.total_parameters, ticket.remaining_parameters
        self._round, self._step, self._capture_step, self._steps_round0 = ticket.config.pruning_rounds, 0, None, None
        self._snapshot, self._history, self._metrics = dict(ticket.snapshot), list(ticket.sparsity_history), []
        self._optimizer = self._scheduler = None
        self._schedule_pending, self._schedule_start = False, (None, None)
        self._schedule_at_capture = self._schedule_start
        self._watcher = adapter.step_watcher(self._after_optimizer_step)

