"""Shared by the `kbnn` command-line tests: the one error line a failed command prints, and the
modules a fresh interpreter imports while `kbnn_apps.cli.main` handles light arguments."""

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "kbnn", "numpy", "larq_compute_engine")


def one_error_line(capsys) -> str:
    """The one non-blank line on stderr: a ``kbnn: error:`` line, without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("kbnn: error:") and "Traceback" not in err
    return lines[0]


def light_runs_in_a_fresh_interpreter(runs, heavy=HEAVY, **subprocess_kwargs) -> dict:
    """``main(argv)`` of every ``(argv, status)`` of `runs` (output silenced) in a fresh
    interpreter (pytest itself has imported the heavy modules in this process): ``{"statuses":
    the exit statuses, "heavy": the modules of the `heavy` packages loaded by then}``.
    `subprocess_kwargs` (env, cwd) go to `subprocess.run`."""
    code = f"""
import contextlib, io, json, sys
from kbnn_apps.cli import main
statuses = []
for argv, _ in {list(runs)!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        statuses.append(main(argv))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {tuple(heavy)!r})
print(json.dumps({{"statuses": statuses, "heavy": heavy}}))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, **subprocess_kwargs)
    return json.loads(run.stdout.splitlines()[-1])
