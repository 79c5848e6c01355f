"""Property tests (hypothesis) of what reads untrusted text: the codec, the fold, the
cron parser and the id parsers. None may raise on any input; each keeps its promises."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.workflows.cron import CronError, next_fire, parse
from projections.thread_view import ThreadView, fold
from slipstream import codec
from slipstream import events as ev
from slipstream.codec import Unreadable
from slipstream.keys import is_stream_id, is_valid_id, stream_id_tuple, thread_of_run
from slipstream.store import Stored

BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STREAM = "ss:{p00}:thread:tprop"
ids = st.text("abcdef0123456789", min_size=1, max_size=8).map(lambda s: f"m{s}")
texts = st.text(max_size=200)  # any unicode: surrogates excepted, as JSON allows


@BOUNDED
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(["type", "v", "body", "run", "agent", "eid"]), st.text()),
        st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))),
    )
)
def test_any_stream_entry_decodes_to_an_event_or_unreadable(fields: dict[str, str]) -> None:
    decoded = codec.decode(STREAM, "1-0", fields)
    assert isinstance(decoded, Unreadable) or decoded.type == fields.get("type")
    codec.event_json(decoded)  # and it can always be served


events = st.one_of(
    st.builds(ev.ThreadCreated, title=texts, owner=st.text(max_size=64)),
    st.builds(ev.ThreadRenamed, title=texts),
    st.builds(ev.MessageSent, message_id=ids, content=texts, agent=st.none() | ids),
    st.builds(
        ev.MessageDelta,
        run_id=st.just("tprop.0123456789abcdef"),
        message_id=ids,
        seq=st.integers(0, 10**6),
        text=texts,
        attempt=st.integers(1, 9),
    ),
    st.builds(
        ev.MessageCompleted, run_id=st.just("tprop.0123456789abcdef"), message_id=ids, text=texts
    ),
    st.builds(ev.ThreadMemberAdded, user=st.text(max_size=64), by=st.text(max_size=64)),
)


@BOUNDED
@given(events)
def test_every_event_comes_back_from_its_entry_as_it_went_in(event: ev.Event) -> None:
    entry = codec.encode(event)
    assert all(isinstance(v, str) for v in entry.values())
    assert codec.decode(STREAM, "1-0", entry) == event


run_events = st.sampled_from(
    [
        ev.RunRequested(
            run_id="tprop.0123456789abcdef", message_id="m1", reply_id="m2", agent="assistant"
        ),
        ev.RunStarted(run_id="tprop.0123456789abcdef", attempt=1, worker="w", token=1),
        ev.RunCompleted(run_id="tprop.0123456789abcdef"),
        ev.RunCancelled(run_id="tprop.0123456789abcdef"),
        ev.RunFailed(run_id="tprop.0123456789abcdef", reason="x"),
    ]
)


def stored(sequence: list[ev.Event]) -> list[Stored]:
    return [Stored(f"{1000 + i}-0", event) for i, event in enumerate(sequence)]


@BOUNDED
@given(st.lists(st.one_of(events, run_events), max_size=40), st.integers(0, 40))
def test_the_fold_takes_any_order_and_folding_in_steps_is_folding_at_once(
    sequence: list[ev.Event], cut: int
) -> None:
    """Events in any order (a delta before its run, a completion twice, ...) never break
    the fold, and a view folded in two steps equals the view folded in one."""
    items = stored(sequence)
    empty = ThreadView.empty("tprop", STREAM)
    whole = fold(empty, items)
    stepwise = fold(fold(empty, items[:cut]), items[cut:])
    assert stepwise == whole
    assert fold(whole, items) == whole  # what it holds already is skipped


cron_fields = st.tuples(
    st.sampled_from(["*", "0", "*/5", "1-10/3", "15,45", "59"]),
    st.sampled_from(["*", "0", "*/6", "8-17", "23"]),
    st.sampled_from(["*", "1", "15", "L", "1-7", "31"]),
    st.sampled_from(["*", "1", "FEB", "*/3", "12"]),
    st.sampled_from(["*", "MON", "1-5", "0", "SUN,SAT"]),
).map(" ".join)


@BOUNDED
@given(st.text(max_size=40))
def test_any_text_parses_as_cron_or_says_why_not(text: str) -> None:
    try:
        parse(text)
    except CronError as exc:
        assert str(exc)


@BOUNDED
@given(cron_fields, st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)))
def test_a_cron_expression_fires_after_the_time_asked_about(
    expression: str, after: datetime
) -> None:
    after = after.replace(tzinfo=UTC)
    try:
        fire = next_fire(expression, after)
    except CronError:
        return  # an expression that never fires from then on (30 FEB) says so
    assert fire > after
    assert fire.second == 0 and fire.microsecond == 0
    assert next_fire(expression, fire - timedelta(seconds=1)) == fire  # the same fire again


@BOUNDED
@given(st.one_of(st.text(max_size=80), st.from_regex(r"\A[0-9]{1,21}-[0-9]{1,21}\Z")))
def test_the_id_parsers_take_any_text(text: str) -> None:
    if is_stream_id(text):
        ms, seq = text.split("-")
        assert stream_id_tuple(text) == (int(ms), int(seq))
        assert max(int(ms), int(seq)) < 2**64  # what Redis takes; schemathesis found 2**66
    if is_valid_id(text):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text)
    thread = thread_of_run(text)
    if thread is not None:
        assert is_valid_id(thread) and text.startswith(thread + ".")
