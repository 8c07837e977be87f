"""DVC from Python: run its commands, find the team's remote, push and pull (docs/teams.md).

DVC runs as a subprocess of this venv's ``dvc`` (never a shell): its stage commands are
``python -m ...``, so this venv's bin goes first on PATH, and a failure raises
``DvcError`` with the tail of DVC's own output, the failing stage's error included.
No Prefect here: flows/retrain.py wraps these calls in tasks, ops/repro.py runs ``dvc repro``
with them, and ops/remote.py is their command line (``make push``).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline import procs
from pipeline.errors import RnnlabError

VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"
TAIL_LINES = 40  # of DVC's output, quoted in a failure's message

ADD_REMOTE_HELP = (
    "add one: `make remote-local REMOTE=/shared/path/rnnlab-dvc` (or `dvc remote add -d team "
    "/shared/path/rnnlab-dvc`) and commit .dvc/config so the whole team uses it; S3 and SSH remotes "
    "need their DVC plugin, dvc-s3 or dvc-ssh: `pip install -c constraints.txt -e '.[s3]'` (or '.[ssh]'); "
    "GCS needs `pip install dvc-gs` (docs/teams.md)"
)


class DvcError(RnnlabError):
    """A dvc command failed; the message ends with the last lines it printed."""


class RemoteError(RnnlabError):
    """No DVC remote is configured, or not the one asked for."""


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a dvc command: this venv first on PATH (stages run ``python -m ...``), plus
    ``extra``. DVC's and Prefect's settings come from .dvc/config and prefect.toml, not from here."""
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}{os.pathsep}{out.get('PATH', '')}"
    out.update(extra or {})
    return out


def dvc(
    root: str | Path,
    *args: str,
    log: Callable[[str], object] = print,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """Run ``dvc *args`` in ``root``, passing each output line to ``log``; return the output.

    Raises DvcError (exit status, command, and the last lines of output) when it fails.
    """
    lines: list[str] = []

    def relay(line: str) -> None:  # streamed, so a long `dvc repro` shows its progress as it goes
        lines.append(line)
        log(line)

    # Its own process group with default signals: a cancelled retraining run stops dvc and its stage.
    code, _ = procs.stream([str(DVC), *args], relay, cwd=root, env=env(extra_env))
    if code != 0:
        tail = "\n".join(collections.deque((ln for ln in lines if ln.strip()), maxlen=TAIL_LINES))
        raise DvcError(f"`dvc {' '.join(args)}` failed (exit {code}) in {root}:\n{tail}")
    return "\n".join(lines)


def _quiet(root: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DVC), *args], cwd=root, env=env(), capture_output=True, text=True, check=False)


def remotes(root: str | Path) -> dict[str, str]:
    """The configured remotes, name -> URL (from every config level: repo, local, user)."""
    proc = _quiet(root, "remote", "list")
    if proc.returncode != 0:
        raise DvcError(f"`dvc remote list` failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip() and len(line.split()) >= 2)


def default_remote(root: str | Path) -> str | None:
    """The default remote's name, or None when there is none."""
    proc = _quiet(root, "remote", "default")
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None  # exit 1: "No default remote set"


def resolve(root: str | Path, name: str | None, *, required: bool) -> str | None:
    """The remote to use: ``name`` (which must exist), else the default one.

    With ``required`` a missing remote is a RemoteError saying how to add one; without it,
    None means "no remote: work locally" (a retraining run skips pull and push).
    """
    if name is not None:
        known = remotes(root)
        if name not in known:
            have = f"configured: {', '.join(sorted(known))}" if known else "none is configured"
            raise RemoteError(f"no DVC remote named {name!r} in {root} ({have}); {ADD_REMOTE_HELP}")
        return name
    found = default_remote(root)
    if found is None and required:
        known = remotes(root)
        if known:
            raise RemoteError(
                f"{root} has DVC remotes ({', '.join(sorted(known))}) but no default one: pick one with "
                f"`dvc remote default {min(known)}`, or name it (-r NAME)"
            )
        raise RemoteError(f"no DVC remote is configured in {root}; {ADD_REMOTE_HELP}")
    return found


def pull(root: str | Path, remote: str, log: Callable[[str], object] = print) -> str:
    """Fetch what dvc.lock and the .dvc files name. Missing files are not an error: repro builds them."""
    return dvc(root, "pull", "-r", remote, "--allow-missing", log=log)


def push(root: str | Path, remote: str, log: Callable[[str], object] = print) -> str:
    """Send the current outputs (and the model registry) to the remote."""
    return dvc(root, "push", "-r", remote, log=log)


def add_local(root: str | Path, path: str, name: str = "team") -> str:
    """Make a local or shared-filesystem folder the default remote (``dvc remote add -d -f``)."""
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        # DVC stores a relative path relative to .dvc/; an absolute one means the same to everyone.
        folder = (Path.cwd() / folder).resolve()
    dvc(root, "remote", "add", "--default", "--force", name, str(folder))
    return (
        f"DVC remote {name!r} -> {folder} is now the default. Commit it so the team shares it: "
        "`git add .dvc/config && git commit -m 'DVC remote'`; then `make push`."
    )
