"""``rnnlab recipe`` and recipes/*.yaml: every recipe fits params.yaml's schema, the command builds the
overrides DVC will apply (checked through DVC's own -S code), its errors are one line with exit 2, and
(slow) a shrunk recipe runs as a real DVC experiment on a real text file."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from bench.harness import ROOT, SHARED_DATA, VENV_BIN, copy_repo, run, tool_env
from ops import recipes
from ops.cli import main
from pipeline.overrides import hydra_value, parse_sets
from pipeline.params import validate

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
PARAMS = ROOT / "params.yaml"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "my corpus.txt"  # a space: the path must survive quoting for DVC
    path.write_text("the cat sat on the mat.\nthe dog ran.\n", encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_shipped_recipes_are_there() -> None:
    assert {p.stem for p in RECIPES} >= {"char-text", "word-wikitext"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_validates_against_the_schema_and_names_one_level(path: Path) -> None:
    values = recipes.load_recipe(path)
    raw = recipes.check(PARAMS, [(str(path), values)])
    params = validate(raw)
    level = recipes.level_of(list(values))
    assert level == {"char-text": "char", "word-wikitext": "word"}.get(path.stem, level) and level is not None
    # What the recipe asks for is what the typed config holds (no key silently dropped or coerced away).
    for key, value in values.items():
        node = params
        for part in key.split("."):
            node = getattr(node, part)
        assert node == (tuple(value) if isinstance(value, list) else value), key
    # A recipe is for a user's corpus: it never picks the corpus, and the device stays auto.
    assert not any(k.startswith("corpus.") for k in values)
    assert getattr(params.train, level).device == "auto"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        3,
        -2,
        0.003,
        1e-05,
        1e300,
        "lstm",
        "null",
        "1e-3",
        "true",
        "",
        "it's",
        r"\S+",
        r"[^\s.,;:!?()]+|[.,;:!?()]",
        "a\\",
        "x\\'y",
        "/a path/with space.txt",
        "é ü 中",
        ["stream"],
        [1, 2.5, "a b"],
    ],
)
def test_hydra_values_read_back_exactly(value: object) -> None:
    ((key, (parsed, _)),) = parse_sets([f"a.b={hydra_value(value)}"], "test").items()
    assert key == "a.b" and parsed == value and type(parsed) is type(value)


def test_plan_orders_recipe_then_corpus_then_user_overrides(corpus: Path, tmp_path: Path) -> None:
    plan = recipes.plan(
        "char-text",
        str(corpus),
        test=str(corpus),
        sets=["train.char.epochs=2", "sample.char.count=1"],
        name="mine",
        force=True,
        params_file=PARAMS,
        folder=ROOT / "recipes",
    )
    values = recipes.load_recipe(ROOT / "recipes/char-text.yaml")
    assert plan.level == "char"
    assert plan.dvc_args[:6] == ["exp", "run", "lm@char", "-n", "mine", "-f"]
    sets = [plan.dvc_args[i + 1] for i, a in enumerate(plan.dvc_args) if a == "-S"]
    keys = [s.partition("=")[0] for s in sets]
    assert len(keys) == len(set(keys))  # one -S per key: the last word is never left to DVC's ordering
    assert keys[-2:] == ["train.char.epochs", "sample.char.count"]  # the user's, last, as typed
    assert sets[-2:] == ["train.char.epochs=2", "sample.char.count=1"]
    assert set(values) - {"train.char.epochs"} <= set(keys)
    corpus_sets = dict(s.split("=", 1) for s in sets if s.startswith("corpus."))
    assert corpus_sets["corpus.source"] == "text" and corpus_sets["corpus.text.valid"] == "null"
    assert corpus_sets["corpus.text.train"] == corpus_sets["corpus.text.test"]
    (read_back, _) = parse_sets([f"x.y={corpus_sets['corpus.text.train']}"], "test")["x.y"]
    assert read_back == str(corpus)
    assert shlex.split(plan.command()) == ["dvc", *plan.dvc_args]


def test_what_dvc_applies_is_what_was_checked(corpus: Path, tmp_path: Path) -> None:
    """The plan's -S strings through DVC's own apply_overrides equal the mapping check() validated."""
    from dvc.utils.hydra import apply_overrides

    sets = ["train.char.lr=0.02", "tokenize.word.pattern='[A-Za-z]+|[.]'", "windows.char.modes=[stream]"]
    plan = recipes.plan("char-text", str(corpus), sets=sets, params_file=PARAMS, folder=ROOT / "recipes")
    assert plan.level is None  # a word key too: both levels, so every stage runs
    copy = tmp_path / "params.yaml"
    shutil.copy(PARAMS, copy)
    apply_overrides(copy, [f"{k}={v}" for k, v in plan.overrides.items()])
    applied = yaml.safe_load(copy.read_text(encoding="utf-8"))
    values = recipes.load_recipe(ROOT / "recipes/char-text.yaml")
    user = {k: v for k, (v, _) in parse_sets(sets, "test").items()}
    expected = recipes.check(
        PARAMS, [("recipe", values), ("corpus", recipes.corpus_keys(str(corpus), None, None, ROOT)), ("-S", user)]
    )
    assert applied == expected
    assert applied["train"]["char"]["lr"] == 0.02 and applied["corpus"]["text"]["train"] == str(corpus)


def test_a_corpus_inside_the_repository_is_written_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_bytes(PARAMS.read_bytes())
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts/a.txt").write_text("some text\n", encoding="utf-8")
    plan = recipes.plan(
        "char-text", str(tmp_path / "texts"), params_file=tmp_path / "params.yaml", folder=ROOT / "recipes"
    )
    assert plan.overrides["corpus.text.train"] == "texts"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-recipe", "{corpus}"], "error: unknown recipe 'no-such-recipe'; recipes/ has char-text, "),
        (["char-text", "{tmp}/missing.txt"], "error: training corpus {tmp}/missing.txt not found"),
        (["char-text", "{corpus}", "--valid", "{tmp}/v.txt"], "error: validation corpus {tmp}/v.txt not found"),
        (
            ["char-text", "{corpus}", "-S", "train.char.hiden=3"],
            "error: -S overrides: train.char.hiden is not a key of params.yaml; keys of train.char: cell, ",
        ),
        (["char-text", "{corpus}", "-S", "train.char.hidden=0"], "error: -S overrides: train.char.hidden: must be ≥ 1"),
        (
            ["char-text", "{corpus}", "-S", "train.char.cell=lstm,gru"],
            "error: -S train.char.cell=lstm,gru: rnnlab recipe takes plain key=value overrides",
        ),
        (["char-text", "{corpus}", "-S", "train.char.lr=[1"], "error: -S train.char.lr=[1: not a key=value override"),
        (
            ["char-text", "{corpus}", "-S", "corpus.text.train=x.txt"],
            "error: -S corpus.text.train: set the corpus with the command's arguments",
        ),
        (["char-text", "{corpus}", "--name", "a b"], "error: --name 'a b': use letters, digits"),
        (
            ["{tmp}/bad.yaml", "{corpus}"],
            "error: {tmp}/bad.yaml: train.chars.lr is not a key of params.yaml; keys of train: word, char",
        ),
        (["{tmp}/nested.yaml", "{corpus}"], "error: {tmp}/nested.yaml: 'train' is a mapping; write one dotted key"),
        (["{tmp}/value.yaml", "{corpus}"], "error: {tmp}/value.yaml: train.char.optimizer: must be one of 'adam', "),
    ],
)
def test_errors_are_one_line_with_exit_2(
    argv: list[str],
    message: str,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "bad.yaml").write_text("train.chars.lr: 0.1\n", encoding="utf-8")
    (tmp_path / "nested.yaml").write_text("train:\n  char:\n    lr: 0.1\n", encoding="utf-8")
    (tmp_path / "value.yaml").write_text("train.char.optimizer: lion\n", encoding="utf-8")
    monkeypatch.chdir(ROOT)  # where recipes/ and params.yaml are; nothing is written there
    fill = {"corpus": str(corpus), "tmp": str(tmp_path)}
    code, out, err = cli(capsys, "recipe", *(a.format(**fill) for a in argv), "--dry-run")
    assert code == 2 and out == "", (out, err)
    assert err.startswith(message.format(**fill)) and err.count("\n") == 1, err


def test_dry_run_prints_the_dvc_command_and_help_lists_the_recipes(
    corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = cli(capsys, "recipe", "word-wikitext", str(corpus), "--dry-run", "-S", "train.word.epochs=1")
    assert code == 0 and out.startswith("dvc exp run lm@word -S ") and out.rstrip().endswith("-S train.word.epochs=1")
    with pytest.raises(SystemExit) as e:
        main(["recipe", "--help"])
    assert e.value.code == 0 and "recipes here: char-text, word-wikitext" in capsys.readouterr().out.replace("\n", " ")


# --- end to end: real DVC, real Prefect, a real text file ---------------------------------------

# The char recipe shrunk to seconds: its keys still all go through, these win over them.
TINY = [
    "train.char.hidden=16",
    "train.char.emb_dim=8",
    "train.char.batch_size=4",
    "train.char.bptt=20",
    "train.char.epochs=1",
    "train.char.epoch_size=4",
    "sample.char.count=1",
    "sample.char.max_tokens=10",
]


@pytest.mark.slow
def test_a_shrunk_recipe_runs_as_a_dvc_experiment_on_a_text_file(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    text = SHARED_DATA / "nlptutorial-wiki-en" / "wiki-en-test.txt"  # 168 lines of Wikipedia, read in place
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):  # as a user runs it: the project's prefect.toml decides
        env.pop(name, None)
    sets = [a for s in TINY for a in ("-S", s)]
    proc = run(repo, str(VENV_BIN / "rnnlab"), "recipe", "char-text", str(text), "--name", "tiny", *sets, env=env)
    output = proc.stdout + proc.stderr
    stages = set(re.findall(r"Running stage '([^']+)'", output))
    assert stages == {"corpus", "tokenize@char", "vocab@char", "windows@char", "lm@char"}, output
    assert "started a Prefect server for this run" in output

    metrics = json.loads((repo / "artifacts/char/metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_bits"] > 0 and metrics["test_perplexity"] > 1 and "ngram_perplexity" in metrics
    exps = run(repo, "dvc", "exp", "show", "--json", env=env).stdout
    assert '"tiny"' in exps and "test_bits" in exps
    applied = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))  # dvc exp run writes the workspace
    assert applied["corpus"]["text"]["train"] == str(text.resolve()) and applied["train"]["char"]["hidden"] == 16
    recipe = recipes.load_recipe(ROOT / "recipes/char-text.yaml")
    assert applied["train"]["char"]["cell"] == recipe["train.char.cell"]
