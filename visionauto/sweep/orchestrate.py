"""One sweep from start to end, without Hydra: plan, validate data once, study, trial pool, report.

The Hydra sweeper (:mod:`hydra_plugins.visionauto_sweeper`) parses the command line and hands
over a :class:`SweepRequest`: the base config (fixed overrides), a function composing a trial's
config from its overrides, and the command-line sweeps. Everything else happens here:

1. **Plan** (:func:`plan_sweep`): AutoMode when ``limits.max_trials > 1`` and the user set no
   search space, no command-line sweep, no sampling algorithm and no early termination (Azure's
   rule); else a manual sweep over ``sweeper.search_space`` + command-line sweeps.
2. **Data** is validated and split once into ``<sweep_dir>/data/``; trials read that split.
3. **Study**: created in (or loaded from) its storage; RUNNING trials of a killed sweep become
   FAIL and are queued once more; AutoMode's portfolio is queued on a new study.
4. **Pool** (:class:`visionauto.sweep.runner.TrialPool`): trials run as subprocesses, each with
   its folder ``trial_<number>``, its resolved ``config.yaml`` and its share of the machine.
5. **Report** (:mod:`visionauto.sweep.report`): leaderboard, ``best/``, plots, MLflow parent run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionauto.config.resolve import resolve_defaults
from visionauto.config.schema import EarlyTerminationConfig, RootConfig
from visionauto.job.prepare import job_output_root, prepare_job_data
from visionauto.sweep import study as st
from visionauto.sweep.automode import automode_plan
from visionauto.sweep.space import OverrideDict, SearchSpace, build_search_space
from visionauto.sweep.study import SweepError

log = logging.getLogger("visionauto.sweep")

_PLAN_KEYS = ("sweeper.sampling_algorithm", "sweeper.search_space", "sweeper.early_termination")
_MODEL_KEYS = frozenset({"model", "model.name"})


@dataclass
class SweepRequest:
    """What the Hydra sweeper hands over.

    Attributes:
        base: the job config composed from the fixed (non-sweep) overrides.
        compose: builds a trial's config: base overrides + the trial's overrides.
        sweep_dir: the sweep folder (``hydra.sweep.dir``); rerunning on it resumes.
        cwd: the folder the command ran in (default output root: ``<cwd>/outputs``).
        sweep_overrides: command-line sweeps by key, e.g. ``{"model": "choice(a,b)"}``.
        fixed_keys: keys of the fixed overrides (AutoMode keeps what the user fixed).
        grace_seconds: after the deadline, how long trials may take to finish.
    """

    base: RootConfig
    compose: Callable[[OverrideDict], RootConfig]
    sweep_dir: Path
    cwd: Path
    sweep_overrides: dict[str, str]
    fixed_keys: set[str]
    grace_seconds: float = 120.0


@dataclass
class SweepPlan:
    """The sweep's mode, space, sampler name, policy, portfolio and effective trial budget."""

    mode: str  # automode | manual
    space: SearchSpace
    algorithm: str
    early_termination: EarlyTerminationConfig
    portfolio: list[OverrideDict]
    max_trials: int
    drop_keys: frozenset[str] = frozenset()
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclass
class SweepResult:
    """Where the sweep is and what won."""

    sweep_dir: Path
    best_trial: int | None
    best_value: float | None


def is_automode(base: RootConfig, sweep_overrides: dict[str, str], fixed_keys: set[str]) -> bool:
    """Azure's AutoMode rule: more than one trial and no space, sampler or policy given."""
    explicit = any(k.startswith(_PLAN_KEYS) for k in fixed_keys)
    sw = base.sweeper
    return (
        base.limits.max_trials > 1
        and not sw.search_space
        and not sweep_overrides
        and not explicit
        and sw.sampling_algorithm == "random"
        and sw.early_termination.type == "none"
    )


