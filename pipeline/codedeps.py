"""A stage's code, followed from its imports: the code deps dvc.yaml lists, and what a fingerprint hashes.

    code_deps("flows.lm")                          # every project file `python -m flows.lm` loads
    code_deps("pipeline.corpus", lazy=("pipeline.sources",))   # and a package it imports at run time
    model_code("flows.train")                      # the models/ modules a training's fingerprint hashes

DVC reruns a stage when one of its deps changes, so a stage's deps must name every project file
its command runs. They are read here from the source, never listed by hand: a module's
load-time imports (``import`` and ``from ... import`` at module level, inside ``if``, ``try``,
``with`` and class bodies too), then theirs, and the packages above each (their ``__init__``
runs first). Imports inside functions are lazy and those under ``if TYPE_CHECKING`` are for
annotations: a run never loads them with the module, so they are not followed; a stage that
loads code at run time (the corpus stage picks its source with importlib) names it in ``lazy``.

Every ``spec()`` builds its deps with ``code_deps``, ``pipeline/sharded.py`` keys its pieces on
it, and ``tests/test_dvc_yaml.py`` checks each stage's list against the files that importing
its command's module really loads.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: code files are read and hashed from here
PACKAGES = ("pipeline", "models", "flows")  # what a stage's command may import (ops/ runs stages, never in one)

# Imported by every stage but unable to change a stage's output bytes: error messages, argument
# parsing, path names (which dvc.yaml repeats anyway), logging, progress, and this module.
# Editing them should not rerun the pipeline, so they are not declared as deps. The top-level
# packages' __init__ files hold docstrings only, and are not deps either.
NOT_DEPS = (
    "pipeline/errors.py",
    "pipeline/stage.py",
    "pipeline/paths.py",
    "pipeline/log.py",
    "pipeline/progress.py",
    "pipeline/codedeps.py",
    *(f"{package}/__init__.py" for package in PACKAGES),
)


def module_file(name: str) -> str:
    """The repository path of project module ``name`` ("models.rnn" -> "models/rnn.py")."""
    base = name.replace(".", "/")
    return f"{base}/__init__.py" if (ROOT / base).is_dir() else f"{base}.py"


def _is_module(name: str) -> bool:
    return (ROOT / module_file(name)).is_file()


def _packages_above(name: str) -> list[str]:
    """The packages Python imports before ``name`` ("pipeline.sources.text" -> pipeline, pipeline.sources)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache  # every spec() walks the shared modules again: parse each once
def _load_time_imports(name: str) -> frozenset[str]:
    """The project modules that importing ``name`` imports itself, at load time."""
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module)
                out.update(
                    m for a in node.names if _is_module(m := f"{node.module}.{a.name}")
                )  # `from models import cells`
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(part)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                visit(node.body)

    visit(ast.parse((ROOT / module_file(name)).read_text(encoding="utf-8")).body)
    return frozenset(m for m in out if m.split(".")[0] in PACKAGES)


def loaded_modules(*names: str) -> frozenset[str]:
    """Every project module that importing ``names`` loads: them, their imports and theirs, and the
    packages above each."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        if (name := todo.pop()) not in seen:
            seen.add(name)
            todo.extend(_packages_above(name))
            todo.extend(_load_time_imports(name))
    return frozenset(seen)


def _package_modules(package: str) -> list[str]:
    """Every module in ``package``'s folder, the package itself included."""
    folder = ROOT / package.replace(".", "/")
    return [".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for f in folder.rglob("*.py")]


def code_deps(module: str, lazy: Iterable[str] = ()) -> tuple[str, ...]:
    """The code deps of a stage whose command is ``python -m module``, sorted: every project file that
    importing it loads, less NOT_DEPS.

    ``lazy`` names packages the stage imports from at run time (importlib), any of whose modules it
    may load: each is followed whole, and listed as its folder, so that a module added to it reruns
    the stage too.
    """
    folders = [package.replace(".", "/") for package in lazy]
    extra = [m for package in lazy for m in _package_modules(package)]
    files = {module_file(m) for m in loaded_modules(module, *extra)} - set(NOT_DEPS)
    listed = {f for f in files if not any(f.startswith(d + "/") for d in folders)}
    return tuple(sorted(listed | set(folders)))


def model_code(flow_module: str, *extra: str) -> tuple[str, ...]:
    """What a training's fingerprint hashes: the models/ modules that importing ``flow_module`` loads,
    plus ``extra`` (a task's data helper outside models/). Sorted module names, so that a module
    keeps its key wherever its file lives (flows/common.py ``fingerprint``)."""
    return tuple(sorted({m for m in loaded_modules(flow_module) if m.startswith("models.")} | set(extra)))


def code_files(modules: Iterable[str]) -> tuple[str, ...]:
    """The files of ``modules``."""
    return tuple(module_file(m) for m in modules)
