"""The GPU path, checked in one command (``make gpu-check`` runs this, then the ``gpu``-marked tests).

    .venv/bin/python -m bench.gpu                    # a CUDA machine: every check (~1-2 min on an H200)
    .venv/bin/python -m bench.gpu --cpu              # every check but the CUDA-only parts: fp32, gloo
    .venv/bin/python -m bench.gpu --cpu --tiny       # CI's size (tests/test_gpu_check.py)
    .venv/bin/python -m bench.gpu --json out.json    # the table's figures, for notes and docs/performance.md

Checks (one table, PASS or FAIL each; exit status 1 when one fails, 2 without CUDA and --cpu):

1. ``device: auto`` resolves to CUDA, a Trainer built with it holds its weights there, and the
   logits come out bf16 under ``models.device.autocast``.
2. bf16 against fp32, word and char (params.yaml's models): two trainings from the same weights
   on the same batches, one under bf16 autocast, one in fp32; the first batch's loss, each epoch's
   train and valid losses, and the same weights scored both ways agree within EVAL_TOL / TRAIN_TOL.
3. Resume: a run stopped mid-epoch and restarted from its checkpoint finds its weights, optimizer,
   generator states and carried TBPTT state on the device, equal to what was saved, and ends where
   an uninterrupted run ends (RESUME_TOL; bit-exact required on the CPU, as the Trainer promises).
4. Training tokens/s of rnnlab's Trainer against the pytorch/examples loop of
   bench/train_throughput.py (imported), same model and data, rounds alternating: word and char.
5. DDP with nproc 1: torchrun runs models/ddp_train.py (what the flows' launcher starts), then a
   DDP-wrapped Trainer over an nccl process group (gloo on the CPU), which must end where the
   first did.

Data: the grammar corpus (the built-in default: offline, deterministic) through the real data
stages, in a temporary folder. Sizes are fixed per mode (SIZES) so the CUDA run stays well under
5 minutes. Timings are ratios against the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bench.harness import ROOT, SMALL_CORPUS, merge, run_data_stages, write_params
from models import checkpoint as ckpt
from models import ddp_train, distributed
from models import device as device_module
from models.device import resolve_device, set_threads
from models.lm import lm_trainer
from models.trainer import Trainer
from pipeline import procs
from pipeline.params import TrainParams, read_params
from pipeline.vocab import Vocab

# The same weights scored in bf16 and in fp32. bf16 keeps 8 significant bits (rounding <= 0.4 %
# of a value); autocast rounds the LSTM's and decoder's outputs to it, and lm_loss sums in fp32,
# so per-token errors average out over a batch's ~1,000 tokens: expected ~0.1 % (an estimate, not
# yet measured on a GPU). 1 % leaves that 10x room and still catches a loss summed in bf16 or
# logits that overflow. A CPU stand-in (CPU autocast: the decoder in bf16, the GRU left in fp32;
# its LSTM has no bf16 kernel) measured 4e-5 here on the char model.
EVAL_TOL = 0.01
# Two trainings part ways after the first rounding, so each epoch's losses compare the level
# reached rather than the same arithmetic. 2 % is several times the usual spread of such runs,
# and a tenth or less of what the first epoch takes off the loss (the details print both). The CPU
# stand-in above: 5e-4 after 2 epochs of 20 steps.
TRAIN_TOL = 0.02
# Resume on CUDA, under deterministic kernels (see ``deterministic``): expected bit-exact; 1e-3
# (relative) allows a kernel with no deterministic version, which then warns (details list it).
RESUME_TOL = 1e-3
# DDP over one process averages gradients over 1 rank: the same training as models/ddp_train.py.
DDP_TOL = 1e-3
# tokens/s floor, rnnlab / pytorch/examples. Not yet measured on a GPU: at the examples' batch
# (20 x 35) both loops are bound by kernel launches, where bf16 autocast adds cast kernels. 0.5
# catches a real fault (a per-token host sync, a CPU fallback) without failing on that; the target
# is parity (docs/performance.md, bench/train_throughput.py). Raise it once a GPU run has been measured.
SPEED_FLOOR = 0.5
DDP_DEADLINE_S = 240  # torchrun with one process: seconds before the check gives up and says so


@dataclass(frozen=True)
class Sizes:
    docs: int  # grammar corpus training documents (valid: a tenth, at least 60)
    steps: int  # optimizer steps per epoch of each training (2 epochs each)
    timed_steps: int  # steps per timed round of the throughput comparison (after as many warm-up)
    rounds: int  # timed rounds, alternating the loops; ratios are medians over rounds


SIZES = {
    "cuda": Sizes(docs=8000, steps=150, timed_steps=100, rounds=5),
    "cpu": Sizes(docs=1000, steps=10, timed_steps=8, rounds=3),  # 2 shared cores: about a minute
    "tiny": Sizes(docs=400, steps=4, timed_steps=2, rounds=1),  # CI: the code paths, not the figures
}


@dataclass
class Result:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "PASS" if self.ok else "FAIL"


@dataclass
class Run:
    root: Path  # data/, params.yaml and the checkpoints (ck/) of this run
    device: torch.device  # cuda or cpu; every training below is placed there explicitly
    sizes: Sizes
    vocabs: dict[str, Vocab] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def vocab(self, level: str) -> Vocab:
        if level not in self.vocabs:
            self.vocabs[level] = Vocab.load(self.root / f"data/vocab/{level}.json")
        return self.vocabs[level]


def build_data(root: Path, sizes: Sizes) -> None:
    """The grammar corpus through corpus, tokenize, vocab and windows, both levels, in ``root``."""
    grammar = {"train_docs": sizes.docs, "valid_docs": max(60, sizes.docs // 10), "test_docs": 60}
    write_params(root / "params.yaml", merge(SMALL_CORPUS, {"corpus": {"grammar": grammar}}))
    run_data_stages(root)


def params(run: Run, level: str, **override: Any) -> TrainParams:
    """params.yaml's ``train.<level>`` (what users train), on this run's device, 2 short epochs."""
    base = getattr(read_params(run.root / "params.yaml").train, level)
    fields = {"epochs": 2, "epoch_size": run.sizes.steps, "checkpoint_every": None, "device": run.device.type}
    return TrainParams.model_validate({**base.model_dump(), **fields, **override})


def trainer(run: Run, level: str, p: TrainParams, name: str) -> Trainer:
    """A language-model Trainer on this run's data; checkpoints in ``ck/<name>``."""
    info = {"fingerprint": f"gpu-check-{name}", "tokenizer": None, "vocab_path": f"data/vocab/{level}.json"}
    return lm_trainer(p, run.root / "data/windows" / level, run.root / "ck" / name, run.vocab(level), info)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def fp32() -> Iterator[None]:
    """models/ without bf16 autocast, for the fp32 arm of the comparison.

    There is no params key for it (bf16 is always on under CUDA), and the Trainer and the
    scorer bind ``models.device.autocast`` by name, so the no-op is put in every models
    module that holds it, and in models.device itself for any call through the module.
    """
    original = device_module.autocast

    def off(_device: torch.device) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    bound = [
        m
        for name, m in list(sys.modules.items())
        if (name == "models" or name.startswith("models.")) and getattr(m, "autocast", None) is original
    ]
    for module in bound:
        module.autocast = off
    try:
        yield
    finally:
        for module in bound:
            module.autocast = original


