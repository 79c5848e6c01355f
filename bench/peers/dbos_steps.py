"""DBOS as a peer of bench.versus: 4 no-op steps per workflow, journaled in PostgreSQL.

    python -m bench.peers.dbos_steps worker PG_URL            # runs the queue until stdin closes
    python -m bench.peers.dbos_steps run PG_URL WORKFLOWS     # enqueue, wait, print JSON

The same work as bench.noop_workflows' noop4 (four steps that do nothing), on
a DBOS queue with its default settings. Each worker process launches DBOS on
the system database PG_URL, registers the queue and prints "ready"; any number
of them dequeue from it (the queue lives in the database). `run` empties
DBOS's tables, enqueues WORKFLOWS workflows through DBOSClient, waits until all
have succeeded and prints {"seconds", "steps"}: the time from the first
enqueue to the last success, and the steps journaled.

Runs in the peers' venv (.venv/peers), never in Slipstream's.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions

QUEUE = "bench"
APP = "slipstream-bench"
# Pinned so that the client's enqueues match the workers' version (otherwise a
# hash of the workflow code, which a client cannot know).
VERSION = "bench"
POLL_S = 0.02  # how often `run` counts finished workflows


@DBOS.step()
def nothing() -> None:
    return None


@DBOS.workflow(name="noop4")
def noop4(message: str) -> int:
    for _ in range(4):
        nothing()
    return 4


def worker(url: str) -> None:
    config: DBOSConfig = {
        "name": APP,
        "system_database_url": url,
        "application_version": VERSION,
        # One per process, as DBOS asks of processes sharing a database (recovery
        # takes back only an executor's own workflows).
        "executor_id": f"bench-{os.getpid()}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE)
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    DBOS.destroy()


def clear(engine: sa.Engine) -> None:
    """Empty what earlier rounds left (the steps go with their workflows)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM dbos.operation_outputs"))
        conn.execute(sa.text("DELETE FROM dbos.workflow_status"))


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


async def run(url: str, workflows: int) -> None:
    engine = sa.create_engine(url.replace("postgres://", "postgresql+psycopg://", 1))
    client = DBOSClient(system_database_url=url, application_name=APP)
    try:
        clear(engine)
        options: EnqueueOptions = {
            "workflow_name": "noop4",
            "queue_name": QUEUE,
            "app_version": VERSION,
        }
        began = time.monotonic()
        for start in range(0, workflows, 100):
            await asyncio.gather(
                *(client.enqueue_async(options, "go") for _ in range(min(100, workflows - start)))
            )
        done_sql = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        # The workflows run in other processes: nothing here can be awaited but the database.
        while count(engine, done_sql) < workflows:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
        seconds = time.monotonic() - began
        steps = count(engine, "SELECT count(*) FROM dbos.operation_outputs")
        print(f'{{"seconds": {seconds}, "steps": {steps}}}', flush=True)
    finally:
        client.destroy()
        engine.dispose()


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    if command == "worker":
        worker(url)
    elif command == "run":
        asyncio.run(run(url, int(sys.argv[3])))
    else:
        raise SystemExit(f"unknown command {command!r}: worker or run")


if __name__ == "__main__":
    main()
