/**
 * The thread-view fold: a mirror of projections/thread_view.py, so that a
 * snapshot plus the events after it give the same view the server would.
 *
 * Pure: no DOM, no network. It can be imported and tested under Node.
 */

const TITLE_CHARS = 80;
const PROBLEMS_KEPT = 20;
const TOOL_TEXT_CHARS = 2000; // a tool's arguments and result are for showing: long texts are cut

/** Split a stream id "ms-seq" into two numbers: ids must compare numerically, not as text. */
export function parseEventId(id) {
  const [ms, seq = "0"] = String(id).split("-");
  return [Number(ms), Number(seq)];
}

export function compareEventIds(a, b) {
  const [aMs, aSeq] = parseEventId(a);
  const [bMs, bSeq] = parseEventId(b);
  return aMs - bMs || aSeq - bSeq;
}

export function laterEventId(a, b) {
  if (a == null) return b ?? null;
  if (b == null) return a;
  return compareEventIds(a, b) >= 0 ? a : b;
}

function streamMs(id) {
  return parseEventId(id)[0];
}

export function emptyUsageTotals() {
  return {
    input_tokens: 0, output_tokens: 0, cache_read_tokens: 0, cache_write_tokens: 0, calls: 0,
  };
}

export function emptyUsage() {
  return { total: emptyUsageTotals(), by_agent: {}, by_model: {} };
}

/** Fill in what a view may leave out, so the fold never has to guard against it. */
export function normaliseView(view) {
  return {
    title: "",
    archived: false,
    created_at: 0,
    updated_at: 0,
    last_event_id: null,
    version: 0,
    ...view,
    messages: view.messages ?? [],
    runs: Object.fromEntries(Object.entries(view.runs ?? {}).map(([id, run]) => [id, {
      waiting_for: null, until_ms: null, approval: null, result: null,
      started_at: null, first_token_at: null, model: null, ...run,
      steps: run.steps ?? [],
      usage: run.usage ?? emptyUsageTotals(), tools: (run.tools ?? []).map((call) => ({ denied: false, decided_at: null, ...call })),
      handoffs: run.handoffs ?? [],
    }])),
    problems: view.problems ?? [],
    usage: view.usage ?? emptyUsage(),
  };
}

/**
 * Apply one stored event to `view` in place. Returns false when the event is
 * already folded in (its id is not after the view's last one), so replays after
 * a reconnect change nothing.
 */
export function applyEvent(view, id, event) {
  if (view.last_event_id != null && compareEventIds(id, view.last_event_id) <= 0) {
    return false;
  }
  view.last_event_id = id;
  view.version += 1;
  view.updated_at = streamMs(id);
  if (event.type === "unreadable") {
    view.problems = [...view.problems, { id, reason: event.reason ?? "" }].slice(-PROBLEMS_KEPT);
    return true;
  }
  // Timers and cancel requests don't change this view.
  HANDLERS.get(event.type)?.(view, event, id);
  return true;
}

/** The run the thread is busy with: running ones before queued ones, as the server picks. */
export function activeRunId(view) {
  const runs = Object.values(view?.runs ?? {});
  const busy = runs.find((run) => ["running", "retrying", "waiting"].includes(run.status));
  return (busy ?? runs.find((run) => run.status === "queued"))?.id ?? null;
}

export function findMessage(view, messageId) {
  for (let i = view.messages.length - 1; i >= 0; i -= 1) {
    if (view.messages[i].id === messageId) return view.messages[i];
  }
  return null;
}

export function findRun(view, runId) {
  return runId != null && Object.hasOwn(view.runs, runId) ? view.runs[runId] : null;
}

export function replyOf(view, runId) {
  const run = findRun(view, runId);
  return run ? findMessage(view, run.reply_id) : null;
}

/**
 * Where the run's answers are: its reply and the messages it opened after it
 * (an agent handed to, a workflow's later turns), newest first. They all come
 * after the reply, so the search stops there.
 */
export function runMessages(view, run) {
  const found = [];
  for (let i = view.messages.length - 1; i >= 0; i -= 1) {
    const message = view.messages[i];
    if (message.run_id === run.id && message.role === "assistant") found.push(message);
    if (message.id === run.reply_id) break;
  }
  return found;
}

/** Python's `" ".join(text.split())[:80]`, counting code points as Python does. */
function titleFrom(content) {
  const words = content.split(/\s+/).filter(Boolean).join(" ");
  return Array.from(words).slice(0, TITLE_CHARS).join("");
}

export function newMessage(fields) {
  return {
    agent: null, content: "", run_id: null, client_id: null, attempt: 0, seq: 0, routed: null,
    parent_id: null, edit_of: null,
    ...fields,
  };
}