def plan_sweep(req: SweepRequest, *, offline: bool | None = None) -> SweepPlan:
    """Decide what the sweep runs (see the module doc); ``plan.warnings`` holds Azure's soft
    rules that the sweep breaks (printed, not fatal).

    Raises:
        ConfigError, ModelError: a bad search space, sampler or policy.
    """
    base = req.base
    if is_automode(base, req.sweep_overrides, req.fixed_keys):
        if offline is None:
            from visionauto.models.weights import hub_reachable

            offline = not hub_reachable("resnet50")
        # The whole portfolio: entries may collapse once the user's fixed keys are removed, so
        # it is cut to the budget after de-duplication.
        auto = automode_plan(base.task.name, max_trials=1000, offline=offline)
        drop = frozenset(req.fixed_keys) | (_MODEL_KEYS if req.fixed_keys & _MODEL_KEYS else set())
        space = SearchSpace(
            [{n: p for n, p in sub.items() if n not in drop} for sub in auto.space.subspaces]
        )
        portfolio: list[OverrideDict] = []
        for entry in auto.portfolio:
            kept = {k: v for k, v in entry.items() if k not in drop}
            if kept not in portfolio and len(portfolio) < base.limits.max_trials:
                portfolio.append(kept)
        return SweepPlan(
            "automode",
            space,
            auto.sampling_algorithm,
            auto.early_termination,
            portfolio,
            base.limits.max_trials,
            frozenset(drop),
        )
    sw = base.sweeper
    space = build_search_space(_plain(sw.search_space), req.sweep_overrides)
    max_trials = base.limits.max_trials
    notes: list[str] = []
    if sw.sampling_algorithm == "bayesian" and sw.early_termination.type != "none":
        notes.append(
            "sweeper.sampling_algorithm=bayesian with early termination: Azure does not "
            "support this combination (pruned trials mislead the model of the sampler); "
            "running it anyway."
        )
    if sw.sampling_algorithm == "grid":
        size = space.grid_size()
        if size is not None and size < max_trials:
            notes.append(
                f"the grid has {size} point(s): the sweep stops after {size} trial(s) "
                f"(limits.max_trials={max_trials})."
            )
            max_trials = size
    if not any(True for _ in space.items()) and max_trials > 1:
        notes.append(f"no search space: all {max_trials} trials run the same configuration.")
    from visionauto.sweep.pruners import build_pruner
    from visionauto.sweep.samplers import build_sampler

    build_sampler(sw.sampling_algorithm, space, seed=sw.seed)  # rejects what it cannot sample
    build_pruner(sw.early_termination)
    return SweepPlan(
        "manual", space, sw.sampling_algorithm, sw.early_termination, [], max_trials, warnings=notes
    )


