"""Ids the system makes: wide enough that none collide where a collision would matter."""

from __future__ import annotations

import random
import re

from consumers.workflows.engine import turn_message_id
from service.commands import _command_key
from slipstream.events import new_event_id
from slipstream.identity import consumer_name
from slipstream.keys import derived_hex, new_id, new_run_id, new_thread_id, thread_of_run
from slipstream.threads import message_dedupe_key

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def test_workflow_turn_messages_of_100k_runs_in_one_thread_never_collide() -> None:
    # Every fire of a schedule runs in the schedule's one thread: 10,000 runs x 10 turns.
    thread_id = "tschedule"
    runs = [new_run_id(thread_id) for _ in range(10_000)]
    ids = [turn_message_id(run, op) for run in runs for op in range(10)]
    assert len(set(ids)) == len(ids) == 100_000
    assert all(i.startswith("m") and HEX16.match(i[1:]) for i in ids[:100])


def test_runs_alike_but_for_their_first_bytes_get_different_turn_messages() -> None:
    # The old derivation kept only the last 8 bytes of the JSON of [run id, op]: two
    # runs whose ids end alike wrote into one message.
    one, two = "tthread.aaaaaaaaaaaaffff", "tthread.bbbbbbbbbbbbffff"
    assert turn_message_id(one, 3) != turn_message_id(two, 3)
    assert turn_message_id(one, 3) == turn_message_id(one, 3)  # replay finds the same one


def test_derived_ids_depend_on_every_part() -> None:
    rng = random.Random(8)
    parts = [(f"t{rng.getrandbits(64):x}", f"c{n}") for n in range(100_000)]
    ids = {derived_hex("x", a, b) for a, b in parts}
    assert len(ids) == 100_000
    assert derived_hex("ab", "c") != derived_hex("a", "bc")


def test_random_ids_have_64_bits_or_more() -> None:
    runs = {new_run_id("tthread") for _ in range(100_000)}
    assert len(runs) == 100_000
    run = next(iter(runs))
    assert HEX16.match(run.split(".")[1]) and thread_of_run(run) == "tthread"
    assert HEX16.match(new_thread_id()[1:]) and HEX16.match(new_id("m")[1:])
    assert len(new_event_id()) == 32
    assert HEX16.match(consumer_name().rsplit(":", 1)[1])


def test_run_ids_made_before_still_parse() -> None:
    assert thread_of_run("t36d781450b2c9402.4dd5f504f314") == "t36d781450b2c9402"


def test_resend_keys_differ_per_client_id_run_and_command() -> None:
    keys = {message_dedupe_key("tthread", f"client-{n}") for n in range(50_000)}
    keys |= {
        _command_key(f"tthread.{n:016x}", command, "same-client") or ""
        for n in range(10_000)
        for command in ("cancel", "retry", "regenerate", "signal")
    }
    assert len(keys) == 90_000
    assert _command_key("tthread.abcdef", "cancel", None) is None