@contextlib.contextmanager
def deterministic() -> Iterator[list[str]]:
    """Deterministic kernels for the exact comparisons; yields the warnings of ops that have none.

    CUBLAS_WORKSPACE_CONFIG (set in ``main`` before cuBLAS starts) makes cuBLAS and cuDNN's
    RNNs repeatable (torch's Reproducibility notes). warn_only: an op without a deterministic
    kernel warns instead of failing the check, and any difference it makes then shows.
    """
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    found: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
        found.extend(sorted({str(w.message).split(".")[0] for w in caught if "determinis" in str(w.message)}))
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


# --- 1. device: auto ----------------------------------------------------------------------------


def check_device(run: Run) -> Result:
    auto = resolve_device("auto")
    if not run.cuda:
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        return Result(
            "device: auto",
            auto.type == expected,
            f"auto -> {auto} (CUDA {'present' if expected == 'cuda' else 'absent'}); "
            "picking CUDA is checked without --cpu",
        )
    t = trainer(run, "word", params(run, "word", device="auto"), "auto")
    where = sorted({str(p.device) for p in t.model.parameters()})
    with torch.no_grad(), device_module.autocast(t.device):
        logits, _ = t.model(torch.zeros(3, 2, dtype=torch.long, device=t.device))  # (T, B, V)
    ok = auto.type == "cuda" and t.device.type == "cuda" and all(w.startswith("cuda") for w in where)
    ok = ok and logits.dtype == torch.bfloat16
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    return Result(
        "device: auto",
        ok,
        f"auto -> {auto} ({name}); weights on {', '.join(where)}; "
        f"logits {str(logits.dtype).removeprefix('torch.')} under autocast",
    )


