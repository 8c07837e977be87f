"""The char recipe against nanoGPT's CPU recipe: validation loss against wall time, on one text.

    .venv/bin/python -m bench.nanogpt_race --work /tmp/nanogpt-race            # ~2 x nanoGPT's time
    .venv/bin/python -m bench.nanogpt_race --work /tmp/r --max-iters 100       # a quick check

The text (default: WikiText-2 valid.txt, without its blank lines: rnnlab reads a blank line as no
document, so both models then predict the same characters, a line end being rnnlab's <eos>) is
split as nanoGPT's data/shakespeare_char/prepare.py splits its input.txt: the first 90% of the
characters train, the last 10% validate. nanoGPT gets the whole text as input.txt; rnnlab the
two parts, as ``rnnlab recipe char-text train.txt --valid valid.txt --test valid.txt`` in a fresh
copy of the repository.

Back to back, one thread each (OMP_NUM_THREADS=1; the lm stage pins one thread):

1. nanoGPT, run from a copy of ../shared/peers/nanogpt with the command its README there gives
   (a 4x128 GPT, block 64, batch 12, 2000 iterations, evaluated every 250 on 20 random batches).
   Its clock starts when its step-0 evaluation is printed (the model built, before its first
   step) and its time is when "step 2000" is printed. Afterwards its saved checkpoint is also
   scored on the whole held-out 10% (every 64-character block once, as its estimate samples them),
   by this bench, with nanoGPT's own model.py;
2. the recipe, given that time: ``-S train.char.epochs`` large, and SIGINT once its training (from
   the fit task's first line) has run as long. Its points are the validations it finished by
   then, each on the whole held-out 10% with the state carried through it.

Both losses are nats per character. Prints both curves, writes them to <work>/race.json and,
with ``--png``, a figure. A finished race in <work> is reported again without running (``--again`` reruns).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.own_text import DATA, SHARED, Proc, child_env, curve, read_json, run_recipe

NANOGPT = SHARED / "peers" / "nanogpt"
NANOGPT_ARGS = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=100",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]
_STEP = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
LN2 = math.log(2)

# nanoGPT's saved model on all of val.bin: every non-overlapping block of block_size characters,
# every position scored (its estimate_loss averages the same positions over random blocks).
SCORE = """
import json, pickle, sys, numpy as np, torch
from model import GPT, GPTConfig
torch.set_num_threads(1)
ck = torch.load("out-shakespeare-char/ckpt.pt", map_location="cpu", weights_only=False)
m = GPT(GPTConfig(**ck["model_args"]))
m.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()})
m.eval()
val = np.fromfile("data/shakespeare_char/val.bin", dtype=np.uint16).astype(np.int64)
B = ck["model_args"]["block_size"]
n = (len(val) - 1) // B
x = torch.from_numpy(val[: n * B]).view(n, B)
y = torch.from_numpy(val[1 : n * B + 1]).view(n, B)
total = 0.0
with torch.no_grad():
    for i in range(0, n, 256):
        logits, _ = m(x[i : i + 256], y[i : i + 256])
        total += torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), y[i : i + 256].reshape(-1), reduction="sum").item()