function threadCreated(view, event, id) {
  view.title = event.title ?? "";
  view.created_at = streamMs(id);
}

function threadRenamed(view, event) {
  view.title = event.title ?? "";
}

function threadArchived(view, event) {
  view.archived = event.archived ?? true;
}

/**
 * The user message a sent one follows: the revised one's parent for an edit, the one
 * named, else the newest user message (a thread without edits is one line).
 */
function parentOf(view, event) {
  // Only a user message already folded counts; any other id is taken as none.
  const named = findMessage(view, event.edit_of || event.parent_id || "");
  if (named?.role === "user") return event.edit_of ? named.parent_id ?? null : named.id;
  for (let i = view.messages.length - 1; i >= 0; i -= 1) {
    if (view.messages[i].role === "user") return view.messages[i].id;
  }
  return null;
}

function messageSent(view, event, id) {
  const parent = parentOf(view, event);
  view.messages.push(newMessage({
    id: event.message_id,
    role: "user",
    agent: event.agent ?? null,
    content: event.content,
    status: "completed",
    run_id: event.run_id ?? null,
    client_id: event.client_id ?? null,
    created_at: streamMs(id),
    parent_id: parent,
    edit_of: event.edit_of ?? null,
  }));
  if (!view.title) view.title = titleFrom(event.content);
}

function runRequested(view, event, id) {
  view.runs[event.run_id] = {
    id: event.run_id,
    status: "queued",
    agent: event.agent,
    message_id: event.message_id,
    reply_id: event.reply_id,
    attempt: 0,
    worker: null,
    reason: null,
    waiting_for: null,
    requested_at: streamMs(id),
    started_at: null,
    first_token_at: null,
    ended_at: null,
    model: null,
    until_ms: null,
    approval: null,
    steps: [],
    result: null,
    usage: emptyUsageTotals(),
    tools: [],
    handoffs: [],
  };
  view.messages.push(newMessage({
    id: event.reply_id,
    role: "assistant",
    agent: event.agent,
    status: "pending",
    run_id: event.run_id,
    created_at: streamMs(id),
  }));
}

function restartReply(reply, attempt) {
  reply.content = "";
  reply.seq = 0;
  reply.attempt = attempt;
}

function runStarted(view, event, id) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  if (event.attempt !== run.attempt) {
    run.started_at = streamMs(id);
    run.first_token_at = null;
  }
  Object.assign(run, {
    status: "running", attempt: event.attempt, worker: event.worker, approval: null,
  });
  const reply = findMessage(view, run.reply_id);
  if (reply && reply.status !== "completed" && event.attempt !== reply.attempt) {
    // A new attempt writes the answer again: show only the current attempt's text.
    restartReply(reply, event.attempt);
    reply.status = "streaming";
  }
}

/** The message, or a new one when a workflow's later agent turn opens it. */
function messageOf(view, runId, messageId, agent, id) {
  let message = findMessage(view, messageId);
  const run = findRun(view, runId);
  if (!message && run) {
    message = newMessage({
      id: messageId,
      role: "assistant",
      agent: agent || run.agent,
      status: "streaming",
      run_id: runId,
      created_at: streamMs(id),
    });
    view.messages.push(message);
  }
  return message;
}

function messageDelta(view, event, id) {
  const reply = messageOf(view, event.run_id, event.message_id, event.agent, id);
  const attempt = event.attempt ?? 1;
  if (!reply || attempt < reply.attempt) return;
  if (attempt > reply.attempt) restartReply(reply, attempt);
  if (event.seq !== reply.seq + 1) return; // a duplicate, or a gap the writer never leaves
  reply.content += event.text;
  reply.seq = event.seq;
  reply.status = "streaming";
  if (event.agent) reply.agent = event.agent; // who writes it: a workflow's turn may be an agent's
  const run = findRun(view, event.run_id);
  if (run && run.first_token_at == null && attempt === run.attempt) run.first_token_at = streamMs(id);
}

function messageCompleted(view, event, id) {
  const reply = messageOf(view, event.run_id, event.message_id, event.agent, id);
  if (!reply) return;
  reply.content = event.text;
  reply.status = "completed";
  if (event.agent) reply.agent = event.agent;
  if (event.seq != null) {
    // Deltas not folded (compacted away on the server) count as folded, as there.
    view.version += Math.max(0, event.seq - reply.seq);
    reply.seq = event.seq;
  }
}