# --- 2. bf16 against fp32 -------------------------------------------------------------------------


def train_arm(run: Run, level: str, name: str) -> dict[str, Any]:
    """Train params.yaml's ``level`` model; its first batch's loss, history and logits dtypes."""
    t = trainer(run, level, params(run, level), name)
    dtypes: set[str] = set()
    # The output layer's dtype, whatever its form (a Linear decoder, an adaptive softmax's head
    # and tails): every Linear in the model is one of its parts.
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: dtypes.add(str(out.dtype).removeprefix("torch.")))
        for m in t.model.modules()
        if isinstance(m, nn.Linear)
    ]
    t.model.train()
    value, count = t.backward()  # batch 0 from the initial weights, the same in both arms
    t.optimizer.zero_grad(set_to_none=True)  # (step 0 starts a pass: its carried state is reset)
    history = t.fit()
    for hook in hooks:
        hook.remove()
    return {"trainer": t, "first": value / count, "history": history, "dtypes": sorted(dtypes)}


def check_precision(run: Run, level: str) -> Result:
    with fp32():
        ref = train_arm(run, level, f"{level}-fp32")
    amp = train_arm(run, level, f"{level}-amp")
    model = ref["trainer"]
    with fp32():
        eval32 = model.task.validate()["loss"]
    eval16 = model.task.validate()["loss"]  # the same (fp32-trained) weights, under autocast
    pairs = [("batch 0", amp["first"], ref["first"], EVAL_TOL), ("eval, same weights", eval16, eval32, EVAL_TOL)]
    for a, b in zip(amp["history"], ref["history"]):
        pairs += [
            (f"epoch {b['epoch']} train", a["train_loss"], b["train_loss"], TRAIN_TOL),
            (f"epoch {b['epoch']} valid", a["valid_loss"], b["valid_loss"], TRAIN_TOL),
        ]
    want = (["bfloat16"], ["float32"]) if run.cuda else (["float32"], ["float32"])
    finite = all(math.isfinite(x) for _, a, b, _ in pairs for x in (a, b))
    ok = finite and all(rel(a, b) <= tol for _, a, b, tol in pairs) and (amp["dtypes"], ref["dtypes"]) == want
    fell = rel(ref["history"][0]["valid_loss"], ref["first"])
    details = [f"{what}: {a:.4f} vs {b:.4f} nats/token (rel {rel(a, b):.2e}, tol {tol:g})" for what, a, b, tol in pairs]
    details += [
        f"logits dtype: autocast arm {amp['dtypes']}, fp32 arm {ref['dtypes']} (want {list(want)})",
        f"the first epoch took {fell:.1%} off the fp32 loss (batch 0 to epoch 1 valid)",
    ]
    worst = max(rel(a, b) for _, a, b, _ in pairs)
    arms = "bf16 autocast vs fp32" if run.cuda else "autocast arm vs fp32 (both fp32: bf16 is CUDA-only)"
    return Result(
        f"bf16 vs fp32: {level}",
        ok,
        f"{arms}: max rel diff {worst:.2e} (tol {EVAL_TOL:g} eval, {TRAIN_TOL:g} train)",
        details,
        {"pairs": [p[:3] for p in pairs], "dtypes": [amp["dtypes"], ref["dtypes"]]},
    )


# --- 3. resume ------------------------------------------------------------------------------------