print(json.dumps({"iter": ck["iter_num"], "val_loss": total / (n * B), "targets": n * B}))
"""


def split_text(source: Path, work: Path) -> tuple[str, int]:
    """The text without blank lines, and where prepare.py cuts it (90% of its characters)."""
    lines = [line for line in source.read_text(encoding="utf-8").split("\n") if line.strip()]
    text = "\n".join(lines) + "\n"
    return text, int(len(text) * 0.9)


def run_nanogpt(text: str, work: Path, max_iters: int) -> dict[str, Any]:
    """nanoGPT's CPU recipe on ``text`` in a copy under ``work``: its eval points against seconds."""
    peer = work / "nanogpt"
    if peer.exists():
        shutil.rmtree(peer)
    shutil.copytree(NANOGPT, peer)
    (peer / "data" / "shakespeare_char" / "input.txt").write_text(text, encoding="utf-8")
    env = child_env(None, 1)
    subprocess.run(
        [sys.executable, "data/shakespeare_char/prepare.py"], cwd=peer, env=env, check=True, capture_output=True
    )
    args = [a for a in NANOGPT_ARGS if not a.startswith(("--max_iters", "--lr_decay_iters"))]
    args += [f"--max_iters={max_iters}", f"--lr_decay_iters={max_iters}"]
    p = Proc.start([sys.executable, "train.py", *args], peer, env, work / "nanogpt.log")
    t0: float | None = None
    points = []
    for arrival, line in p.events():
        if line is not None and (m := _STEP.match(line)):
            if t0 is None:
                t0 = arrival
            points.append({"seconds": arrival - t0, "step": int(m[1]), "val_loss": float(m[3])})
    rc = p.finish()
    if rc != 0 or not points:
        raise SystemExit(f"nanoGPT exited {rc}; see {work / 'nanogpt.log'}")
    scored = subprocess.run(
        [sys.executable, "-c", SCORE], cwd=peer, env=env, check=True, capture_output=True, text=True
    ).stdout
    return {"points": points, "seconds": points[-1]["seconds"], "full_val": json.loads(scored.splitlines()[-1])}


def run_rnnlab(train: Path, valid: Path, work: Path, budget: float) -> dict[str, Any]:
    """``rnnlab recipe char-text`` on the same split, stopped after ``budget`` s of training."""
    from bench.harness import copy_repo

    folder = work / "rnnlab"
    if folder.exists():
        shutil.rmtree(folder)
    repo = copy_repo(folder / "repo")
    # Epochs enough never to end before the budget: SIGINT ends the run (early stopping may first).
    run = run_recipe(
        repo,
        "char-text",
        train,
        valid=valid,
        test=valid,
        sets=["train.char.epochs=1000"],
        log_path=work / "rnnlab.log",
        stop_after=budget,
    )
    vocab = read_json(repo / "data" / "metrics" / "vocab-char.json")["splits"]["valid"]
    return {
        "rc": run.rc,
        "stopped_at": run.stopped_at,
        "early_stop": run.early_stop,
        "points": curve(run, repo, "char"),
        "valid_targets": vocab["tokens"] + vocab["docs"],
        "valid_oov_chars": vocab["oov_tokens"],
    }


def best_by(points: list[dict[str, Any]], key: str, seconds: float) -> dict[str, Any] | None:
    done = [p for p in points if p["seconds"] <= seconds]
    return min(done, key=lambda p: p[key]) if done else None