/** run.completed / run.cancelled / run.failed: end the run; a finished answer stays finished. */
function runEnded(runStatus, messageStatus) {
  return (view, event, id) => {
    const run = findRun(view, event.run_id);
    if (!run) return;
    run.status = runStatus;
    run.ended_at = streamMs(id);
    run.waiting_for = null;
    if (event.type !== "run.completed") run.reason = event.reason || null;
    else run.result = event.result ?? null;
    run.until_ms = null;
    run.approval = null;
    // The reply and any message an agent handed to or a later turn opened: what
    // was not completed ends with the run.
    for (const message of runMessages(view, run)) {
      if (message.status !== "completed") message.status = messageStatus;
    }
  };
}

/**
 * run.retrying, run.restarted, run.waiting and run.resumed: move the run to
 * `runStatus` and its open messages to `replyStatus` (only from `replyFrom`, if given).
 *
 * run.retrying: the attempt failed and another follows; the answer is due again,
 * its old text stays until then. run.restarted: a failed or cancelled run asked
 * to run again; its text stays until run.started brings a new attempt number.
 * run.waiting: a workflow parked on a signal or a timer, which is also a step;
 * or a chat run parked for a person's yes to a tool call (`approval`).
 */
function runStatusChange(runStatus, replyStatus, replyFrom = []) {
  return (view, event, id) => {
    const run = findRun(view, event.run_id);
    if (!run) return;
    run.status = runStatus;
    if (event.type === "run.retrying") {
      run.reason = event.reason;
    } else if (event.type === "run.restarted") {
      run.reason = null;
      run.ended_at = null;
    }
    const waiting = event.type === "run.waiting";
    run.waiting_for = waiting ? event.waiting_for : null;
    run.until_ms = waiting ? event.until_ms ?? null : null;
    run.approval = approvalOf(event, run);
    if (event.type === "run.restarted") {
      run.tools = []; // a run from scratch journals its calls again
      run.handoffs = [];
    }
    if (waiting && event.op != null) {
      const sleeping = event.waiting_for === "timer";
      const step = stepOf(
        run,
        event.op,
        sleeping ? "sleep" : `wait:${event.waiting_for}`,
        sleeping ? "sleep" : "wait",
        id,
      );
      step.status = "waiting";
      step.until_ms = event.until_ms ?? null;
    }
    if (!replyStatus) return;
    // A finished message keeps its status: a workflow may go on after its first
    // answer, a run after a hand-off. The open one may be the agent's handed to.
    for (const message of runMessages(view, run)) {
      if (message.status !== "completed"
          && (!replyFrom.length || replyFrom.includes(message.status))) {
        message.status = replyStatus;
      }
    }
  };
}

/** run.waiting for a person's yes to a tool call: the call, else null. */
function approvalOf(event, run) {
  if (event.type !== "run.waiting" || event.waiting_for !== "approval") return null;
  if (event.call_id == null || event.tool == null) return null;
  return {
    call_id: event.call_id,
    tool: event.tool,
    args: bounded(event.args ?? null),
    message_id: event.message_id || run.reply_id,
  };
}

/** The run's step at position `op`, created (running) when it is new. */
function stepOf(run, op, name, kind, id) {
  run.steps ??= [];
  const found = run.steps.find((step) => step.op === op);
  if (found) return found;
  const step = {
    op,
    name,
    kind,
    status: "running",
    attempts: 0,
    started_at: streamMs(id),
    ended_at: null,
    duration_ms: null,
    error: null,
    result: null,
    until_ms: null,
  };
  run.steps.push(step);
  return step;
}

function stepStarted(view, event, id) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  const step = stepOf(run, event.op ?? 0, event.step, event.kind ?? "step", id);
  step.status = "running";
  step.attempts = event.attempt ?? 1;
  step.error = null;
  step.started_at = streamMs(id);
}

function stepCompleted(view, event, id) {
  const run = findRun(view, event.run_id);
  if (!run || event.step.startsWith("@")) return; // version and patch markers are bookkeeping
  const step = stepOf(run, event.op ?? 0, event.step, event.kind ?? "step", id);
  step.status = "completed";
  step.result = event.result ?? null;
  step.ended_at = streamMs(id);
  step.duration_ms = step.started_at ? step.ended_at - step.started_at : 0;
  step.until_ms = null;
}

function stepFailed(view, event, id) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  const step = stepOf(run, event.op ?? 0, event.step, "step", id);
  step.status = event.final ? "failed" : "retrying";
  step.attempts = event.attempt ?? 1;
  step.error = event.error;
  step.ended_at = streamMs(id);
  step.duration_ms = step.started_at ? step.ended_at - step.started_at : 0;
}

