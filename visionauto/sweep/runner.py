"""The asynchronous trial pool: keep up to N trial subprocesses running, tell Optuna each result.

A new trial starts the moment a slot frees (no batches). Each trial is a subprocess (process
isolation, and Lightning's DDP may re-launch it); one thread per trial waits on it and wakes the
loop. Stops asking at ``max_trials`` (counted in the study's storage, so a resumed sweep or
several sweepers on one study never overshoot) or at the deadline. At the deadline, running
trials are asked to finish (``<trial>/stop_requested``; they also got ``trainer.max_time`` set to
the time left when they started), then terminated after a grace period.

Outcome of a trial, from its exit code and the files it wrote:
exit 0 + ``status.json`` ``pruned`` → PRUNED (Optuna keeps the last reported value);
exit 0 + ``metrics.json`` → COMPLETE with the primary metric; anything else → FAIL, with the
reason (tail of ``trial.log``) stored in the study.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.trial import TrialState

from visionauto.errors import VisionAutoError
from visionauto.sweep import study as st
from visionauto.sweep.samplers import safe_tell
from visionauto.trial.status import STOP_FILE, read_status

log = logging.getLogger("visionauto.sweep")

OverrideDict = dict[str, str]
LOG_FILE = "trial.log"
_KILL_AFTER_TERM_SECONDS = 30.0


@dataclass
class TrialLaunch:
    """How to start one trial: its folder, command line and environment."""

    trial_dir: Path
    command: list[str]
    env: dict[str, str]
    model_name: str = ""


# (trial number, overrides, slot index, seconds left before the deadline) -> launch.
# Raises VisionAutoError when the overrides give an invalid config (the trial then fails).
PrepareFn = Callable[[int, OverrideDict, int, float], TrialLaunch]
ProposeFn = Callable[[optuna.Trial], OverrideDict]


@dataclass
class SweepLimits:
    """When the pool stops: trial budget, concurrency, deadline, grace after the deadline."""

    max_trials: int
    max_concurrent: int
    timeout_seconds: float
    grace_seconds: float = 120.0


@dataclass
class SweepStats:
    """What happened in this run of the pool (for the summary and the benchmark)."""

    started: float = 0.0
    ended: float = 0.0
    # (trial number, slot, start, end) in ``time.monotonic`` seconds.
    timeline: list[tuple[int, int, float, float]] = field(default_factory=list)
    states: dict[int, str] = field(default_factory=dict)
    hit_deadline: bool = False


@dataclass
class _Running:
    number: int
    slot: int
    process: subprocess.Popen
    trial_dir: Path
    started: float
    log: IO[bytes]
    terminated_at: float | None = None


class TrialPool:
    """Runs a study's trials as subprocesses, ``limits.max_concurrent`` at a time.

    Args:
        study: the Optuna study (its sampler proposes, its storage is shared with the trials).
        propose: turns an asked trial into config overrides (calls ``trial.suggest_*``).
        prepare: writes the trial folder and returns how to launch it.
        limits: budget, concurrency, deadline.
        primary_metric: name shown in the progress line.
        can_ask: extra stop rule checked before each new trial (e.g. grid exhausted).
        batch: start trials in blocking batches instead (only to measure what async saves).
        echo: where progress lines go.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        propose: ProposeFn,
        prepare: PrepareFn,
        limits: SweepLimits,
        primary_metric: str,
        can_ask: Callable[[], bool] | None = None,
        batch: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.study = study
        self.propose = propose
        self.prepare = prepare
        self.can_ask = can_ask
        self.limits = limits
        self.primary_metric = primary_metric
        self.batch = batch
        self.echo = echo or (lambda line: print(line, flush=True))
        self.stats = SweepStats()
        self._running: dict[int, _Running] = {}
        self._done: queue.Queue[int] = queue.Queue()
        self._last_progress = ""

    # ------------------------------------------------------------------ main loop
    def run(self) -> SweepStats:
        """Run until the budget is spent or the deadline passed and every trial ended."""
        now = time.monotonic()
        self.stats.started = now
        deadline = now + self.limits.timeout_seconds
        hard_stop: float | None = None
        previous = _handle_sigterm()
        try:
            while True:
                if hard_stop is None:
                    self._fill(deadline)
                if not self._running:
                    break
                self._wait_and_collect(deadline if hard_stop is None else hard_stop)
                now = time.monotonic()
                if hard_stop is None and now >= deadline:
                    hard_stop = now + self.limits.grace_seconds
                    self._ask_running_to_stop()
                elif hard_stop is not None and now >= hard_stop:
                    self._terminate_running(now)
        except BaseException as err:
            # Ctrl-C reached the trials of our process group too; on any other error we stop
            # them. They stay RUNNING in the study: a rerun marks them failed and retries them.
            interrupted = isinstance(err, KeyboardInterrupt)
            if self._running:
                self.echo(
                    f"[sweep] {'interrupted' if interrupted else 'stopping'}: ending "
                    f"{len(self._running)} running trial(s); rerun the same command to "
                    "resume the sweep"
                )
            self._shutdown(terminate=not interrupted)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.stats.ended = time.monotonic()
        return self.stats

    def _fill(self, deadline: float) -> None:
        if self.batch and self._running:
            return
        while len(self._running) < self.limits.max_concurrent:
            now = time.monotonic()
            if now >= deadline:
                if not self.stats.hit_deadline:
                    self.stats.hit_deadline = True
                    self.echo("[sweep] time limit reached: no new trials")
                return
            if st.budget_used(self.study) >= self.limits.max_trials:
                return
            if self.can_ask is not None and not self.can_ask():
                return
            self._start_one(deadline - now)

    def _start_one(self, seconds_left: float) -> None:
        trial = self.study.ask()
        slot = min(
            set(range(self.limits.max_concurrent)) - {r.slot for r in self._running.values()}
        )
        st.set_attrs(self.study, trial._trial_id, {"worker": st.worker_id()})
        try:
            overrides = self.propose(trial)
        except (ValueError, VisionAutoError) as err:
            # The sampler cannot draw from this space (e.g. a resumed study whose space
            # changed): every later trial would fail the same way, so stop the sweep.
            self._record_failure(trial.number, trial._trial_id, f"cannot sample a trial: {err}")
            raise st.SweepError(
                f"cannot sample a trial from the search space: {err}. If the search space "
                "changed since this sweep started, start a new sweep folder "
                "(hydra.sweep.dir=...)."
            ) from None
        try:
            launch = self.prepare(trial.number, overrides, slot, seconds_left)
        except VisionAutoError as err:
            self._record_failure(trial.number, trial._trial_id, f"invalid trial config: {err}")
            return
        st.set_attrs(
            self.study,
            trial._trial_id,
            {
                "overrides": overrides,
                "trial_dir": str(launch.trial_dir),
                "model_name": launch.model_name,
            },
        )
        launch.trial_dir.mkdir(parents=True, exist_ok=True)
        (launch.trial_dir / STOP_FILE).unlink(missing_ok=True)
        log_file = open(launch.trial_dir / LOG_FILE, "wb")  # noqa: SIM115 - closed in _collect
        process = subprocess.Popen(
            launch.command,
            env=launch.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        run = _Running(trial.number, slot, process, launch.trial_dir, time.monotonic(), log_file)
        self._running[trial.number] = run
        threading.Thread(target=self._wait_for, args=(run,), daemon=True).start()
        shown = " ".join(f"{k}={v}" for k, v in overrides.items()) or "(base config)"
        self.echo(f"[sweep] trial {trial.number} started: {shown} -> {launch.trial_dir}")
        self._progress()

    def _wait_for(self, run: _Running) -> None:
        run.process.wait()
        self._done.put(run.number)

    def _wait_and_collect(self, until: float) -> None:
        timeout = min(max(until - time.monotonic(), 0.0), 1.0)
        try:
            numbers = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return
        while not self._done.empty():
            numbers.append(self._done.get_nowait())
        for number in numbers:
            self._collect(self._running.pop(number))
        self._progress()

    # ------------------------------------------------------------------ outcomes
    def _collect(self, run: _Running) -> None:
        end = time.monotonic()
        run.log.close()
        self.stats.timeline.append((run.number, run.slot, run.started, end))
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, run.number
        )
        code = run.process.returncode
        status = read_status(run.trial_dir) or {}
        metrics = _read_json(run.trial_dir / "metrics.json")
        attrs: dict[str, Any] = {"seconds": round(end - run.started, 2)}
        for key in ("mlflow_run_id", "epochs_run"):
            if status.get(key) is not None:
                attrs[key] = status[key]
        if code == 0 and status.get("state") == "pruned":
            st.set_attrs(self.study, trial_id, attrs)
            safe_tell(self.study, run.number, state=TrialState.PRUNED)
            self.stats.states[run.number] = "pruned"
            self.echo(
                f"[sweep] trial {run.number} pruned after evaluation "
                f"{int(status.get('step') or 0) + 1} ({self.primary_metric}="
                f"{_fmt(status.get('last_value'))})"
            )
        elif code == 0 and metrics and "primary_metric_value" in metrics:
            value = float(metrics["primary_metric_value"])
            st.set_attrs(self.study, trial_id, attrs)
            safe_tell(self.study, run.number, value)
            self.stats.states[run.number] = "complete"
            self.echo(
                f"[sweep] trial {run.number} complete: {self.primary_metric}="
                f"{value:.4f} ({attrs['seconds']:.0f} s)"
            )
        else:
            self._record_failure(run.number, trial_id, _fail_reason(code, run), attrs)

    def _record_failure(
        self, number: int, trial_id: int, reason: str, attrs: dict[str, Any] | None = None
    ) -> None:
        st.set_attrs(self.study, trial_id, {**(attrs or {}), "fail_reason": reason[-2000:]})
        safe_tell(self.study, number, state=TrialState.FAIL)
        self.stats.states[number] = "failed"
        self.echo(f"[sweep] trial {number} failed: {reason.splitlines()[-1] if reason else ''}")

    # ------------------------------------------------------------------ stopping
    def _ask_running_to_stop(self) -> None:
        self.stats.hit_deadline = True
        if self._running:
            self.echo(
                f"[sweep] time limit reached: asking {len(self._running)} running "
                f"trial(s) to finish (grace {self.limits.grace_seconds:.0f} s)"
            )
        for run in self._running.values():
            (run.trial_dir / STOP_FILE).touch()

    def _terminate_running(self, now: float) -> None:
        for run in self._running.values():
            if run.terminated_at is None:
                self.echo(
                    f"[sweep] trial {run.number} did not finish in the grace period: terminating it"
                )
                run.process.send_signal(signal.SIGTERM)
                run.terminated_at = now
            elif now - run.terminated_at >= _KILL_AFTER_TERM_SECONDS:
                run.process.kill()

    def _shutdown(self, *, terminate: bool) -> None:
        if terminate:
            for run in self._running.values():
                if run.process.poll() is None:
                    run.process.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10.0
        for run in self._running.values():
            while run.process.poll() is None and time.monotonic() < end:
                time.sleep(0.1)
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
            run.log.close()

    # ------------------------------------------------------------------ progress
    def _progress(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        count = {s: 0 for s in ("complete", "pruned", "failed")}
        best: tuple[float, int] | None = None
        for t in trials:
            if t.state == TrialState.COMPLETE:
                count["complete"] += 1
                if best is None or t.value > best[0]:
                    best = (t.value, t.number)
            elif t.state == TrialState.PRUNED:
                count["pruned"] += 1
            elif t.state == TrialState.FAIL and not t.user_attrs.get("stale"):
                count["failed"] += 1
        done = sum(count.values())
        best_text = (
            f"best {self.primary_metric} {best[0]:.4f} (trial {best[1]})"
            if best
            else "no result yet"
        )
        line = (
            f"[sweep] {done}/{self.limits.max_trials} done (complete {count['complete']}, "
            f"pruned {count['pruned']}, failed {count['failed']}) | running "
            f"{len(self._running)} | {best_text}"
        )
        if line != self._last_progress:
            self._last_progress = line
            self.echo(f"{line}  [{time.strftime('%H:%M:%S')}]")


class SweepTerminated(Exception):
    """The sweeper received SIGTERM (``kill``, a scheduler ending the job)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise SweepTerminated("the sweep received SIGTERM")


def _handle_sigterm() -> Any:
    """Turn SIGTERM into an exception, so running trials are stopped rather than orphaned."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _fail_reason(code: int | None, run: _Running, lines: int = 15) -> str:
    """Exit code (or signal) plus the end of the trial's log, the most useful part of a crash."""
    if run.terminated_at is not None:
        head = f"terminated after the time limit (exit code {code})"
    elif code is not None and code < 0:
        sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        head = f"killed by signal {sig}"
        if -code == signal.SIGKILL:
            head += " (out of memory? the kernel's OOM killer sends SIGKILL)"
    else:
        head = f"exit code {code}"
    try:
        tail = (run.trial_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        tail = []
    if any("out of memory" in ln.lower() for ln in tail[-lines:]):
        head += " (out of memory)"
    text = "\n".join(tail[-lines:])
    last = next((ln for ln in reversed(tail) if ln.strip()), "")
    return f"{head}; see {run.trial_dir / LOG_FILE}\n{text}\n{head}: {last.strip()}"