def figure(result: dict[str, Any], path: Path) -> None:
    """Both curves, nats per character against seconds, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ng, rn = result["nanogpt"], result["rnnlab"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    curves = [  # (run, its loss key, marker, label)
        (rn, "valid_loss", "o-", "rnnlab recipe char-text (LSTM 1x256)"),
        (ng, "val_loss", "s-", "nanoGPT CPU recipe (GPT 4x128)"),
    ]
    for run, key, marker, label in curves:
        ax.plot([p["seconds"] for p in run["points"]], [p[key] for p in run["points"]], marker, ms=3, label=label)
    ax.axvline(ng["seconds"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("training wall time, s (1 thread, shared 2-core machine)")
    ax.set_ylabel("validation loss, nats/char")
    lows = [p["valid_loss"] for p in rn["points"]] + [p["val_loss"] for p in ng["points"][1:]]
    ax.set_ylim(min(lows) - 0.1, max(lows[:2] + [2.6]) + 0.1)
    ax.set_title(f"{result['corpus']}: the same 90/10 character split", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(result: dict[str, Any]) -> str:
    ng, rn = result["nanogpt"], result["rnnlab"]
    lines = ["| seconds | nanoGPT val loss (step) | | seconds | rnnlab valid loss (epoch) |", "|---|---|---|---|---|"]
    for i in range(max(len(ng["points"]), len(rn["points"]))):
        a = ng["points"][i] if i < len(ng["points"]) else None
        b = rn["points"][i] if i < len(rn["points"]) else None
        left = f"{a['seconds']:.0f} | {a['val_loss']:.4f} ({a['step']})" if a else " | "
        right = f"{b['seconds']:.0f} | {b['valid_loss']:.4f} ({b['epoch']})" if b else " | "
        lines.append(f"| {left} | | {right} |")
    t = ng["seconds"]
    best = best_by(rn["points"], "valid_loss", t)
    final = ng["points"][-1]["val_loss"]
    lines.append("")
    lines.append(
        f"At nanoGPT's {t:.0f} s: nanoGPT val loss {final:.4f} (estimate, 20 batches; its saved model on all of "
        f"valid: {ng['full_val']['val_loss']:.4f} nats/char over {ng['full_val']['targets']:,} characters); "
        + (
            f"rnnlab's best by then {best['valid_loss']:.4f} (epoch {best['epoch']}, at {best['seconds']:.0f} s; "
            f"{rn['valid_targets']:,} targets, {rn['valid_oov_chars']} of them <unk>)."
            if best
            else "rnnlab had not validated yet."
        )
    )
    if best:
        target = min(final, ng["full_val"]["val_loss"])
        lines.append(f"Target (rnnlab lower at nanoGPT's time): {'MET' if best['valid_loss'] < target else 'MISSED'}")
    return "\n".join(lines)


def wait_for_other(pid_file: Path, deadline_s: float = 4 * 3600) -> None:
    """Wait while another race runs in the same work folder (its pid in ``pid_file``), up to a deadline."""
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text() or 0)
    end = time.monotonic() + deadline_s
    while pid and pid != os.getpid() and psutil.pid_exists(pid):
        if time.monotonic() > end:
            raise SystemExit(f"another race (pid {pid}) still runs in {pid_file.parent} after {deadline_s:.0f} s")
        time.sleep(10)  # polls the other race's process until it exits (deadline above)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rnnlab-nanogpt-race"), help="(default: %(default)s)")
    ap.add_argument(
        "--text",
        type=Path,
        default=DATA / "wikitext-2" / "valid.txt",
        help="a UTF-8 text (default: WikiText-2 valid.txt)",
    )
    ap.add_argument("--max-iters", type=int, default=2000, help="nanoGPT's iterations (default: %(default)s)")
    ap.add_argument("--png", type=Path, help="write the curves here as a PNG (needs matplotlib)")
    ap.add_argument("--again", action="store_true", help="race again even if <work>/race.json holds a result")
    args = ap.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    wait_for_other(work / "running.pid")
    if (work / "race.json").is_file() and not args.again:  # a finished race: report it, run nothing
        result = read_json(work / "race.json")
        print(report(result))
        if args.png:
            figure(result, args.png)
        return 0
    text, cut = split_text(args.text, work)
    (work / "train.txt").write_text(text[:cut], encoding="utf-8")
    (work / "valid.txt").write_text(text[cut:], encoding="utf-8")
    (work / "running.pid").write_text(str(os.getpid()))
    print(f"{args.text}: {len(text):,} characters; train {cut:,}, valid {len(text) - cut:,}", flush=True)
    t = time.strftime("%H:%M:%S")
    print(f"[{t}] nanoGPT: {' '.join(NANOGPT_ARGS)} (max_iters {args.max_iters})", flush=True)
    ng = run_nanogpt(text, work, args.max_iters)
    print(f"[{time.strftime('%H:%M:%S')}] nanoGPT: {ng['seconds']:.0f} s; the recipe gets the same", flush=True)
    rn = run_rnnlab(work / "train.txt", work / "valid.txt", work, ng["seconds"])
    result = {
        "corpus": args.text.name if args.text.parent.name != "wikitext-2" else "WikiText-2 valid.txt",
        "chars": len(text),
        "cut": cut,
        "nanogpt": ng,
        "rnnlab": rn,
    }
    (work / "race.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(report(result))
    if args.png:
        figure(result, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
