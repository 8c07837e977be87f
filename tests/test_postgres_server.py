"""A team's Prefect server on PostgreSQL: a real cluster, a real ``prefect server start`` on it, real flows.

The cluster is made by the session's ``postgres_url`` fixture (initdb in a tmp folder, a free
port, password authentication; skipped with the install command when PostgreSQL's server
programs are missing). The server is the project's own (ops/server.py) with
``PREFECT_API_DATABASE_CONNECTION_URL`` pointing at it. The tests run the word model's stage
flow and a small load round of bench/server_load.py against it, read the runs back through the
API and from PostgreSQL itself, and check that nothing is lost and no process is left.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.harness import (
    NO_POSTGRES,
    PG_PASSWORD,
    PREFECT_HTTP,
    VENV_BIN,
    postgres_bin,
    postgres_cluster,
    prefect_server,
    processes_under,
    run,
    tool_env,
)

PY = str(VENV_BIN / "python")
STAGE_FLOWS = ("lm", "train", "ngram", "evaluate", "sample")  # flows/lm.py and its subflows


@dataclass(frozen=True)
class PgServer:
    api: str
    database_url: str
    folder: Path  # the server's log and Prefect home


@pytest.fixture(scope="module")
def pg_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    folder = tmp_path_factory.mktemp("prefect-on-postgres")
    with prefect_server(folder, database_url=postgres_url) as api:
        yield PgServer(api, postgres_url, folder)


def post(api: str, path: str, body: dict[str, Any]) -> Any:
    r = PREFECT_HTTP.post(f"{api}{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def sql(database_url: str, query: str) -> list[Any]:
    """Rows of ``query``, asked of PostgreSQL directly (asyncpg, which Prefect's server uses too)."""
    import asyncpg

    async def fetch() -> list[Any]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.mark.slow
def test_a_throwaway_cluster_takes_its_password_only_and_leaves_no_process(tmp_path: Path) -> None:
    import asyncpg

    if postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    with postgres_cluster(tmp_path / "pg") as url:
        assert [tuple(r) for r in sql(url, "SELECT current_user, current_database()")] == [("rnnlab", "prefect")]
        with pytest.raises(asyncpg.InvalidPasswordError):
            sql(url.replace(PG_PASSWORD, "wrong"), "SELECT 1")
        assert processes_under(tmp_path), "postgres is not running from the test's folder"
    assert not processes_under(tmp_path), "the cluster's processes outlived it"


@pytest.mark.slow
def test_a_stage_flow_records_to_the_server_on_postgresql(pg_server: PgServer, lm_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(lm_data, work)
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=pg_server.api)
    run(work, PY, "-m", "flows.lm", "--level", "word", env=env)
    assert (work / "artifacts/word/evaluation.json").is_file()

    # Through the API, as the UI reads them: the stage's flow and its four subflows, all completed.
    runs = post(pg_server.api, "/flow_runs/filter", {"flows": {"name": {"any_": list(STAGE_FLOWS)}}})
    flows = {f["id"]: f["name"] for f in post(pg_server.api, "/flows/filter", {})}
    by_flow = {flows[r["flow_id"]]: r for r in runs}
    assert sorted(by_flow) == sorted(STAGE_FLOWS), runs
    assert {name: r["state"]["type"] for name, r in by_flow.items()} == dict.fromkeys(STAGE_FLOWS, "COMPLETED")
    assert by_flow["lm"]["parent_task_run_id"] is None
    assert all(by_flow[name]["parent_task_run_id"] for name in STAGE_FLOWS[1:])  # subflows of lm
    tasks = post(pg_server.api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [by_flow["lm"]["id"]]}}})
    assert tasks and all(t["state"]["type"] == "COMPLETED" for t in tasks)

    # The rows are PostgreSQL's, not a SQLite file in the server's home.
    states = dict(sql(pg_server.database_url, "SELECT name, count(*) FROM flow_run GROUP BY name"))
    assert {r["name"] for r in runs} <= set(states), states
    assert not list((pg_server.folder / "home").glob("*.db")), "the server wrote a SQLite database"
    assert not processes_under(work), "a stage process outlived its run"


@pytest.mark.slow
def test_a_load_round_on_postgresql_loses_nothing_and_leaves_no_process(pg_server: PgServer, tmp_path: Path) -> None:
    """bench/server_load.py's round, small: a stage flow, a queued experiment and the served
    retraining at once, while the UI's API is polled. Every run completes, no answer is a 5xx."""
    from bench import server_load

    base = server_load.prepare_base(tmp_path, pg_server.api)
    folder = tmp_path / "postgresql"
    with server_load.backend(
        "postgresql", folder, base, api=pg_server.api, server_log=pg_server.folder / "server.log"
    ) as b:
        r = server_load.run_round(b, 3, 1000, folder / "round")
    assert (r.completed, r.failed, r.lost, r.stuck) == (3, 0, 0, 0), r.notes
    assert r.requests > 0 and r.http_5xx == 0 and r.request_errors == 0, r
    assert not r.left, r.left
    assert not processes_under(tmp_path), "the serving process, a queue worker or a stage outlived the round"