def run_sweep(req: SweepRequest, *, echo: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or resume) a sweep into ``req.sweep_dir``; returns the best trial.

    Raises:
        VisionAutoError: a bad config or bad data (before any trial), or no trial completed.
    """
    from visionauto.sweep import report
    from visionauto.sweep.pruners import build_pruner
    from visionauto.sweep.runner import SweepLimits, TrialPool
    from visionauto.sweep.samplers import build_sampler, grid_exhausted
    from visionauto.sweep.trials import TrialPreparer
    from visionauto.tracking import RunTracker

    echo = echo or (lambda line: print(line, flush=True))
    sweep_dir = req.sweep_dir.resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_sweep(req)
    resolve_defaults(req.base)  # a bad base config fails here, before any data is read
    base = req.base
    output_root = job_output_root(base, req.cwd)
    prepared = prepare_job_data(base, sweep_dir, reuse=True)

    sw = base.sweeper
    spec = st.storage_spec(sweep_dir, sw.storage)
    name = sw.study_name or st.default_study_name(sweep_dir)
    pruner = build_pruner(plan.early_termination)
    study = st.create_or_load_study(spec, name, sampler=_loading_sampler(), pruner=pruner)
    resumed = bool(study.trials)
    st.recover_stale_trials(study)
    # A seeded sampler restarted on a resumed study would propose the same points again.
    seed = None if sw.seed is None else sw.seed + len(study.trials)
    study.sampler = build_sampler(plan.algorithm, plan.space, seed=seed)
    if not resumed:
        study.set_user_attr("search_space", plan.space.describe())
        for index, entry in enumerate(plan.portfolio[: plan.max_trials]):
            study.enqueue_trial(plan.space.params_for(entry), user_attrs={"portfolio": index})
    elif study.user_attrs.get("search_space", plan.space.describe()) != plan.space.describe():
        plan.warnings.append(
            "the search space differs from the one this sweep started with "
            f"({study.user_attrs['search_space']!r}); trials go on with the "
            "new one"
        )
    _write_sweep_info(sweep_dir, base, plan, spec, name)
    _echo_header(echo, base, plan, sweep_dir, spec, resumed, study)

    n_slots = min(base.limits.max_concurrent_trials, plan.max_trials)
    prepare = TrialPreparer(req, plan, prepared, study, spec, name, output_root, n_slots)
    can_ask = None
    if plan.algorithm == "grid":

        def can_ask() -> bool:
            return st.has_waiting(study) or not grid_exhausted(study, plan.space)

    def propose(trial: object) -> OverrideDict:
        overrides = plan.space.suggest(trial)
        return {k: v for k, v in overrides.items() if k not in plan.drop_keys}

    tracker = RunTracker(
        uri=base.tracking.uri,
        output_root=output_root,
        experiment_name=base.tracking.experiment_name,
        run_name=f"sweep_{sweep_dir.name}",
        enabled=base.tracking.enabled,
        tags={
            "visionauto.sweep_dir": str(sweep_dir),
            "task": base.task.name,
            "visionauto.study_name": name,
            "visionauto.resumed": resumed,
        },
    )
    with tracker:
        tracker.log_params(
            {
                "mode": plan.mode,
                "sampling_algorithm": plan.algorithm,
                "early_termination": dataclasses.asdict(plan.early_termination),
                "limits": dataclasses.asdict(base.limits),
                "search_space": plan.space.describe(),
                "task": base.task.name,
            }
        )
        prepare.parent_run_id = tracker.run_id
        limits = SweepLimits(
            plan.max_trials, n_slots, base.limits.timeout_minutes * 60.0, req.grace_seconds
        )
        pool = TrialPool(
            study,
            propose=propose,
            prepare=prepare,
            limits=limits,
            primary_metric=base.task.primary_metric,
            can_ask=can_ask,
            echo=echo,
        )
        try:
            pool.run()
        finally:
            best = report.finish_sweep(
                study, sweep_dir, base.task.primary_metric, tracker, echo=echo
            )
    if best is None:
        raise SweepError(_no_result_message(study, sweep_dir))
    return SweepResult(sweep_dir, best.number, best.value)


def _loading_sampler() -> object:
    """The sampler a study is loaded with; it samples nothing. The sweep's own sampler replaces it
    once the number of past trials (its seed offset on a resume) is known."""
    import optuna

    return optuna.samplers.RandomSampler()


def _plain(value: object) -> object:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def hide_password(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for logs and files)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _write_sweep_info(
    sweep_dir: Path, base: RootConfig, plan: SweepPlan, spec: str, name: str
) -> None:
    info = {
        "mode": plan.mode,
        "sampling_algorithm": plan.algorithm,
        "early_termination": dataclasses.asdict(plan.early_termination),
        "max_trials": plan.max_trials,
        "max_concurrent_trials": base.limits.max_concurrent_trials,
        "timeout_minutes": base.limits.timeout_minutes,
        "search_space": plan.space.describe().splitlines(),
        "portfolio": plan.portfolio,
        "storage": hide_password(spec),
        "study_name": name,
        "primary_metric": base.task.primary_metric,
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(info, indent=2) + "\n")


def _echo_header(
    echo: Callable[[str], None],
    base: RootConfig,
    plan: SweepPlan,
    sweep_dir: Path,
    spec: str,
    resumed: bool,
    study: object,
) -> None:
    lim = base.limits
    if plan.mode == "automode":
        what = (
            f"AutoMode: portfolio of {len(plan.portfolio)} configuration(s), then TPE with "
            "bandit pruning"
        )
    else:
        what = f"{plan.algorithm} sampling, early termination {plan.early_termination.type}"
    echo(f"[sweep] {'resuming' if resumed else 'starting'} sweep in {sweep_dir}")
    slots = min(lim.max_concurrent_trials, plan.max_trials)
    echo(
        f"[sweep] {what}; {plan.max_trials} trials, {slots} at a time, time limit "
        f"{lim.timeout_minutes} min"
    )
    echo(f"[sweep] study {study.study_name!r} in {hide_password(spec)}")
    for line in plan.space.describe().splitlines():
        echo(f"[sweep] space {line}")
    for note in plan.warnings:
        echo(f"[sweep] warning: {note}")


def _no_result_message(study: object, sweep_dir: Path) -> str:
    from optuna.trial import TrialState

    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    reason = ""
    if failed:
        last = failed[-1]
        lines = str(last.user_attrs.get("fail_reason", "")).splitlines() or ["unknown reason"]
        reason = f" Trial {last.number} failed: {lines[-1]}."
    return (
        f"No trial of the sweep in {sweep_dir} completed.{reason} See the trial.log of each "
        f"trial folder and {sweep_dir / 'leaderboard.csv'}; fix the cause and rerun the "
        "same command to continue the sweep."
    )
