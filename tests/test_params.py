"""params.yaml validation: every problem listed, each named by its key, with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from bench.harness import ROOT, merge, write_params
from bench.harness import load_params as raw_params
from pipeline import params as P
from pipeline.errors import ParamsError
from pipeline.params import Params, load_params, read_params, validate


def test_repo_params_are_valid() -> None:
    params = read_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.corpus.source == "grammar"  # the built-in default works offline


def test_stage_gets_only_the_keys_it_asks_for() -> None:
    got = load_params(["windows.word", "corpus.source"], ROOT / "params.yaml")
    assert set(got) == {"windows.word", "corpus.source"}
    assert got["windows.word"].length >= 2


def test_bad_value_names_key_and_bound() -> None:
    with pytest.raises(ParamsError) as e:
        validate(merge(raw_params(), {"windows": {"word": {"length": 1}}}))
    assert "windows.word.length: must be ≥ 2, got 1" in str(e.value)


def test_every_problem_is_listed_at_once() -> None:
    bad = merge(
        raw_params(),
        {
            "windows": {"word": {"length": 1}, "char": {"lenght": 5}},
            "vocab": {"char": {"max_size": 2}},
            "corpus": {"source": "wiki"},
        },
    )
    with pytest.raises(ParamsError) as e:
        validate(bad)
    msg = str(e.value)
    assert "has 4 problems" in msg
    assert "windows.word.length: must be ≥ 2, got 1" in msg
    assert "windows.char.lenght: unknown key; valid keys here: modes, length" in msg
    assert "vocab.char.max_size: must be ≥ 4 (the specials <pad>, <unk>, <eos> plus one token), got 2" in msg
    assert "corpus.source: must be one of 'grammar', 'text'" in msg and "got 'wiki'" in msg


def test_unknown_section_and_missing_section() -> None:
    raw = raw_params()
    raw["trian"] = {}
    del raw["windows"]
    with pytest.raises(ParamsError) as e:
        validate(raw)
    assert "trian: unknown key" in str(e.value)
    assert "windows: missing" in str(e.value)


def test_bad_regex_is_named() -> None:
    with pytest.raises(ParamsError, match=r"tokenize.word.pattern: not a valid regular expression"):
        validate(merge(raw_params(), {"tokenize": {"word": {"pattern": "[a-z"}}}))


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        read_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("corpus: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        read_params(tmp_path / "params.yaml")
    write_params(tmp_path / "params.yaml", {"windows": {"word": {"stride": 0}}})
    with pytest.raises(ParamsError, match=str(tmp_path / "params.yaml")):
        read_params(tmp_path / "params.yaml")


# --- params.yaml is the only source of values ---------------------------------------------------


def sections() -> set[type[BaseModel]]:
    """Every params model: every Section subclass (Params, the file's, is one), however deep."""
    found: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [P.Section]
    while todo:
        model = todo.pop()
        if model not in found:
            found.add(model)
            todo.extend(model.__subclasses__())
    return found


def test_no_params_model_has_a_code_default() -> None:
    models = sections()
    assert {P.TrainParams, P.DownloadParams, P.WikipediaParams, P.LoopParams, P.DistributedParams} <= models
    for model in models:
        defaults = [name for name, f in model.model_fields.items() if not f.is_required()]
        assert not defaults, f"{model.__name__} has code defaults for {defaults}; params.yaml must give them"


def test_a_key_left_out_of_params_yaml_is_named() -> None:
    raw = raw_params()
    del raw["lmclass"]["train"]["logits_mb"]
    with pytest.raises(ParamsError, match=r"lmclass\.train\.logits_mb: missing; add it to params\.yaml"):
        validate(raw)
