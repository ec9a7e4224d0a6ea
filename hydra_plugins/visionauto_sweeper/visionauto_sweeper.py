"""``hydra/sweeper=visionauto``: Hydra hands ``python -m visionauto ... -m`` to this sweeper.

We do not use Hydra's launcher: each trial is a subprocess of the plain trial entrypoint, run by
our asynchronous pool (:mod:`visionauto.sweep.runner`). This class only speaks Hydra: it splits
the command line into fixed overrides and sweeps (``training.learning_rate=interval(1e-4,1e-2)``,
``model=choice(resnet18,seresnext)``), composes the base config and every trial's config with
Hydra's config loader (so group overrides such as ``model=resnet18`` work), and calls
:func:`visionauto.sweep.orchestrate.run_sweep`. Knobs live in the job config (``limits``,
``sweeper``), not under ``hydra.sweeper``. Kept light at import: Hydra imports every plugin
module on start-up, and executes it before registering it in ``sys.modules``, so no
``from __future__ import annotations`` here (dataclasses would fail to resolve string types).
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict


@dataclass
class VisionAutoSweeperConf:
    """Hydra node of the sweeper; everything else is in the job's ``sweeper`` group."""

    _target_: str = "hydra_plugins.visionauto_sweeper.visionauto_sweeper.VisionAutoSweeper"
    # After the deadline, how long running trials may take to finish before they are stopped.
    grace_seconds: float = 120.0


ConfigStore.instance().store(
    group="hydra/sweeper", name="visionauto", node=VisionAutoSweeperConf, provider="visionauto"
)


class VisionAutoSweeper(Sweeper):
    """Runs an Optuna study of visionauto trials (see the module doc)."""

    def __init__(self, grace_seconds: float = 120.0) -> None:
        super().__init__()
        self.grace_seconds = grace_seconds
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        """Run the sweep; user errors print one line and exit with code 2."""
        from visionauto.errors import VisionAutoError
        from visionauto.job import mark_started
        from visionauto.sweep.runner import SweepTerminated

        mark_started()
        try:
            return self._sweep(arguments)
        except VisionAutoError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        except SweepTerminated:
            print(
                f"terminated: rerun the same command with hydra.sweep.dir="
                f"{self.config.hydra.sweep.dir} to resume the sweep",
                file=sys.stderr,
            )
            sys.exit(143)
        except KeyboardInterrupt:
            print(
                f"interrupted: rerun the same command with hydra.sweep.dir="
                f"{self.config.hydra.sweep.dir} to resume the sweep",
                file=sys.stderr,
            )
            sys.exit(130)

    def _sweep(self, arguments: list[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from visionauto.sweep.orchestrate import SweepRequest, run_sweep

        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed: dict[str, str] = {}
        sweeps: dict[str, str] = {}
        for override in parser.parse_overrides(arguments):
            key = override.key_or_group
            line = override.input_line or ""
            if override.is_sweep_override():
                sweeps[key] = line.split("=", 1)[1]
            else:
                fixed[key] = line
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        cwd = Path(str(self.config.hydra.runtime.cwd))
        base = self._compose(list(fixed.values()), sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # the command, as Hydra does

        def compose(trial_overrides: dict[str, str]):
            lines = dict(fixed)
            if "model" in trial_overrides and "model.name" not in trial_overrides:
                lines.pop("model.name", None)  # the trial picks another model config
            for key, value in trial_overrides.items():
                lines[key] = f"{key}={value}"
            return self._compose(list(lines.values()), sweep_dir)

        request = SweepRequest(
            base=base,
            compose=compose,
            sweep_dir=sweep_dir,
            cwd=cwd,
            sweep_overrides=sweeps,
            fixed_keys=set(fixed),
            grace_seconds=self.grace_seconds,
        )
        return run_sweep(request)

    def _compose(self, overrides: list[str], sweep_dir: Path):
        """The job config for these overrides, as our dataclasses (no Hydra node)."""
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from visionauto.config import to_objects
        from visionauto.errors import ConfigError

        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        try:
            cfg = loader.load_sweep_config(self.config, overrides)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(
                f"cannot compose the config for overrides {overrides}: "
                f"{str(err).strip().splitlines()[0]}"
            ) from None
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.output_dir = str(sweep_dir)  # replaced by each trial's folder
        return to_objects(cfg)
