"""`python -m service export THREAD > file` and `python -m service import < file`.

    export THREAD   the thread's events (stream ids and fields), its access, index
                    entries and run hashes, as JSON lines on stdout
    import          read such lines on stdin and restore the thread here: same ids,
                    same views; refused if the thread exists here already

They talk to REDIS_URL, or with none to the embedded redis-server of the data dir
(as `python -m service users` does). service/transfer.py has the format.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from projections.views import ViewStore
from service.cli_redis import redis_url, say_in_one_line
from service.transfer import TransferError, export_thread, import_thread
from slipstream import errors, partitions
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.process import StartupError, settings_or_exit
from slipstream.store import EventStore


def main(argv: list[str]) -> int:
    """`argv` starts with the command: export or import."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("export", help="write a thread as JSON lines").add_argument("thread")
    commands.add_parser("import", help="restore a thread from JSON lines on stdin")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    records: list[Any] = []
    try:
        if args.command == "import":
            records = _records(sys.stdin)
        with redis_url(settings, needed_for="keep threads") as url:
            if args.command == "export":
                return asyncio.run(_export(url, settings, args.thread))
            return asyncio.run(_import(url, settings, records))
    except (StartupError, TransferError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1


def _records(lines: Any) -> list[Any]:
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise TransferError(f"line {number} is not JSON ({exc})") from None
    return records


async def _export(url: str, settings: Settings, thread_id: str) -> int:
    async def export(store: EventStore) -> int:
        try:
            records = await export_thread(store, thread_id)
        except errors.ThreadNotFound:
            print(f"export: no thread {thread_id!r} in this deployment", file=sys.stderr)
            return 1
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        return 0

    return await _with_store(url, settings, "export", export)


async def _import(url: str, settings: Settings, records: list[Any]) -> int:
    async def restore(store: EventStore) -> int:
        views = ViewStore(store, run_retention_s=settings.run_retention_s)
        try:
            done = await import_thread(store, views, records)
        except errors.ThreadExists as exc:
            print(
                f"import: thread {exc.thread_id} exists in this deployment already; nothing "
                "was written (delete it there first to replace it)",
                file=sys.stderr,
            )
            return 1
        print(
            f"imported thread {done.thread}: {done.events} events up to {done.last}, "
            f"{done.runs} run hashes; views "
            + ("folded" if done.view_saved else "left to the projector (they kept moving)")
        )
        return 0

    return await _with_store(url, settings, "import", restore)


async def _with_store(
    url: str, settings: Settings, name: str, action: Callable[[EventStore], Awaitable[int]]
) -> int:
    """`action` on the deployment's store; a Redis fault, or another partition count
    than the deployment's, said in one line (exit status 1)."""
    backend = Backend.connect(url, timeout_s=settings.redis_timeout_ms / 1000)
    try:
        # An import writes a thread as any process does: it records the count if none is.
        await partitions.check(backend.client, settings.partitions, record=name == "import")
        return await action(EventStore.from_settings(backend, settings))
    except Exception as exc:
        say_in_one_line(name, url, exc)
    finally:
        await backend.close()
    return 1