def restored_state_problems(t: Trainer, saved: dict[str, Any], device: torch.device) -> list[str]:
    """What a freshly resumed Trainer holds that is not the checkpoint's, or not on ``device``."""
    problems = []
    progress = saved["progress"]
    if (t.step, t.epoch) != (progress["step"], progress["epoch"]):
        problems.append(f"resumed at step {t.step}, epoch {t.epoch}; saved {progress['step']}, {progress['epoch']}")
    for k, v in t.model.state_dict().items():
        if v.device.type != device.type or not torch.equal(v.cpu(), saved["model"][k]):
            problems.append(f"weight {k} ({v.device}) is not the saved one")
    for i, state in t.optimizer.state_dict()["state"].items():
        for k, v in state.items():
            was = saved["optimizer"]["state"][i][k]
            if torch.is_tensor(v) and (
                not torch.equal(v.cpu(), was.cpu()) or (v.dim() and v.device.type != device.type)
            ):
                problems.append(f"optimizer state {i}.{k} ({v.device}) is not the saved one")
    if not torch.equal(torch.get_rng_state(), saved["rng"]["torch"].cpu()):
        problems.append("torch's CPU generator is not the saved one")
    if device.type == "cuda":
        now = torch.cuda.get_rng_state_all()
        if len(now) != len(saved["rng"]["cuda"]) or not all(
            torch.equal(a, b.cpu()) for a, b in zip(now, saved["rng"]["cuda"])
        ):
            problems.append("the CUDA generators are not the saved ones (dropout masks would differ)")
    carried = t.task.state
    parts = [] if carried is None else [carried] if torch.is_tensor(carried) else list(carried)
    want = saved["task_state"]["state"] or []
    if len(parts) != len(want) or not all(
        p.device.type == device.type and torch.equal(p.cpu(), w.cpu()) for p, w in zip(parts, want)
    ):
        problems.append("the carried TBPTT state is not the saved one, or not on the device")
    return problems


def check_resume(run: Run) -> Result:
    # One layer: nn.Dropout (embeddings, outputs) draws from torch's generators, which checkpoints
    # hold. Several layers would add nn.LSTM's inter-layer dropout, which on CUDA comes from a
    # cuDNN dropout state: seeded once from torch's generator (aten/src/ATen/native/cudnn/RNN.cpp,
    # get_dropout_state), then advanced inside cuDNN, where no checkpoint can save it.
    half = max(1, run.sizes.steps // 2)
    p = params(run, "word", dropout=0.2, layers=1, checkpoint_every=half)
    with deterministic() as nondeterministic:
        whole = trainer(run, "word", p, "resume-whole")
        whole.fit()
        part = trainer(run, "word", p, "resume-part")
        part.run_epoch()  # epoch 1, with a checkpoint mid-way and one at its end
        while part.step < run.sizes.steps + half:  # into epoch 2, then stopped
            part.train_step()
        part.save()
        stopped = part.step
        del part
        saved = ckpt.load(run.root / "ck/resume-part", map_location="cpu")
        again = trainer(run, "word", p, "resume-part")
        problems = restored_state_problems(again, saved, run.device)
        again.fit()
    pairs = [
        (f"epoch {b['epoch']} {k}", a[f"{k}_loss"], b[f"{k}_loss"])
        for a, b in zip(again.history, whole.history)
        for k in ("train", "valid")
    ]
    end = whole.model.state_dict()
    max_dw = max(float((v.double() - end[k].double()).abs().max()) for k, v in again.model.state_dict().items())
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in (again.history, whole.history)]
    exact = max_dw == 0.0 and timeless[0] == timeless[1]  # the wall-clock differs from run to run
    close = all(rel(a, b) <= RESUME_TOL for _, a, b in pairs) and len(pairs) == 2 * p.epochs
    ok = not problems and (exact if not run.cuda else close)  # the CPU promise is bit-exact
    details = [f"stopped at step {stopped} (epoch 2 of 2), restarted from {saved['progress']['step']}"]
    details += problems or [f"restored on {run.device.type}: weights, optimizer state, generators, carried state"]
    details += [f"{what}: resumed {a:.6f} vs uninterrupted {b:.6f} (rel {rel(a, b):.1e})" for what, a, b in pairs]
    details += [f"no deterministic kernel: {w}" for w in nondeterministic]
    summary = (
        f"state restored {'exactly' if not problems else 'WRONG'}; end {'bit-exact' if exact else 'not bit-exact'}"
        f" (max |dw| {max_dw:.1e}; tol {'0 on CPU' if not run.cuda else RESUME_TOL})"
    )
    return Result("resume", ok, summary, details, {"bit_exact": exact, "max_dw": max_dw, "problems": problems})


