"""The inspector's reports as text for a person (service/inspection.py reads them)."""

from __future__ import annotations

import json
import textwrap
import time

from projections.replay import Difference, Replayed
from service.inspection import GroupLag, Requeued, RunReport, ThreadReport
from service.timeline import Item

INDENT = "               "  # under a timeline line's text: past its time column

# Terminal controls (C0 but newline and tab, DEL, C1, bidi overrides), shown escaped: the
# reports print what people, models and tools wrote, and an escape sequence in a message
# would otherwise retitle, clear or rewrite the operator's terminal, or hide a line.
_CONTROLS = {
    c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)
} | {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def printable(text: str) -> str:
    """`text` with its terminal controls escaped (as `\\x1b`), lines and tabs kept."""
    return text.translate(_CONTROLS)


def when(ms: int) -> str:
    """A stream time as UTC with milliseconds."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d} UTC"


def clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def span(ms: int | None) -> str:
    """A duration, short: 850 ms, 12.3 s, 4 min, 6 h, 3 d."""
    if ms is None:
        return "-"
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms // 60_000} min"
    if ms < 86_400_000:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / 86_400_000:.1f} d"


def table(rows: list[list[str]]) -> list[str]:
    """Rows in columns as wide as their widest cell, the first row the heading."""
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _items(items: list[Item]) -> list[str]:
    lines: list[str] = []
    width = max((len(item.who) for item in items), default=0)
    for item in items:
        lines.append(f"{clock(item.at_ms)}  {item.who.ljust(width)}  {item.what}")
        if item.text is not None:
            for paragraph in item.text.splitlines() or [""]:
                wrapped = textwrap.wrap(paragraph, 88) or [""]
                lines += [INDENT + "│ " + line for line in wrapped]
    return lines


def thread(report: ThreadReport) -> str:
    first = report.timeline[0].at_ms if report.timeline else 0
    members = ", ".join(report.members) or "none"
    view = (
        "no stored view"
        if report.view_last is None
        else "stored view at the stream's end"
        if report.view_last == report.last_event_id
        else f"stored view at {report.view_last} (behind the stream)"
    )
    lines = [
        f'thread {report.thread} "{report.title}"',
        f"  stream {report.stream_key} (partition {report.partition}): {report.events} events, "
        f"last {report.last_event_id}; {view}",
        f"  owner {report.owner or '-'}; members {members}; started {when(first)}",
    ]
    if report.runs:
        lines += ["", "runs:"]
        rows = [["run", "agent", "status", "attempts", "tool calls", "steps", "reason"]]
        rows += [
            [r.id, r.agent, r.status, str(r.attempts), str(r.tools), str(r.steps), r.reason or ""]
            for r in report.runs
        ]
        lines += ["  " + line for line in table(rows)]
    lines += ["", "timeline (UTC):"]
    lines += _items(report.timeline)
    return "\n".join(lines)


def run(report: RunReport) -> str:
    state = report.state
    view = report.view or {}
    status = state.get("status") or view.get("status") or "?"
    lines = [
        f"run {report.run} (thread {report.thread}, partition {report.partition})",
        f"  status {status}; agent {state.get('agent') or view.get('agent', '?')}; "
        f"attempt {state.get('attempt', view.get('attempt', 0))}",
        "",
        f"run hash {report.run_key}:",
    ]
    if state:
        now_ms = int(time.time() * 1000)
        shown = dict(sorted(state.items()))
        lease = int(shown.get("lease_until", "0") or 0)
        for name, value in shown.items():
            note = ""
            if name == "lease_until" and lease:
                left = lease - now_ms
                note = (
                    f"  (lapses in {span(left)})" if left > 0 else f"  (lapsed {span(-left)} ago)"
                )
            lines.append(f"  {name.ljust(12)} {value}{note}")
        expiry = (
            "none (kept while the run is live)"
            if report.state_ttl_ms is None
            else span(report.state_ttl_ms)
        )
        lines.append(f"  {'expires in'.ljust(12)} {expiry}")
    else:
        lines.append("  gone (it expires SLIPSTREAM_RUN_RETENTION_S after the run ended)")
    lines += ["", "work item (work stream, XPENDING of group workers):"]
    if not report.work:
        lines.append("  none: no entry of this run in the work stream")
    for item in report.work:
        if item.pending:
            lines.append(
                f"  {item.id}  pending on {item.consumer}, idle {span(item.idle_ms)}, "
                f"delivered {item.deliveries} time{'s' if item.deliveries != 1 else ''}"
            )
        else:
            lines.append(f"  {item.id}  waiting: not delivered to a worker yet")
    timer = "none" if report.timer_due_ms is None else when(report.timer_due_ms)
    queue = (
        "not queued" if report.queue_position is None else f"position {report.queue_position + 1}"
    )
    lane = f"holds lane {report.holds_lane}" if report.holds_lane else "holds no lane"
    lines += [
        "",
        f"timer: {timer}",
        f"thread queue: {queue}; {lane}",
        "",
        "attempts:",
    ]
    if not report.attempts:
        lines.append("  none started")
    for attempt in report.attempts:
        lines.append(
            f"  {attempt.attempt}  {attempt.started_id}  worker {attempt.worker}  "
            f"token {attempt.token}  -> {attempt.outcome or 'still going'}"
        )
    steps = view.get("steps") or []
    if steps:
        rows = [["op", "step", "kind", "status", "attempts", "took", "error"]]
        rows += [
            [
                f"#{s['op']}",
                str(s["name"]),
                str(s["kind"]),
                str(s["status"]),
                str(s.get("attempts", "")),
                span(s.get("duration_ms")),
                str(s.get("error") or ""),
            ]
            for s in steps
        ]
        lines += ["", "steps (workflow journal):"] + ["  " + line for line in table(rows)]
    tools = view.get("tools") or []
    if tools:
        lines += ["", "tool calls:"]
        for call in tools:
            args = json.dumps(call.get("args"), separators=(",", ":"))
            result = json.dumps(call.get("result"), separators=(",", ":"))
            lines.append(f"  {call['call_id']}  {call['tool']}({args}) {call['status']}: {result}")
    if report.dead_letters:
        lines += ["", "dead letters:"]
        lines += [f"  {d['id']}  {d['reason']}" for d in report.dead_letters]
    lines += ["", "events (UTC):", *_items(report.events)]
    return "\n".join(lines)


def dead(letters: list[dict[str, str]]) -> str:
    if not letters:
        return "no dead letters"
    rows = [["dead since (UTC)", "run", "status now", "reason"]]
    for letter in letters:
        ms = int(letter["id"].split("-")[0])
        rows.append([when(ms)[:-4], letter["run"], letter["status_now"], letter["reason"]])
    return "\n".join(
        [*table(rows), "", "requeue a failed one: python -m service inspect requeue <run>"]
    )


def requeued(done: Requeued) -> str:
    return (
        f"requeued run {done.run} (was {done.was}): it is {done.status}, and starts when its "
        f"agent's lane in thread {done.thread} is free.\n"
        f"follow it: python -m service inspect run {done.run}"
    )


def lag(groups: list[GroupLag]) -> str:
    if not groups:
        return "no consumer groups yet (no worker or projector has started)"
    rows = [
        ["partition", "stream", "length", "group", "consumers", "pending", "lag", "oldest idle"]
    ]
    for g in groups:
        idle = (
            "-"
            if g.oldest_idle_ms is None
            else f"{span(g.oldest_idle_ms)} ({g.oldest_idle_consumer})"
        )
        rows.append(
            [
                f"p{g.partition:02d}",
                g.stream,
                str(g.length),
                g.group,
                str(g.consumers),
                str(g.pending),
                "?" if g.lag is None else str(g.lag),
                idle,
            ]
        )
    return "\n".join(table(rows))


def replayed(result: Replayed) -> str:
    at = result.last or "-"
    if result.same:
        return (
            f"thread {result.thread_id}: the stored views equal a rebuild from its stream "
            f"({result.events} events, up to {at})"
        )
    lines = [
        f"thread {result.thread_id}: {len(result.differences)} "
        f"difference{'s' if len(result.differences) != 1 else ''} from a rebuild of "
        f"{result.events} events (up to {at})"
    ]
    for difference in result.differences:
        lines += _difference(difference)
    return "\n".join(lines)


def _difference(d: Difference) -> list[str]:
    where = {"view": "view field", "summary": "thread summary", "run": "run summary"}[d.where]
    lines = [f"  {where} {d.field}:"]
    if d.stored is None or d.rebuilt is None:
        lines.append("    stored:  (missing)" if d.stored is None else f"    stored:  {d.stored}")
        lines.append("    rebuilt: (missing)" if d.rebuilt is None else f"    rebuilt: {d.rebuilt}")
        return lines
    keys = _json_keys_differing(d.stored, d.rebuilt)
    if keys is None:
        return [*lines, f"    stored:  {d.stored}", f"    rebuilt: {d.rebuilt}"]
    for key, (have, want) in keys.items():
        lines.append(f"    {key}: stored {have}, rebuilt {want}")
    return lines


def _json_keys_differing(stored: str, rebuilt: str) -> dict[str, tuple[str, str]] | None:
    """The top-level keys whose values differ, when both are JSON objects."""
    try:
        have, want = json.loads(stored), json.loads(rebuilt)
    except ValueError:
        return None
    if not isinstance(have, dict) or not isinstance(want, dict):
        return None

    def shown(value: object) -> str:
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 120 else text[:120] + "…"

    return {
        key: (shown(have.get(key, "(missing)")), shown(want.get(key, "(missing)")))
        for key in sorted(set(have) | set(want))
        if have.get(key) != want.get(key)
    } or None
