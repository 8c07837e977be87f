"""The team's DVC remote from the command line: add one, push to it, pull from it (docs/teams.md).

    python -m ops.remote add-local /mnt/team/rnnlab-dvc   # make remote-local REMOTE=/mnt/team/rnnlab-dvc
    python -m ops.remote push                             # make push: what dvc.lock and registry.dvc name
    python -m ops.remote pull                             # make pull: instead of rebuilding it

The work is pipeline/dvc_remote.py's, which the retraining flow shares.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline import stage
from pipeline.dvc_remote import add_local, pull, push, resolve


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=".", help="repository root (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    a = sub.add_parser("add-local", help="make a local or shared folder the default remote")
    a.add_argument("path", help="the folder, e.g. /mnt/team/rnnlab-dvc (created on the first push)")
    a.add_argument("--name", default="team", help="remote name (default: %(default)s)")
    for verb in ("push", "pull"):
        v = sub.add_parser(verb, help=f"dvc {verb}, with a clear error when no remote is configured")
        v.add_argument("-r", "--remote", help="remote name (default: the default remote)")
    args = p.parse_args(argv)

    def body() -> None:
        if args.command == "add-local":
            print(add_local(args.repo, args.path, args.name))
            return
        remote = resolve(args.repo, args.remote, required=True)
        assert remote is not None
        (push if args.command == "push" else pull)(args.repo, remote)

    return stage.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
