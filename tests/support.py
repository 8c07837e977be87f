"""Helpers shared by tests: a throwaway copy of the repo, real DVC, real params.

Tests never write into the repository: ``copy_repo`` makes a fresh git repo
(one commit, as a clone) under ``tmp_path`` holding the project's files, and every command runs there.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=rnnlab test", "-c", "user.email=test@rnnlab.invalid"]  # no identity needed
SHARED_DATA = ROOT.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent


# The pipeline's state from the developer's own runs: a lock file names outputs that a copy does
# not have (data/ and artifacts/ are ignored), so `dvc push` could never send them and
# `dvc status --cloud` would report them missing from any remote. A test repo starts clean.
RUN_STATE = ("dvc.lock", "tasks/dvc.lock", "registry.dvc")


def project_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore (work in progress counts), without RUN_STATE."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and f not in RUN_STATE and (ROOT / f).is_file()]


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for dvc and stage commands: this venv first, analytics off."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def copy_repo(dest: Path) -> Path:
    """Copy the project into ``dest`` as a new git + DVC repo with its caches inside ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    # The sandbox keeps DVC's site cache and Prefect's home inside the repo: not for git.
    with open(dest / ".git/info/exclude", "a", encoding="utf-8") as f:
        f.write("/.dvc-site/\n/.prefect/\n")
    env = tool_env(PREFECT_HOME=str(dest / ".prefect"))
    # DVC keeps a per-repo site cache outside the repo by default; keep it in the sandbox.
    run(dest, "dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc-site"), env=env)
    # One commit, as a clone has: DVCLive reads the baseline commit, `dvc exp run` needs one.
    run(dest, "git", "add", "-A", env=env)
    run(dest, *GIT, "commit", "-qm", "a copy of the project", env=env)
    return dest


def run(
    cwd: Path, *cmd: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command in ``cwd``; on failure, raise with its output shown."""
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=env or tool_env(PREFECT_HOME=str(cwd / ".prefect")),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_params(path: Path = ROOT / "params.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def _repo_params() -> Any:
    from pipeline.params import read_params

    return read_params(ROOT / "params.yaml")


def section(key: str, **update: Any) -> Any:
    """The repository's params.yaml section at dotted ``key`` (its own model type, e.g. TrainParams
    for "train.word"), with ``update``'s keys changed and validated as params.yaml would be::

        p = section("train.word", hidden=16, epochs=1, device="cpu")

    A bad value or an unknown key raises pydantic's ValidationError. The file is read once.
    """
    from pipeline.params import lookup

    base = lookup(_repo_params(), key)
    return type(base).model_validate({**base.model_dump(), **update})


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_params(path: Path, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the real params.yaml, shrunk by ``overrides``, to ``path``."""
    params = merge(base if base is not None else load_params(), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


# A small grammar corpus: the real defaults with fewer documents.
SMALL_CORPUS = {"corpus": {"source": "grammar", "grammar": {"train_docs": 400, "valid_docs": 60, "test_docs": 60}}}


def run_data_stages(root: Path, *, windows: bool = True) -> Path:
    """Run the spine's stages in ``root`` (its params.yaml), in process: corpus, then per level
    tokenize (one thread), vocab and, with ``windows``, windows. Returns ``root``."""
    from pipeline import corpus, tokenize, vocab
    from pipeline import windows as windows_stage

    with contextlib.chdir(root):
        corpus.run("params.yaml")
        for level in ("word", "char"):
            tokenize.run(level, "params.yaml", 1)
            vocab.run(level, "params.yaml")
            if windows:
                windows_stage.run(level, "params.yaml")
    return root


def deterministic(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A training history without its wall-clock ("seconds"), which no two runs share."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def run_train(level: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """The lm stage's train subflow on ``params_file``, as the stage calls it (needs a Prefect API)."""
    from flows import lm, train
    from flows.common import tokenizer_settings
    from pipeline.params import load_params as load_typed

    cfg = load_typed(lm.spec(level).params, params_file)
    return train.train(level, cfg[f"train.{level}"], tokenizer_settings(level, cfg[f"tokenize.{level}"]))


def train_word_model(fingerprint: str) -> None:
    """Train params.yaml's word model in the working directory (``lm_workdir``), where the CLI and
    ``evaluate`` look for its checkpoint, through the Trainer alone (no Prefect)."""
    from flows.common import tokenizer_settings
    from models.lm import lm_trainer
    from pipeline.params import read_params
    from pipeline.paths import checkpoints
    from pipeline.vocab import Vocab

    p = read_params("params.yaml")
    run = {
        "fingerprint": fingerprint,
        "tokenizer": tokenizer_settings("word", p.tokenize.word),
        "vocab_path": "data/vocab/word.json",
    }
    vocab = Vocab.load("data/vocab/word.json")
    lm_trainer(p.train.word, Path("data/windows/word"), checkpoints("word"), vocab, run).fit()


def reference_pairs(tokens: list[int], lo: list[int], hi: list[int]) -> list[tuple[int, int]]:
    """Plain Python over the same windows, center by center in stream order.

    The reference that tests/test_skipgram.py and bench/skipgram.py hold pipeline.skipgram.pairs to.
    """
    out = []
    for c in range(len(tokens)):
        for j in range(lo[c], hi[c]):
            if j != c:
                out.append((tokens[c], tokens[j]))
    return out