# --- 4. tokens/s against pytorch/examples ---------------------------------------------------------


def rate(step: Callable[[], int], steps: int, device: torch.device) -> float:
    """Tokens per second over ``steps`` calls of ``step`` (each returns the tokens it trained)."""
    sync(device)
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    sync(device)  # the last step's kernels are counted
    return tokens / (time.perf_counter() - start)


def check_throughput(run: Run, level: str) -> Result:
    # Imported here: only this check needs the reference model.
    from bench import train_throughput as tt

    ids = np.load(run.root / f"data/windows/{level}/train/stream.npy").astype(np.int64)
    torch.manual_seed(0)
    ref = tt.Reference(ids, len(run.vocab(level)))
    ref.model.to(run.device)  # the reference builds on the CPU: its model, data and state move over
    ref.data = ref.data.to(run.device)
    ref.hidden = tuple(h.to(run.device) for h in ref.hidden)
    p = tt.examples_params(device=run.device.type)
    ours = trainer(run, level, p, f"speed-{level}")
    ours.model.train()

    def ours_step() -> int:
        count = ours.count
        ours.train_step()
        return ours.count - count

    loops: dict[str, Callable[[], float]] = {
        "examples": lambda: rate(ref.step, run.sizes.timed_steps, run.device),
        "rnnlab": lambda: rate(ours_step, run.sizes.timed_steps, run.device),
    }
    if run.cuda:  # the same Trainer without autocast: loop overhead apart from precision

        def ours_fp32() -> float:
            with fp32():
                return rate(ours_step, run.sizes.timed_steps, run.device)

        loops["rnnlab fp32"] = ours_fp32
    for timed in loops.values():  # warm-up: allocator, cuDNN plans, first-call overheads
        timed()
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(run.sizes.rounds):  # alternating, so a load spike hits every loop
        for name, timed in loops.items():
            rates[name].append(timed())
    ratios = {
        k: statistics.median(o / r for o, r in zip(v, rates["examples"])) for k, v in rates.items() if k != "examples"
    }
    median = {k: statistics.median(v) for k, v in rates.items()}
    precision = "bf16 autocast" if run.cuda else "fp32"
    summary = (
        f"rnnlab ({precision}) {median['rnnlab']:,.0f} vs examples {median['examples']:,.0f} tokens/s: "
        f"{ratios['rnnlab']:.2f}x (floor {SPEED_FLOOR}, target 1.0)"
    )
    details = [f"{k}: {median[k]:,.0f} tokens/s (rounds {', '.join(f'{x:,.0f}' for x in v)})" for k, v in rates.items()]
    details += [f"{k} / examples: {r:.3f}x (median of {run.sizes.rounds} rounds)" for k, r in ratios.items()]
    details.append(
        f"model: examples' {tt.LAYERS}x{tt.HID} LSTM, emb {tt.EMB}, batch {tt.BATCH} x bptt {tt.BPTT}, "
        f"SGD {tt.LR:g}, clip {tt.CLIP}; {level} vocabulary {len(run.vocab(level))}"
    )
    return Result(
        f"tokens/s: {level}",
        ratios["rnnlab"] >= SPEED_FLOOR,
        summary,
        details,
        {"tokens_per_s": median, "ratios": ratios},
    )


# --- 5. DDP with nproc 1 --------------------------------------------------------------------------


