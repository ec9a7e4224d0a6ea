"""``python -m visionauto.job run job.yml [--dry-run] [overrides...]``: run an Azure job file.

Translates the Azure ML AutoML image job (:mod:`visionauto.job.azure`) into
``python -m visionauto <overrides> [-m]`` (a sweep when ``limits.max_trials > 1`` or a search
space is given, else one run) and runs it. Extra ``key=value`` overrides after the file win
over the file's values (e.g. ``hydra.sweep.dir=...`` or ``trainer=gpu``).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from visionauto.errors import VisionAutoError


def build_command(job_file: str | Path, extra: list[str]) -> tuple[list[str], list[str]]:
    """The ``python -m visionauto`` command of a job file, and the fields it cannot honour.

    Raises:
        ConfigError: the job file cannot be read or translated.
    """
    from visionauto.job.azure import load_job_file, translate_job

    path = Path(job_file).resolve()
    translation = translate_job(load_job_file(path), base_dir=path.parent, where=path.name)
    merged: dict[str, str] = {}
    for item in [*translation.overrides, *extra]:
        merged[item.split("=", 1)[0].lstrip("+~")] = item
    command = [sys.executable, "-m", "visionauto", *merged.values()]
    if translation.multirun:
        command.append("-m")
    return command, translation.ignored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visionauto.job", description="Run an Azure ML AutoML image job YAML file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="translate the job file and run it")
    run.add_argument("job_file", help="Azure AutoML job YAML (task: image_classification, ...)")
    run.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    run.add_argument("overrides", nargs="*", help="extra key=value overrides (win over the file)")
    # Overrides may come before or after --dry-run: collect the leftovers too.
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("-") or "=" not in r]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (overrides are key=value)")
    try:
        command, ignored = build_command(args.job_file, [*args.overrides, *rest])
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if ignored:
        print(
            f"warning: {Path(args.job_file).name}: not used by visionauto (Azure cloud "
            f"settings or features not implemented here): {', '.join(ignored)}",
            file=sys.stderr,
        )
    shown = shlex.join(["python", *command[1:]])
    if args.dry_run:
        print(shown)
        return 0
    print(f"[job] {shown}", flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
