"""`python -m service inspect ...` and `python -m service replay THREAD`: Redis, read directly.

    inspect thread ID    the thread's history as a timeline: who, what, when, attempts,
                         tool calls, the final texts (deltas summarised)
    inspect run ID       the run's hash (lease, token, attempt), its work item and
                         XPENDING entry, timer, place in the thread's queue, attempts,
                         steps, tool calls and dead letters
    inspect dead         dead letters, newest first, with their reasons and each run's
                         status now
    inspect requeue RUN  put a dead (failed) run back to work, as the chat's Retry does
    inspect lag          per partition, the work and feed streams' consumer groups:
                         consumers, pending, lag, the oldest idle pending entry
    replay THREAD        rebuild the thread's views from its stream and compare them
                         with what is stored; exit status 1 when they differ

Each takes --json, for scripts. They talk to REDIS_URL, or with none to the embedded
redis-server of the data dir (as `python -m service users` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

from projections.replay import replay
from service import inspect_text, inspection
from service.cli_redis import redis_url, say_in_one_line
from slipstream import errors, partitions
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.process import StartupError, settings_or_exit
from slipstream.store import EventStore

DEAD_SHOWN = 50


def main(argv: list[str]) -> int:
    """`argv` starts with the command: inspect or replay."""
    args = _parser().parse_args(argv)
    settings = settings_or_exit()
    name = "replay" if args.command == "replay" else "inspect"
    try:
        with redis_url(settings, needed_for="read threads from") as url:
            return asyncio.run(_run(url, settings, args))
    except StartupError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="read threads, runs, dead letters and lag")
    what = inspect.add_subparsers(dest="what", required=True)
    for name, text, arg in (
        ("thread", "a thread's history as a timeline", "thread"),
        ("run", "a run's state, work item, timer, attempts and steps", "run"),
        ("dead", "dead letters with their reasons", None),
        ("requeue", "put a dead (failed) run back to work", "run"),
        ("lag", "consumer groups per partition: pending, lag, oldest idle", None),
    ):
        sub = what.add_parser(name, help=text)
        if arg is not None:
            sub.add_argument(arg)
        if name == "dead":
            sub.add_argument(
                "--limit", type=_positive, default=DEAD_SHOWN, help="show at most this many"
            )
        sub.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    again = commands.add_parser("replay", help="rebuild a thread's views and compare")
    again.add_argument("thread")
    again.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    return parser


def _positive(text: str) -> int:
    """A count of at least one: argparse refuses anything else, saying so (0 showed no
    dead letters, and a negative one a list cut short)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return number


async def _run(url: str, settings: Settings, args: argparse.Namespace) -> int:
    name = "replay" if args.command == "replay" else "inspect"
    backend = Backend.connect(url, timeout_s=settings.redis_timeout_ms / 1000)
    try:
        # A tool that only looks: it records nothing, but refuses another partition count.
        await partitions.check(backend.client, settings.partitions, record=False)
        store = EventStore.from_settings(backend, settings)
        return await _command(store, args)
    except errors.ThreadNotFound as exc:
        print(f"{name}: no thread {exc.thread_id!r} in this deployment", file=sys.stderr)
    except errors.RunNotFound as exc:
        print(
            f"{name}: no run {exc.run_id!r} (its hash expires SLIPSTREAM_RUN_RETENTION_S after "
            "it ended, and a thread's runs go with it)",
            file=sys.stderr,
        )
    except (errors.RunStatusChanged, errors.QueueFull) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
    except Exception as exc:
        say_in_one_line(name, url, exc)
    finally:
        await backend.close()
    return 1


async def _command(store: EventStore, args: argparse.Namespace) -> int:
    as_json: bool = args.json
    if args.command == "replay":
        result = await replay(store, args.thread)
        _show(as_json, asdict(result) | {"same": result.same}, inspect_text.replayed(result))
        return 0 if result.same else 1
    if args.what == "thread":
        thread = await inspection.thread_report(store, args.thread)
        _show(as_json, thread.as_json(), inspect_text.thread(thread))
    elif args.what == "run":
        run = await inspection.run_report(store, args.run)
        _show(as_json, run.as_json(), inspect_text.run(run))
    elif args.what == "dead":
        letters = await inspection.dead_letters(store, store.keys.all(), limit=args.limit)
        _show(as_json, letters, inspect_text.dead(letters))
    elif args.what == "requeue":
        done = await inspection.requeue(store, args.run)
        _show(as_json, asdict(done), inspect_text.requeued(done))
    else:
        groups = await inspection.lag(store)
        _show(as_json, [asdict(g) for g in groups], inspect_text.lag(groups))
    return 0


def _show(as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else inspect_text.printable(text))
