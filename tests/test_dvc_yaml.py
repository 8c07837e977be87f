"""dvc.yaml says exactly what each stage reads and writes.

DVC's own parser resolves dvc.yaml (foreach, ``${...}``), then each stage is
checked against its module's ``spec()``: params keys, deps, outs, metrics and
plots must match exactly. Every spec() derives its code deps from its module's
imports (pipeline/codedeps.py); here they must be exactly the project files that
importing the stage's command really loads.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from bench.harness import ROOT, copy_repo
from pipeline.codedeps import NOT_DEPS, PACKAGES, code_deps
from pipeline.params import read_params
from pipeline.sources import SOURCES

# Imports each module group in a forked child of one process that has already
# imported the heavy third-party libraries: fast, and the project modules each
# child imports are still exactly its own.
TRACE = """
import importlib, json, os, sys
for lib in ("numpy", "pyarrow", "pyarrow.parquet", "torch", "prefect", "yaml", "pydantic"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
out = {}
for group in json.loads(sys.argv[1]):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        for name in group:
            importlib.import_module(name)
        files = sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None))
        os.write(w, json.dumps(files).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out[" ".join(group)] = json.loads(f.read())
    os.wait()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    repo = copy_repo(tmp_path_factory.mktemp("dvcyaml") / "repo")
    with Repo(str(repo)) as dvc:
        return {s.name: s for s in dvc.index.stages}


def _module_and_item(cmd: str) -> tuple[str, str | None]:
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"], f"stage cmd must be `python -m <module>`, got {cmd!r}"
    assert argv[2].split(".")[0] in ("pipeline", "flows"), f"stage module must be in pipeline/ or flows/: {cmd!r}"
    item = argv[argv.index("--level") + 1] if "--level" in argv else None
    return argv[2], item


def _spec(module_name: str, item: str | None):
    spec = importlib.import_module(module_name).spec
    (name,) = inspect.signature(spec).parameters or (None,)
    if name == "level":
        return spec(item)
    if name == "source":
        return spec(read_params(ROOT / "params.yaml").corpus.source)
    assert name is None, f"{module_name}.spec takes an unknown argument {name!r}"
    return spec()


def _imported_project_files(groups: list[list[str]]) -> dict[str, set[str]]:
    """For each group of modules: the project files importing it pulls in."""
    proc = subprocess.run([sys.executable, "-c", TRACE, json.dumps(groups)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = {}
    for key, files in json.loads(proc.stdout).items():
        resolved = {Path(f).resolve() for f in files}
        rel = {f.relative_to(ROOT).as_posix() for f in resolved if ROOT in f.parents and f.suffix == ".py"}
        out[key] = {f for f in rel if f.split("/")[0] in PACKAGES and f not in NOT_DEPS}
    return out


def test_every_stage_matches_its_spec(stages: dict[str, object]) -> None:
    assert stages, "dvc.yaml has no stages"
    for name, stage in stages.items():
        module, item = _module_and_item(stage.cmd)
        spec = _spec(module, item)
        params = {key for dep in stage.params for key in dep.params}
        deps = {d.def_path for d in stage.deps if d not in stage.params}
        outs = {o.def_path for o in stage.outs if not o.metric and not o.plot}
        metrics = {o.def_path for o in stage.outs if o.metric}
        plots = {o.def_path for o in stage.outs if o.plot}
        assert params == set(spec.params), f"{name}: params in dvc.yaml {params} != spec {set(spec.params)}"
        assert deps == set(spec.deps), f"{name}: deps in dvc.yaml {deps ^ set(spec.deps)} differ from spec"
        assert outs == set(spec.outs), f"{name}: outs {outs} != spec {set(spec.outs)}"
        assert metrics == set(spec.metrics), f"{name}: metrics {metrics} != spec {set(spec.metrics)}"
        assert plots == set(spec.plots), f"{name}: plots {plots} != spec {set(spec.plots)}"


def _within(f: str, d: str) -> bool:
    """Whether project file ``f`` is the dep ``d`` or lies in the folder ``d``."""
    return f == d or f.startswith(d.rstrip("/") + "/")


@pytest.mark.slow
def test_code_deps_are_exactly_what_each_stage_imports(stages: dict[str, object]) -> None:
    def group(module: str) -> list[str]:
        # The corpus stage imports its source lazily, and `corpus.source` picks any of
        # them at run time, so its code deps are the union over every source.
        return [module, *SOURCES.values()] if module == "pipeline.corpus" else [module]

    modules = sorted({_module_and_item(stage.cmd)[0] for stage in stages.values()})
    traced = _imported_project_files([group(m) for m in modules])
    for name, stage in stages.items():
        module, _ = _module_and_item(stage.cmd)
        imported = traced[" ".join(group(module))]
        listed = {
            d.def_path
            for d in stage.deps
            if d not in stage.params
            and (ROOT / d.def_path).exists()
            and not d.def_path.startswith(("data/", "artifacts/"))
        }
        missing = sorted(f for f in imported if not any(_within(f, d) for d in listed))
        unused = sorted(d for d in listed if not any(_within(f, d) for f in imported))
        assert not missing, f"{name}: imports {missing} but dvc.yaml does not list them as deps"
        assert not unused, f"{name}: lists deps {unused} that it never imports"


@pytest.mark.slow
def test_sharded_preprocessing_keys_its_pieces_on_all_the_code_it_imports() -> None:
    """pipeline/sharded.py reuses a finished piece only while the code that made it is unchanged."""
    from pipeline import sharded

    imported = _imported_project_files([["pipeline.sharded"]])["pipeline.sharded"]
    assert set(code_deps("pipeline.sharded")) == imported
    assert sharded.code_files() == code_deps("pipeline.sharded")