function addUsage(totals, event) {
  totals.input_tokens += event.input_tokens ?? 0;
  totals.output_tokens += event.output_tokens ?? 0;
  totals.cache_read_tokens += event.cache_read_tokens ?? 0;
  totals.cache_write_tokens += event.cache_write_tokens ?? 0;
  totals.calls += 1;
}

/** The totals under `name`: Object.hasOwn, as an agent may be called "constructor". */
function totalsOf(map, name) {
  if (!Object.hasOwn(map, name)) map[name] = emptyUsageTotals();
  return map[name];
}

/** model.usage: every call counts once, a failed attempt's and a hand-off's too. */
function modelUsage(view, event) {
  const usage = view.usage;
  addUsage(usage.total, event);
  addUsage(totalsOf(usage.by_agent, event.agent), event);
  addUsage(totalsOf(usage.by_model, event.model), event);
  const run = findRun(view, event.run_id);
  if (run) {
    run.usage ??= emptyUsageTotals();
    addUsage(run.usage, event);
    run.model = event.model;
  }
}

/** `value` with every text in it cut to TOOL_TEXT_CHARS code points, as the server cuts it. */
function bounded(value) {
  if (typeof value === "string") {
    if (value.length <= TOOL_TEXT_CHARS) return value; // UTF-16 units: never fewer than code points
    const points = Array.from(value);
    return points.length <= TOOL_TEXT_CHARS
      ? value : `${points.slice(0, TOOL_TEXT_CHARS).join("")}…`;
  }
  if (Array.isArray(value)) return value.map(bounded);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, bounded(item)]));
  }
  return value;
}

/** The run's call `callId`, added (running, in the current turn) when it is new. */
function toolCallOf(run, callId, tool, id) {
  run.tools ??= [];
  const found = run.tools.find((call) => call.call_id === callId);
  if (found) return found;
  const call = {
    call_id: callId,
    tool,
    args: null,
    status: "running",
    result: null,
    turn: (run.handoffs ?? []).length,
    started_at: streamMs(id),
    ended_at: null,
    denied: false,
    decided_at: null,
  };
  run.tools.push(call);
  return call;
}

function toolCalled(view, event, id) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  const call = toolCallOf(run, event.call_id, event.tool, id);
  call.tool = event.tool;
  call.args = bounded(event.args ?? null);
}

function toolResult(view, event, id) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  const call = toolCallOf(run, event.call_id, "", id);
  call.status = event.is_error ? "failed" : "completed";
  call.result = bounded(event.result ?? null);
  call.ended_at = streamMs(id);
}

/**
 * A person's yes or no to one of a chat run's tool calls (the `approval` signal).
 * A workflow's own signal may be called `approval` too: only a payload naming a
 * call of the run, with a yes or no, is a decision on it.
 */
function signalReceived(view, event, id) {
  const run = findRun(view, event.run_id);
  const payload = event.payload;
  if (!run || event.name !== "approval" || !payload || typeof payload !== "object"
      || Array.isArray(payload) || typeof payload.approved !== "boolean") return;
  for (const call of run.tools ?? []) {
    if (call.call_id === payload.call_id) {
      call.denied = !payload.approved;
      call.decided_at = streamMs(id);
    }
  }
}

function agentHandoff(view, event) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  run.handoffs ??= [];
  run.handoffs.push({
    from_agent: event.from_agent, to_agent: event.to_agent, reason: event.reason ?? "",
  });
}

function agentRouted(view, event) {
  const message = findMessage(view, event.message_id);
  if (message) {
    message.routed = { agents: [...event.agents], by: event.by, reason: event.reason ?? "" };
  }
}

const HANDLERS = new Map([
  ["thread.created", threadCreated],
  ["thread.renamed", threadRenamed],
  ["thread.archived", threadArchived],
  ["message.sent", messageSent],
  ["run.requested", runRequested],
  ["run.started", runStarted],
  ["message.delta", messageDelta],
  ["message.completed", messageCompleted],
  ["run.completed", runEnded("completed", "completed")],
  ["run.cancelled", runEnded("cancelled", "cancelled")],
  ["run.failed", runEnded("failed", "failed")],
  ["run.retrying", runStatusChange("retrying", "pending")],
  ["run.restarted", runStatusChange("queued", "pending")],
  ["step.started", stepStarted],
  ["step.completed", stepCompleted],
  ["step.failed", stepFailed],
  ["run.waiting", runStatusChange("waiting", "waiting")],
  ["run.resumed", runStatusChange("running", "streaming", ["waiting"])],
  ["model.usage", modelUsage],
  ["tool.called", toolCalled],
  ["tool.result", toolResult],
  ["signal.received", signalReceived],
  ["agent.handoff", agentHandoff],
  ["agent.routed", agentRouted],
]);
