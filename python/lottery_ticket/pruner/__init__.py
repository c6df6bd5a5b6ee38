"""`LotteryTicketPruner`: iterative magnitude pruning (IMP) with rewinding, driving your training.

docs/guide/imp.md shows it on a torch model.

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

from .. import importance as _importance
from .. import kernels
from ..adapters import adapter_for
from ..config import LotteryTicketConfig, NameFilter, RewindStrategy, check_iterations_per_round, check_name_filter
from ..ticket import Ticket, metrics_row
from .builder import PrunerBuilder
from .early_bird import EarlyBird, EarlyBirdWatch
from .resume import resume_run, state_record, write_checkpoint
from .rounds import check_layer_rates, plan_masks, plan_schedule
from .run import Run, capture_step, check_schedule_args
from .run import RunState as RunState  # public: the run as plain values

TrainFn = Callable[[Any, int], Mapping[str, float] | None]
CHECKPOINT_NAME = "imp-checkpoint.safetensors"


class LotteryTicketPruner:
    """Finds winning tickets by iterative magnitude pruning (or by `importance` scores); see the module docstring.

    Args:
        target_sparsity: fraction of the prunable weights removed at the end, in [0, 1).
        pruning_rounds: number of prune + rewind rounds (>= 1).
        rewind_strategy: a `RewindStrategy` (or its string, e.g. ``"early:100"``).
        global_pruning: rank all tensors together (True) or prune each tensor alone (False).
        include: which tensors to prune: glob pattern(s) on names or a predicate
            ``(name, tensor) -> bool``; default: weights of Linear and Conv layers.
        exclude: tensors then left out of those, in the same forms.
        iterations_per_round: optimizer steps per round (T); ``late(f)`` needs it.
        config: a `LotteryTicketConfig` instead of the four values above.
        importance: how weights are ranked: ``"magnitude"``, ``"random"`` (seeded by ``seed``),
            a scorer such as ``lottery_ticket.torch.Snip``, or ``(name, tensor) -> scores``;
            see `lottery_ticket.importance`.
        seed: seed of the ``"random"`` control.
        process_group: a ``torch.distributed`` group (or True: the default group) when each
            rank holds shards of the model as plain tensors: one exact selection over all ranks.
            FSDP2 / DTensor parameters need none (their device mesh is used); DDP replicas none.
        snapshot_device: where the rewind snapshot is kept, e.g. ``"cpu"`` (pinned) for models
            that fill the GPU; default: beside the weights.
        layer_rates: per-tensor rates per round, see `LotteryTicketConfig`.
        early_bird: an `EarlyBird` that ends rounds once the mask settles.
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
        process_group: Any = None,
        snapshot_device: Any = None,
        layer_rates: Any = None,
        early_bird: EarlyBird | None = None,
    ) -> None:
        if config is None:
            if target_sparsity is None or pruning_rounds is None:
                raise TypeError("target_sparsity and pruning_rounds are required (or pass config=)")
            config = LotteryTicketConfig(
                target_sparsity,
                pruning_rounds,
                rewind_strategy or RewindStrategy.init(),  # type: ignore[arg-type]  # a str is parsed
                global_pruning,
                layer_rates=layer_rates,
                early_bird=early_bird,
            )
        elif not isinstance(config, LotteryTicketConfig):
            raise TypeError(f"config: expected a LotteryTicketConfig, got {type(config).__name__}")
        elif layer_rates is not None or early_bird is not None:
            raise TypeError("layer_rates, early_bird: pass them inside config=, not beside it")
        self.config, self.importance = config, _importance.resolve(importance, seed)
        self.include, self.exclude = check_name_filter(include, "include"), check_name_filter(exclude, "exclude")
        self.iterations_per_round = check_iterations_per_round(iterations_per_round)
        if snapshot_device is not None and not isinstance(snapshot_device, str):
            snapshot_device = str(snapshot_device)  # a torch.device
        self.process_group, self.snapshot_device = process_group, snapshot_device
        self._run: Run | None = None
        self._planned: dict[str, Any] | None = None  # the masks the last prune() produced

    @classmethod
    def with_config(
        cls, config: LotteryTicketConfig, include: NameFilter = None, exclude: NameFilter = None
    ) -> LotteryTicketPruner:
        """A pruner for ``config``."""
        return cls(include=include, exclude=exclude, config=config)

    @staticmethod
    def builder() -> PrunerBuilder:
        """``LotteryTicketPruner.builder().target_sparsity(0.95).pruning_rounds(15).build()``."""
        return PrunerBuilder(LotteryTicketPruner)

    @property
    def strategy(self) -> RewindStrategy:
        """The rewind strategy of the current run (of ``config`` before any run)."""
        return (self._run.config if self._run is not None else self.config).rewind_strategy

    @property
    def masks(self) -> dict[str, Any]:
        """Current masks (``torch.bool`` tensors for torch models, NumPy arrays otherwise). A later
        `prune` writes its masks over these same arrays (no fresh mask memory per round)."""
        return dict(self._started().masks)

    @property
    def density(self) -> float:
        """Fraction of the prunable weights alive now."""
        run = self._started()
        return run.alive / run.total

    @property
    def round(self) -> int:
        """Pruning rounds done so far."""
        return self._started().round

    @property
    def rewind_iteration(self) -> int | None:
        """Iteration the rewound weights belong to: 0 (init, lr), k (early/late), None (none)."""
        kind = self.strategy.kind
        if kind in ("init", "lr"):
            return 0
        if kind == "none":
            return None
        return self._started().capture_step

    @property
    def should_stop(self) -> bool:
        """True once this round's mask has settled (`EarlyBird`): ``train`` may end the round now."""
        return self._run is not None and self._run.bird is not None and self._run.bird.stopped_at is not None

    def early_bird_columns(self) -> dict[str, float]:
        """This round's ``early_bird_step`` (the step its mask settled at, or the steps it trained)
        and ``early_bird_stopped`` (1.0 or 0.0) for ``ticket.metrics``; none without `EarlyBird`."""
        run = self._started()
        return run.bird.columns(run.step) if run.bird is not None else {}

    def _started(self) -> Run:
        if self._run is None:
            raise RuntimeError("call start(model) (or run/apply_ticket) first")
        return self._run

    # -- step-wise API ------------------------------------------------------------------------

    def start(
        self, model: Any, *, optimizer: Any = None, scheduler: Any = None, iterations_per_round: int | None = None
    ) -> None:
        """Track ``model``: snapshot its whole state as W0, all weights alive, round 0.

        ``optimizer``/``scheduler`` (optional) have their learning-rate state recorded so that
        `rewind` can restore it; ``iterations_per_round`` (T) is required by ``late(f)``.
        """
        adapter = adapter_for(model, self.include, self.exclude)
        optimizer = adapter.unwrap_optimizer(optimizer)
        check_schedule_args(optimizer, scheduler)
        steps = check_iterations_per_round(iterations_per_round) or self.iterations_per_round
        capture = capture_step(self.config.rewind_strategy, steps)
        check_layer_rates(self.config, adapter.prunable)
        run = Run.start(
            self.config,
            adapter,
            capture_step=capture,
            optimizer=optimizer,
            scheduler=scheduler,
            on_step=self._after_optimizer_step,
            snapshot_device=self.snapshot_device,
            importance=self.importance.name,
            seed=self.importance.seed,
        )
        if self.process_group is not None:
            run.total = run.alive = sum(kernels.alive_counts(run.masks, process_group=self.process_group).values())
        bird = self.config.early_bird
        run.bird = EarlyBirdWatch(bird, run.total, self.process_group) if bird is not None else None
        self._run, self._model = run, model

    def on_step(self, iteration: int | None = None) -> None:
        """Count one optimizer step (or set the count to ``iteration``); captures W_k in round 0."""
        run = self._started()
        if iteration is None:
            run.step += 1
        elif isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
            raise ValueError(f"iteration: expected an int >= 0, got {iteration!r}")
        else:
            run.step = int(iteration)
        # The schedule state that step k+1 ran with is what training resumed from W_k needs.
        run.save_schedule_if_pending()
        if run.round == 0 and run.snapshot is None and run.step == run.capture_step:
            run.snapshot = run.take_snapshot()
            run.schedule_pending = True
        # Never in the final round, nor before the rewind point exists (round 0 of early/late).
        if run.bird is not None and run.round < run.config.pruning_rounds and run.snapshot is not None:
            run.bird.on_step(run.step, self._next_masks)

    def _next_masks(self) -> Any:
        """The masks the next `prune` would give, the model untouched."""
        run = self._started()
        scores = self.importance.scores(self._model, run.adapter.prunable)
        return plan_masks(run.config, scores, run.masks, run.round + 1, self.process_group)

    def _after_optimizer_step(self) -> None:
        self._started().reapply_masks()
        self.on_step()

    def attach(self, optimizer: Any) -> Any:
        """Re-mask after every ``optimizer.step()`` and count steps (torch; returns a removable handle)."""
        watcher = self._started().watcher
        if watcher is None:
            raise TypeError("optimizer: attach() needs a torch model; for NumPy models call apply_masks yourself")
        return watcher.attach(optimizer)

    def prune(self) -> None:
        """Prune this round's share of the survivors by magnitude of the current (trained) weights."""
        run = self._started()
        if run.round >= run.config.pruning_rounds:
            raise RuntimeError(f"all {run.config.pruning_rounds} pruning rounds are done")
        run.adapter.check_live("since start()")
        if run.round == 0:
            run.steps_round0 = run.step
            if run.snapshot is None:
                raise RuntimeError(
                    f"rewind strategy {run.config.rewind_strategy} needs the weights at iteration "
                    f"{run.capture_step}, but round 0 took only {run.step} optimizer steps"
                )
            run.save_schedule_if_pending()
        scores = self.importance.scores(self._model, run.adapter.prunable)
        # Only masks a previous prune() produced are written over: others may be a ticket's arrays.
        own = run.masks is self._planned
        run.masks = plan_masks(run.config, scores, run.masks, run.round + 1, self.process_group, in_place=own)
        self._planned = run.masks
        run.round += 1
        run.alive = sum(kernels.alive_counts(run.masks, process_group=self.process_group).values())
        run.history.append(1.0 - run.alive / run.total)

    def rewind(self, optimizer: Any = None, scheduler: Any = None) -> None:
        """Apply the strategy: restore the whole state from the snapshot (init/early/late) or keep
        the trained weights (lr/none), zero the pruned weights, clear optimizer state, and rewind
        the scheduler (init, lr: to its start; early/late: to iteration k; none: untouched)."""
        run = self._started()
        optimizer = run.adapter.unwrap_optimizer(optimizer)
        check_schedule_args(optimizer, scheduler)
        run.rewind(optimizer, scheduler)

    def ticket(self) -> Ticket:
        """The ticket as of now: masks, rewind snapshot, history, metrics."""
        run = self._started()
        return Ticket(
            masks=run.adapter.masks_to_numpy(run.masks),
            snapshot=dict(run.snapshot) if run.snapshot is not None else run.adapter.state(),
            config=run.config,
            sparsity_history=list(run.history),
            metrics=[dict(m) for m in run.metrics],
            rewind_iteration=self.rewind_iteration,
            iterations_per_round=run.steps_round0,
            importance=run.importance,
        )

    def run_state(self) -> RunState:
        """The run as plain values, for a checkpoint (`RunState.to_dict` for a trainer's)."""
        return self._started().to_state()

    def restore(self, state: RunState, *, arg: str = "state") -> None:
        """Continue the run ``state`` (from `run_state`) on the model `start` was given.

        Checked before anything changes (errors name ``arg``): the configuration, importance,
        seed and pruned tensors must be this pruner's; the masks, snapshot and early-bird
        candidates must fit the model.
        The model, optimizer and scheduler are the caller's to restore (a trainer does).
        """
        if not isinstance(state, RunState):
            raise TypeError(
                f"{arg}: expected a RunState (RunState.from_dict reads its dict), got {type(state).__name__}"
            )
        self._started().restore(state, arg)

    # -- one-call driver ----------------------------------------------------------------------

    def run(
        self,
        model: Any,
        train_fn: TrainFn,
        checkpoint_dir: str | Path | None = None,
        *,
        progress: bool = True,
        iterations_per_round: int | None = None,
    ) -> Ticket:
        """Run IMP: ``train_fn(model, r)`` for r = 0..n with prune + rewind in between.

        Args:
            model: torch ``nn.Module`` (any device, FSDP2) or ``dict[str, np.ndarray]``; its state now is W0.
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
        run = self._started()
        first = 0
        if path is not None and path.exists():
            first = resume_run(path, run)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        rounds = run.config.pruning_rounds
        handle = run.watcher.install_global() if run.watcher is not None else None
        try:
            with tqdm(total=rounds + 1, initial=first, desc="IMP rounds", unit="round", disable=not progress) as bar:
                for r in range(first, rounds + 1):
                    returned = train_fn(model, r)
                    run.adapter.check_live("during train_fn")
                    kernels.apply_masks(run.adapter.prunable, run.masks)
                    run.metrics.append(metrics_row(r, self.density, run.alive, returned))
                    run.metrics[-1].update(self.early_bird_columns())
                    if r < rounds:
                        self.prune()
                        self.rewind()
                    if path is not None:
                        record = {**state_record(run.to_state()), "next_round": r + 1}
                        write_checkpoint(path, self.ticket(), run.adapter, record)
                    bar.set_postfix(density=f"{self.density:.4f}")
                    bar.update(1)
        finally:
            if handle is not None:
                handle.remove()
        return self.ticket()

    # -- tickets without training -------------------------------------------------------------

    def find_ticket(self, model: Any) -> Ticket:
        """One-shot: apply the whole schedule to the current weights, without training.

        The model is not modified; the ticket's snapshot is its current state and
        ``sparsity_history`` lists the sparsity after each of the ``pruning_rounds`` rounds.
        """
        adapter = adapter_for(model, self.include, self.exclude)
        check_layer_rates(self.config, adapter.prunable)
        scores = self.importance.scores(model, adapter.prunable)
        masks, history = plan_schedule(self.config, scores, adapter.full_masks(), self.process_group)
        return Ticket(
            adapter.masks_to_numpy(masks), adapter.state(), self.config, history, [], 0, None, self.importance.name
        )

    def apply_ticket(self, model: Any, ticket: Ticket) -> None:
        """Load the ticket's snapshot into ``model`` and apply its masks; everything is checked
        first (names, shapes and dtypes must match, else nothing is modified). A masks-only ticket
        (no snapshot, e.g. from ``lottery-ticket prune --ticket``) only zeroes the pruned weights
        and leaves every other value as it is. A tied name (``lm_head.weight`` for
        ``transformer.wte.weight``) resolves to the tensor it names. The pruner then tracks
        ``model`` with the ticket's masks and configuration, so `attach` keeps them during
        training and ``rewind_iteration`` is the ticket's."""
        if not isinstance(ticket, Ticket):
            raise TypeError(f"ticket: expected a Ticket, got {type(ticket).__name__}")
        self._run = Run.from_ticket(model, ticket, on_step=self._after_optimizer_step)
