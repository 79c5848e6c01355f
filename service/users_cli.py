"""`python -m service users ...`: the users and API tokens of SLIPSTREAM_AUTH=tokens.

    users add NAME      a new user; prints their first token, alone on the last line
    users token NAME    another token for NAME (the others keep working)
    users list          names, when they were made, how many tokens each has
    users revoke NAME   remove NAME, every token and every session of theirs

It talks to REDIS_URL, or with none to the embedded redis-server of the data dir:
the one a running Slipstream holds, else one it starts for the command and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from service.cli_redis import redis_url
from slipstream.backend import Backend
from slipstream.process import StartupError, settings_or_exit
from slipstream.users import UserError, Users


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("add", "add a user and print their first token"),
        ("token", "print another token for a user"),
        ("revoke", "remove a user with their tokens and sessions"),
    ):
        commands.add_parser(name, help=text).add_argument("name")
    commands.add_parser("list", help="list the users")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    try:
        with redis_url(settings) as url:
            return asyncio.run(_run(url, args.command, getattr(args, "name", "")))
    except StartupError as exc:
        print(f"users: {exc}", file=sys.stderr)
        return 1


async def _run(url: str, command: str, name: str) -> int:
    backend = Backend.connect(url)  # a cluster URL too: users live on one slot, `{auth}`
    users = Users(backend)
    try:
        if command == "add":
            token = await users.add(name)
            print(f"added user {name}; their token, shown this once (keep it secret):")
            print(token)
        elif command == "token":
            token = await users.token(name)
            print(f"a new token for {name}, shown this once (keep it secret):")
            print(token)
        elif command == "revoke":
            revoked = await users.revoke(name)
            print(f"revoked {name}: {revoked.tokens} tokens and {revoked.sessions} sessions ended")
        else:
            found = await users.list()
            if not found:
                print("no users yet: python -m service users add NAME")
            for user in found:
                made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(user.created_ms / 1000))
                print(f"{user.name}\tsince {made}\t{user.tokens} tokens")
        return 0
    except UserError as exc:
        print(f"users: {exc}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
