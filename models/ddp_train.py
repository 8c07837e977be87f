"""One torchrun process of a data-parallel language-model training (docs/scaling.md, "Distributed training").

flows/train.py runs this when ``train.<level>.distributed.nproc`` is above 1
(``models.distributed.torchrun(nproc, MODULE, arguments(...))``)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m models.ddp_train \\
        --data data/windows/word --vocab data/vocab/word.json --checkpoints artifacts/word/checkpoints \\
        --fingerprint <sha256> --key train.word --train '<train.word as JSON>' --tokenizer '<JSON>'

(the flow logs the exact command). Every process builds the same ``lm_trainer``; the
Trainer joins torchrun's process group, wraps the model in DDP, reads its block of each
global batch, and lets rank 0 alone write the checkpoint, log and report progress
(a line every RNNLAB_PROGRESS_SECONDS, which the flow reads).

Several machines: run the same command on every node with torchrun's rendezvous
instead of ``--standalone``, e.g. 2 nodes of 8 GPUs::

    python -m torch.distributed.run --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
        --rdzv-endpoint node0.example:29500 --rdzv-id word-lm -m models.ddp_train <same arguments>

The data, vocabulary and checkpoints paths must name the same files on every node (a
shared filesystem, or ``dvc pull`` on each for the data; the checkpoints folder must be
shared: every rank reads it on resume, and the Trainer fails if ranks see different ones).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models import distributed
from models.device import set_threads
from models.lm import lm_trainer
from pipeline import log
from pipeline.errors import RnnlabError, refuse
from pipeline.params import TrainParams
from pipeline.vocab import Vocab

MODULE = "models.ddp_train"
logger = logging.getLogger(f"rnnlab.{__name__}")


def arguments(
    params: TrainParams,
    data: Path,
    vocab: Path,
    checkpoints: Path,
    fingerprint: str,
    key: str,
    tokenizer: dict[str, Any] | None,
) -> list[str]:
    """This module's command-line arguments for one training (what the flow passes to every rank)."""
    return [
        "--data",
        str(data),
        "--vocab",
        str(vocab),
        "--checkpoints",
        str(checkpoints),
        "--fingerprint",
        fingerprint,
        "--key",
        key,
        "--train",
        params.model_dump_json(),
        "--tokenizer",
        json.dumps(tokenizer),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the level's windows folder (data/windows/<level>)")
    p.add_argument("--vocab", type=Path, required=True, help="its vocabulary (data/vocab/<level>.json)")
    p.add_argument("--checkpoints", type=Path, required=True, help="checkpoints folder (shared by every node)")
    p.add_argument("--fingerprint", required=True, help="the training cache key (flows.common.fingerprint)")
    p.add_argument("--key", default="train", help="params key, for messages (train.word)")
    p.add_argument("--train", required=True, help="train.<level> as JSON")
    p.add_argument("--tokenizer", default="null", help="tokenizer settings as JSON, stored in the checkpoint")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    set_threads()  # RNNLAB_THREADS, default 1 per process: results are bit-exact for a fixed count
    log.setup()
    rank = distributed.from_env().rank
    try:
        params = TrainParams.model_validate_json(args.train)
        provenance = {
            "fingerprint": args.fingerprint,
            "tokenizer": json.loads(args.tokenizer),
            "vocab_path": str(args.vocab),
        }
        trainer = lm_trainer(
            params,
            args.data,
            args.checkpoints,
            Vocab.load(args.vocab),
            provenance,
            key=args.key,
        )
        if trainer.dist.main:
            logger.info(
                f"{trainer.task.cfg} on {trainer.dist.world} processes ({trainer.device}): "
                f"{trainer.steps_per_epoch} steps per epoch, {params.epochs} epochs"
            )
        trainer.fit()
    except RnnlabError as e:
        return refuse(f"rank {rank}: {e}")
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