def check_ddp(run: Run) -> Result:
    p = params(run, "word")
    spec = {
        "data": str(run.root),
        "train": p.model_dump(mode="json"),
        "out": str(run.root / "ddp.json"),
        "launcher": str(run.root / "ck/ddp-launcher"),
        "ddp": str(run.root / "ck/ddp-wrapped"),
    }
    (run.root / "ddp-spec.json").write_text(json.dumps(spec))
    argv = distributed.torchrun(1, "bench.gpu", ["--ddp-worker", str(run.root / "ddp-spec.json")])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RNNLAB_THREADS": "1"}
    proc = procs.start(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=DDP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        procs.stop(proc, grace=0)
        out, _ = proc.communicate()
        return Result(
            "DDP, nproc 1", False, f"torchrun did not finish within {DDP_DEADLINE_S} s; stopped", out.splitlines()[-15:]
        )
    if proc.returncode != 0 or not Path(spec["out"]).exists():
        return Result("DDP, nproc 1", False, f"torchrun exited {proc.returncode}", out.splitlines()[-15:])
    w = json.loads(Path(spec["out"]).read_text())
    launched = ckpt.load(spec["launcher"], map_location="cpu")
    a, b = launched["history"][-1]["valid_loss"], w["history"][-1]["valid_loss"]
    backend = "nccl" if run.cuda else "gloo"
    launcher_ok = w["launcher_rc"] == 0 and launched["world_size"] == 1 and len(launched["history"]) == p.epochs
    checks = [
        ("models.ddp_train exited 0 and wrote a 1-process checkpoint", launcher_ok),
        (
            f"process group: {w['backend']}, world {w['world']} (want {backend}, 1)",
            (w["backend"], w["world"]) == (backend, 1),
        ),
        (f"all_reduce on {w['device']}: 3.0 -> {w['probe']}", w["probe"] == 3.0),
        (
            f"DDP all-reduced {w['allreduces']} gradient buckets in {w['steps']} steps",
            w["allreduces"] >= w["steps"] > 0,
        ),
        (
            f"valid loss: DDP {b:.6f} vs models.ddp_train {a:.6f} (rel {rel(b, a):.1e}, tol {DDP_TOL:g})",
            math.isfinite(b) and rel(b, a) <= DDP_TOL,
        ),
    ]
    details = [f"{'ok  ' if good else 'FAIL'} {what}" for what, good in checks]
    details += [f"no deterministic kernel: {m}" for m in w["nondeterministic"]]
    same = "bit-exact" if a == b else f"rel {rel(b, a):.1e}"
    summary = f"torchrun, 1 process: models.ddp_train, then DDP over {w['backend']} ({w['steps']} steps; {same})"
    return Result(
        "DDP, nproc 1", all(good for _, good in checks), summary, details, {"launcher_valid": a, "ddp_valid": b, **w}
    )


def ddp_worker(spec_path: Path) -> int:
    """Run under torchrun with one process: models.ddp_train's main, then a DDP-wrapped Trainer.

    With one process models.distributed joins no process group (single-process code stays as it
    is), so part two joins one itself, over nccl on CUDA, and wraps the model in DDP exactly as
    ``distributed.wrap`` does for several: the path the flows take with nproc > 1 on many GPUs.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    spec = json.loads(spec_path.read_text())
    data, p = Path(spec["data"]), TrainParams.model_validate(spec["train"])
    cuda = p.device == "cuda"
    set_threads(1)
    out: dict[str, Any] = {}
    with deterministic() as nondeterministic:
        args = ddp_train.arguments(
            p,
            data / "data/windows/word",
            data / "data/vocab/word.json",
            Path(spec["launcher"]),
            "gpu-check-ddp",
            "train.word",
            None,
        )
        out["launcher_rc"] = ddp_train.main(args)

        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)  # nccl's collectives run on the current device
        dist.init_process_group("nccl" if cuda else "gloo")
        try:
            probe = torch.full((1,), 3.0, device=device)
            dist.all_reduce(probe)
            info = {"fingerprint": "gpu-check-ddp", "tokenizer": None, "vocab_path": "data/vocab/word.json"}
            t = lm_trainer(
                p,
                data / "data/windows/word",
                Path(spec["ddp"]),
                Vocab.load(data / "data/vocab/word.json"),
                info,
            )
            ddp = nn.parallel.DistributedDataParallel(t.model, device_ids=[local] if cuda else None)
            calls = [0]

            # DDP's own all-reduce hook, counted: gradients went through the group. DDP checks a
            # hook's annotations as objects, which this module's postponed ones are not: wraps
            # gives it allreduce_hook's signature.
            @functools.wraps(default_hooks.allreduce_hook)
            def counted(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
                calls[0] += 1
                return default_hooks.allreduce_hook(state, bucket)

            ddp.register_comm_hook(None, counted)
            t.train_model = ddp  # what Trainer.backward runs the batches through
            history = t.fit()
            dist.barrier()
            out.update(
                backend=dist.get_backend(),
                world=dist.get_world_size(),
                probe=probe.item(),
                device=str(device),
                allreduces=calls[0],
                steps=t.step,
                history=history,
            )
        finally:
            dist.destroy_process_group()
    out["nondeterministic"] = nondeterministic
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


# --- the run ------------------------------------------------------------------------------------


def report(results: list[Result], seconds: float) -> int:
    """Print the table; 0 when every check passed, else 1."""
    width = max(len(r.name) for r in results)
    print(f"\n{'check':<{width}}  result  time     summary")
    for r in results:
        print(f"{r.name:<{width}}  {r.status:<6}  {r.seconds:5.1f} s  {r.summary}")
        for line in r.details:
            print(f"{'':<{width}}    {line}")
    failed = [r.name for r in results if not r.ok]
    print(
        f"\n{len(results)} checks: {len(results) - len(failed)} PASS, {len(failed)} FAIL in {seconds:.0f} s"
        + (f" (failed: {', '.join(failed)})" if failed else "")
    )
    return 1 if failed else 0


def describe(device: torch.device) -> str:
    if device.type != "cuda":
        return f"cpu, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    return (
        f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the CPU checks only (fp32, gloo): no CUDA needed")
    ap.add_argument("--tiny", action="store_true", help="CI sizes: the code paths in seconds, not the figures")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--workdir", type=Path, help="data and checkpoints here (default: a temporary folder, removed)")
    ap.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)  # the torchrun side of check 5
    args = ap.parse_args(argv)
    # cuBLAS reads this when its handle is created: before any CUDA work (the deterministic checks).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.ddp_worker:
        return ddp_worker(args.ddp_worker)
    if not args.cpu and not torch.cuda.is_available():
        print(
            "error: torch sees no CUDA device; `python -m bench.gpu --cpu` runs the checks that need none",
            file=sys.stderr,
        )
        return 2
    set_threads()
    device = torch.device("cpu" if args.cpu else "cuda")
    sizes = SIZES["tiny" if args.tiny else device.type]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="rnnlab-gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        print(
            f"GPU check on {describe(device)}; grammar corpus, {sizes.docs:,} training documents; "
            f"{sizes.steps} steps x 2 epochs per training",
            flush=True,
        )
        shutil.rmtree(root / "ck", ignore_errors=True)  # a reused --workdir: no stale checkpoint resumes
        build_data(root, sizes)
        run = Run(root, device, sizes)
        checks: list[tuple[str, Callable[[], Result]]] = [
            ("device: auto", lambda: check_device(run)),
            ("bf16 vs fp32: word", lambda: check_precision(run, "word")),
            ("bf16 vs fp32: char", lambda: check_precision(run, "char")),
            ("resume", lambda: check_resume(run)),
            ("tokens/s: word", lambda: check_throughput(run, "word")),
            ("tokens/s: char", lambda: check_throughput(run, "char")),
            ("DDP, nproc 1", lambda: check_ddp(run)),
        ]
        results = []
        for name, check in checks:
            t0 = time.perf_counter()
            try:
                result = check()
            except Exception as e:
                traceback.print_exc()
                result = Result(name, False, f"raised {type(e).__name__}: {e}")
            result.seconds = time.perf_counter() - t0
            print(f"{result.status} {name} ({result.seconds:.1f} s)", flush=True)
            results.append(result)
        status = report(results, time.perf_counter() - started)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "device": describe(device),
                        "sizes": asdict(sizes),
                        "ok": status == 0,
                        "checks": [{**asdict(r), "status": r.status} for r in results],
                    },
                    indent=1,
                    default=str,
                )
            )
        return status
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
