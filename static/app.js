/**
 * Slipstream web chat: one ES module, no build step, no dependencies.
 *
 * Sections, top to bottom:
 *   1. The thread-view fold, a mirror of projections/thread_view.py, so that a
 *      snapshot plus the events after it give the same view the server would.
 *   2. Small helpers: event ids, client ids, HTTP, formatting.
 *   3. The live connection: a websocket that resumes after drops with no gap.
 *   4. App state and actions: open, create, send, stop.
 *   5. Rendering. User and model text only ever goes through textContent or
 *      text nodes, never innerHTML.
 *   6. Wiring.
 */

// ---------------------------------------------------------------------------
// 1. The thread-view fold
// ---------------------------------------------------------------------------

const TITLE_CHARS = 80;
const PROBLEMS_KEPT = 20;

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

function laterEventId(a, b) {
  if (a == null) return b ?? null;
  if (b == null) return a;
  return compareEventIds(a, b) >= 0 ? a : b;
}

function streamMs(id) {
  return parseEventId(id)[0];
}

/** Fill in what a view may leave out, so the fold never has to guard against it. */
export function normaliseView(view) {
  return {
    title: "",
    created_at: 0,
    updated_at: 0,
    last_event_id: null,
    version: 0,
    ...view,
    messages: view.messages ?? [],
    runs: Object.fromEntries(Object.entries(view.runs ?? {}).map(([id, run]) => [id, {
      waiting_for: null, until_ms: null, result: null, ...run, steps: run.steps ?? [],
    }])),
    problems: view.problems ?? [],
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
  // Timers, tools and signals (signal.received) don't change this view.
  HANDLERS.get(event.type)?.(view, event, id);
  return true;
}

/** The run the thread is busy with: running ones before queued ones, as the server picks. */
export function activeRunId(view) {
  const runs = Object.values(view?.runs ?? {});
  const busy = runs.find((run) => ["running", "retrying", "waiting"].includes(run.status));
  return (busy ?? runs.find((run) => run.status === "queued"))?.id ?? null;
}

function findMessage(view, messageId) {
  for (let i = view.messages.length - 1; i >= 0; i -= 1) {
    if (view.messages[i].id === messageId) return view.messages[i];
  }
  return null;
}

function findRun(view, runId) {
  return runId != null && Object.hasOwn(view.runs, runId) ? view.runs[runId] : null;
}

function replyOf(view, runId) {
  const run = findRun(view, runId);
  return run ? findMessage(view, run.reply_id) : null;
}

/** Python's `" ".join(text.split())[:80]`, counting code points as Python does. */
function titleFrom(content) {
  const words = content.split(/\s+/).filter(Boolean).join(" ");
  return Array.from(words).slice(0, TITLE_CHARS).join("");
}

function newMessage(fields) {
  return {
    agent: null, content: "", run_id: null, client_id: null, attempt: 0, seq: 0, ...fields,
  };
}

function threadCreated(view, event, id) {
  view.title = event.title ?? "";
  view.created_at = streamMs(id);
}

function messageSent(view, event, id) {
  view.messages.push(newMessage({
    id: event.message_id,
    role: "user",
    agent: event.agent ?? null,
    content: event.content,
    status: "completed",
    run_id: event.run_id ?? null,
    client_id: event.client_id ?? null,
    created_at: streamMs(id),
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
    ended_at: null,
    until_ms: null,
    steps: [],
    result: null,
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

function runStarted(view, event) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  Object.assign(run, { status: "running", attempt: event.attempt, worker: event.worker });
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
}

function messageCompleted(view, event, id) {
  const reply = messageOf(view, event.run_id, event.message_id, event.agent, id);
  if (!reply) return;
  reply.content = event.text;
  reply.status = "completed";
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
    const reply = findMessage(view, run.reply_id);
    if (reply && reply.status !== "completed") reply.status = messageStatus;
  };
}

/**
 * run.retrying, run.restarted, run.waiting and run.resumed: move the run to
 * `runStatus` and its reply to `replyStatus` (only from `replyFrom`, if given).
 *
 * run.retrying: the attempt failed and another follows; the answer is due again,
 * its old text stays until then. run.restarted: a failed or cancelled run asked
 * to run again; its text stays until run.started brings a new attempt number.
 * run.waiting: a workflow parked on a signal or a timer, which is also a step.
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
    const reply = findMessage(view, run.reply_id);
    if (reply && replyStatus && (!replyFrom.length || replyFrom.includes(reply.status))) {
      reply.status = replyStatus;
    }
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

const HANDLERS = new Map([
  ["thread.created", threadCreated],
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
]);

// ---------------------------------------------------------------------------
// 2. Helpers
// ---------------------------------------------------------------------------

/** A v4 UUID. crypto.randomUUID only exists in secure contexts, and plain http on a LAN is not one. */
function newClientId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)]
    .join("-");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status; // 0 when the server was never reached
  }

  /** Worth trying again: the request may never have arrived, or the server hiccupped. */
  get retryable() {
    return this.status === 0 || this.status >= 500;
  }
}

/** Call the JSON API. Resolves with the parsed body (null if empty); rejects with an ApiError. */
async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch {
    throw new ApiError("Can't reach the server. Check your connection.", 0);
  }
  const payload = parseJson(text);
  if (!response.ok) throw new ApiError(errorDetail(payload, response), response.status);
  return payload;
}

function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The server's `detail`, which FastAPI makes a list of problems for validation errors. */
function errorDetail(payload, response) {
  const detail = payload?.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((item) => item?.msg ?? JSON.stringify(item)).join("; ");
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Short "when" for the thread list: "now", a time today, or a date. */
function formatWhen(ms, now = Date.now()) {
  if (!ms) return "";
  if (now - ms < 60_000) return "now";
  const date = new Date(ms);
  return date.toDateString() === new Date(now).toDateString()
    ? timeFormat.format(date)
    : dayFormat.format(date);
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

// ---------------------------------------------------------------------------
// 3. The live connection
// ---------------------------------------------------------------------------

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const SILENCE_LIMIT_MS = 35_000; // the server pings every ~15 s: two missed pings and a margin
const CLOSE_TOO_SLOW = 4008;
const CLOSE_NOT_FOUND = 4404;

function liveUrl(threadId, after) {
  const url = new URL(`/api/threads/${encodeURIComponent(threadId)}/live`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (after) url.searchParams.set("after", after);
  return url.href;
}

/**
 * One thread's websocket, kept alive until stop(). After a drop it reconnects
 * with `?after=<cursor>` so the events resume exactly where the view stands.
 *
 * `on` supplies: cursor() → last applied event id or null; status(text);
 * snapshot(frame); event(id, event); refused(detail); fatal(detail).
 */
class LiveThread {
  #threadId;
  #on;
  #socket = null;
  #retries = 0;
  #reconnectTimer = null;
  #silenceTimer = null;
  #everOpen = false;
  #resume = true; // false after a refusal we don't understand: start over from a snapshot
  #refusal = null;
  #stopped = false;

  constructor(threadId, on) {
    this.#threadId = threadId;
    this.#on = on;
  }

  start() {
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    this.#abandon();
  }

  /** The network is back: skip whatever is left of the back-off. */
  wake() {
    if (this.#stopped || this.#socket) return;
    clearTimeout(this.#reconnectTimer);
    this.#retries = 0;
    this.#connect();
  }

  /** The browser lost the network: the socket is as good as dead, and retrying is pointless. */
  pause() {
    if (this.#stopped) return;
    clearTimeout(this.#reconnectTimer);
    this.#abandon();
    this.#on.status("offline");
  }

  #connect() {
    if (!navigator.onLine) {
      this.#on.status("offline"); // wake() carries on once the browser is online again
      return;
    }
    this.#on.status(this.#everOpen ? "reconnecting" : "connecting");
    const after = this.#resume ? this.#on.cursor() : null;
    const socket = new WebSocket(liveUrl(this.#threadId, after));
    this.#socket = socket;
    this.#refusal = null;
    this.#armSilenceTimer(); // also catches a connection attempt that hangs
    // Every handler checks it still belongs to the current socket: abandoned
    // sockets can deliver late frames or closes, which must be ignored.
    const current = () => socket === this.#socket;
    socket.onopen = () => current() && this.#opened();
    socket.onmessage = (message) => current() && this.#receive(message.data);
    socket.onclose = (event) => current() && this.#closed(event.code);
  }

  #opened() {
    this.#everOpen = true;
    this.#on.status("live");
  }

  #receive(data) {
    this.#armSilenceTimer();
    const frame = parseJson(data);
    if (!frame) {
      // Skipping a frame could leave a gap: reconnect from the cursor instead.
      this.#dropAndRetry();
      return;
    }
    this.#retries = 0; // the server is serving us, so the next drop backs off from the start
    if (frame.type === "snapshot") {
      this.#resume = true;
      this.#on.snapshot(frame);
    } else if (frame.type === "event") {
      this.#on.event(frame.id, frame.event);
    } else if (frame.type === "error") {
      this.#refusal = frame.detail ?? null;
    }
    // "ping" needs nothing beyond the timer reset above; unknown types are ignored.
  }

  #closed(code) {
    this.#socket = null;
    clearTimeout(this.#silenceTimer);
    if (code === CLOSE_NOT_FOUND) {
      this.#stopped = true;
      this.#on.status("offline");
      this.#on.fatal(this.#refusal ?? "This thread doesn't exist.");
      return;
    }
    const refused = code >= 4000 && code < 5000 && code !== CLOSE_TOO_SLOW;
    if (refused) {
      // Perhaps our cursor is no longer valid: a fresh snapshot can't leave a gap.
      this.#resume = false;
      if (this.#refusal) this.#on.refused(this.#refusal);
    }
    // CLOSE_TOO_SLOW means we fell behind: resuming from the cursor is all it takes.
    this.#retryLater();
  }

  #armSilenceTimer() {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = setTimeout(() => this.#dropAndRetry(), SILENCE_LIMIT_MS);
  }

  /** Give up on a socket that went quiet or garbled, even if the browser hasn't noticed. */
  #dropAndRetry() {
    this.#abandon();
    this.#retryLater();
  }

  #retryLater() {
    if (this.#stopped) return;
    this.#on.status(this.#everOpen ? "reconnecting" : "connecting");
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#connect(), this.#nextDelay());
  }

  /** Exponential back-off with jitter, so clients dropped together don't return together. */
  #nextDelay() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.#retries);
    this.#retries = Math.min(this.#retries + 1, 16);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #abandon() {
    const socket = this.#socket;
    this.#socket = null;
    clearTimeout(this.#silenceTimer);
    try {
      socket?.close();
    } catch {
      // Closing a socket that never opened can throw in old browsers; it is gone either way.
    }
  }
}

// ---------------------------------------------------------------------------
// 4. State and actions
// ---------------------------------------------------------------------------

const THREADS_REFRESH_MS = 5_000;
const SEND_RETRY_DELAYS_MS = [500, 1_000, 2_000, 4_000];
const ERROR_VISIBLE_MS = 8_000;
const RUN_ENDED = ["completed", "cancelled", "failed"];
const RUN_RETRYABLE = ["failed", "cancelled"]; // what POST /api/runs/{id}/retry accepts
const DEFAULT_AGENT = "assistant";
const AGENTS_RETRY_MS = [2_000, 5_000, 15_000, 30_000];

const state = {
  threads: [], // summaries for the sidebar, newest activity first
  threadsFailed: false,
  threadId: null, // the open thread, or null for a fresh conversation
  view: null, // its folded view; null until the snapshot arrives
  live: null, // its LiveThread
  missing: null, // why the open thread can't be shown, when it doesn't exist
  outbox: new Map(), // client_id → optimistic user message not yet seen in the stream
  stoppingRun: null, // run id whose cancel has been asked for, until the run ends
  retryingRuns: new Map(), // run id → the ended_at of the ending its retry was asked for
  signalling: new Map(), // run id → the wait (waitKey) a signal was sent to, while it stands
  creatingThread: false,
  agents: [], // from GET /api/agents: [{name, kind, description, signals}]
  agentsLoaded: false,
  agent: DEFAULT_AGENT, // the picker's choice
};

function threadIdFromHash() {
  try {
    return decodeURIComponent(location.hash.slice(1)) || null;
  } catch {
    return null; // a malformed hash names no thread
  }
}

/** Open a thread and record it in the URL, so reload and shared links come back to it. */
function navigate(threadId) {
  openThread(threadId);
  const target = threadId ? `#${encodeURIComponent(threadId)}` : location.pathname + location.search;
  if (threadIdFromHash() !== threadId) history.pushState(null, "", target);
}

function openThread(threadId) {
  if (threadId === state.threadId) return;
  state.live?.stop();
  Object.assign(state, {
    threadId,
    view: null,
    live: null,
    missing: null,
    stoppingRun: null,
    retryingRuns: new Map(),
    signalling: new Map(),
  });
  clearMessages();
  stickToBottom = true;
  renderThreadList();
  scheduleRender();
  if (!threadId) {
    setConnection("offline");
    return;
  }
  state.live = new LiveThread(threadId, {
    cursor: () => state.view?.last_event_id ?? null,
    status: setConnection,
    snapshot: receiveSnapshot,
    event: receiveEvent,
    refused: showError,
    fatal: (detail) => {
      state.missing = detail;
      scheduleRender();
    },
  });
  state.live.start();
}

function receiveSnapshot(frame) {
  const view = normaliseView(frame.view);
  view.last_event_id = laterEventId(view.last_event_id, frame.last_event_id);
  state.view = view;
  state.missing = null;
  for (const message of view.messages) {
    if (message.client_id) state.outbox.delete(message.client_id);
  }
  settleStop(view);
  patchSummary(view);
  scheduleRender();
}

function receiveEvent(id, event) {
  const view = state.view;
  if (!view || !event) return; // events only ever follow a snapshot or our own cursor
  const before = assistantReply(view, event)?.status;
  if (!applyEvent(view, id, event)) return;
  if (event.type === "message.sent" && event.client_id) {
    state.outbox.delete(event.client_id); // the optimistic copy is now the real one
  }
  announceChange(before, assistantReply(view, event)?.status, findRun(view, event.run_id));
  settleStop(view);
  patchSummary(view);
  scheduleRender();
}

function assistantReply(view, event) {
  const reply = replyOf(view, event.run_id);
  return reply?.role === "assistant" ? reply : null;
}

const ANNOUNCEMENTS = {
  completed: "Answer finished",
  cancelled: "Answer stopped",
  failed: "Answer failed",
};

function announceChange(before, after, run) {
  if (!after || after === before) return;
  if (after === "streaming" && before === "pending") announce("Answer started");
  else if (after === "waiting") announce(waitingLabel(run));
  else if (after === "pending" && RUN_RETRYABLE.includes(before)) announce("Answer queued again");
  else if (ANNOUNCEMENTS[after]) announce(ANNOUNCEMENTS[after]);
}

/** "Stopping…" lasts until the run ends, so a run retried later doesn't start out "Stopping…". */
function settleStop(view) {
  const run = findRun(view, state.stoppingRun);
  if (run && RUN_ENDED.includes(run.status)) state.stoppingRun = null;
}

function forgetStop(runId) {
  if (state.stoppingRun === runId) state.stoppingRun = null;
}

// Each refresh takes a ticket, so a slow answer can't overwrite a newer one.
let threadsTicket = 0;
let threadsShown = 0;

async function refreshThreads() {
  const ticket = ++threadsTicket;
  try {
    const threads = await api("GET", "/api/threads");
    if (ticket < threadsShown) return;
    threadsShown = ticket;
    state.threads = Array.isArray(threads) ? threads : [];
    state.threadsFailed = false;
    if (state.view) patchSummary(state.view); // the live view may be ahead of the projection
  } catch {
    state.threadsFailed = true; // keep showing the last list; the next refresh may work
  }
  renderThreadList();
}

/** Bring the open thread's sidebar entry up to date with the live view, if the view is newer. */
function patchSummary(view) {
  const summary = state.threads.find((thread) => thread.id === view.id);
  if (!summary) return;
  if (summary.last_event_id && view.last_event_id
      && compareEventIds(summary.last_event_id, view.last_event_id) > 0) return;
  Object.assign(summary, {
    title: view.title,
    updated_at: Math.max(summary.updated_at ?? 0, view.updated_at),
    last_event_id: view.last_event_id,
    messages: view.messages.length,
    active_run: activeRunId(view),
  });
  renderThreadList();
}

async function createThread() {
  const view = await api("POST", "/api/threads", {});
  // Show it at once; the refresh below fills in whatever the server says.
  if (!state.threads.some((thread) => thread.id === view.id)) {
    state.threads.unshift({
      id: view.id,
      title: view.title ?? "",
      created_at: view.created_at ?? Date.now(),
      updated_at: view.updated_at ?? Date.now(),
      last_event_id: view.last_event_id ?? null,
      messages: 0,
      active_run: null,
    });
  }
  refreshThreads();
  return view.id;
}

let threadCreation = null;

/** One creation at a time: quick sends from a fresh conversation all belong in one thread. */
function createThreadOnce() {
  threadCreation ??= createThread().finally(() => {
    threadCreation = null;
  });
  return threadCreation;
}

async function startNewThread() {
  if (state.creatingThread) return;
  state.creatingThread = true;
  renderControls();
  try {
    navigate(await createThread());
    dom.input.focus();
  } catch (error) {
    showError(`Couldn't create a thread: ${error.message}`);
  } finally {
    state.creatingThread = false;
    renderControls();
  }
}

/**
 * What the composer would send: a message that starts with "@name " (a known
 * agent) goes to that agent without the mention; anything else to the picker's agent.
 */
function composerDraft(text) {
  const content = text.trim();
  const mention = /^@(\S+)(?:\s+|$)/.exec(content);
  if (mention && knownAgent(mention[1])) {
    return { agent: mention[1], content: content.slice(mention[0].length).trim() };
  }
  return { agent: state.agent, content };
}

function knownAgent(name) {
  return state.agents.some((agent) => agent.name === name);
}

function sendFromComposer() {
  const text = dom.input.value;
  if (!composerDraft(text).content || state.missing) return;
  dom.input.value = "";
  onInputChanged();
  dom.input.focus(); // clicking Send moved focus to a button that is now disabled
  stickToBottom = true;
  // A mention can only be told from text once the agents are known: wait for them, briefly.
  const mention = text.trim().startsWith("@");
  if (mention && !state.agentsLoaded) loadAgents().then(() => queueMessage(text));
  else queueMessage(text);
}

function queueMessage(text) {
  const { agent, content } = composerDraft(text);
  if (!content) return;
  const entry = {
    clientId: newClientId(),
    threadId: state.threadId, // null: the thread gets created on the way
    content,
    agent,
    createdAt: Date.now(),
    status: "pending",
    error: null,
    messageId: null,
  };
  state.outbox.set(entry.clientId, entry);
  deliver(entry);
}

/** POST an outbox entry. The client_id makes resending safe, so network failures retry. */
async function deliver(entry) {
  entry.status = "pending";
  entry.error = null;
  scheduleRender();
  try {
    if (!entry.threadId) {
      entry.threadId = await createThreadOnce();
      if (!state.threadId) navigate(entry.threadId); // unless the reader went elsewhere meanwhile
    }
    const path = `/api/threads/${encodeURIComponent(entry.threadId)}/messages`;
    const body = { content: entry.content, client_id: entry.clientId, agent: entry.agent };
    const accepted = await withRetries(() => api("POST", path, body));
    entry.messageId = accepted?.message_id ?? null;
    refreshThreads();
  } catch (error) {
    entry.status = "failed";
    entry.error = error.message;
  }
  scheduleRender();
}

async function withRetries(request) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await request();
    } catch (error) {
      const delay = SEND_RETRY_DELAYS_MS[attempt];
      if (!(error instanceof ApiError) || !error.retryable || delay === undefined) throw error;
      await sleep(delay);
    }
  }
}

async function stopActiveRun() {
  const runId = activeRunId(state.view);
  if (!runId || state.stoppingRun === runId) return;
  state.stoppingRun = runId;
  renderControls();
  try {
    const answer = await api("POST", `/api/runs/${encodeURIComponent(runId)}/cancel`, {});
    // "cancel_requested": its worker stops it, and "Stopping…" lasts until run.cancelled ends it.
    // "cancelled": it ended on the spot (it was queued or retrying); run.cancelled is on its way.
    if (answer?.status === "cancelled") forgetStop(runId);
  } catch (error) {
    forgetStop(runId);
    // 409: it finished before the cancel arrived, and its own events say how.
    if (error.status !== 409) showError(`Couldn't stop the answer: ${error.message}`);
  }
  renderControls();
}

/**
 * Run a failed or stopped answer again. Nothing changes here on success: the
 * run.restarted, run.started and deltas that follow redraw it through the fold.
 * Not retried on network errors: a second POST after a lost 202 would only get a 409.
 */
async function retryRun(runId) {
  const run = state.view ? findRun(state.view, runId) : null;
  if (!run || !RUN_RETRYABLE.includes(run.status) || retryPending(run)) return;
  const retrying = state.retryingRuns;
  retrying.set(runId, run.ended_at);
  scheduleRender();
  try {
    await api("POST", `/api/runs/${encodeURIComponent(runId)}/retry`, {});
    // The entry stays, so the button stays disabled until run.restarted hides it.
  } catch (error) {
    retrying.delete(runId);
    showError(`Couldn't retry the answer: ${error.message}`);
  }
  scheduleRender();
}

/** Keyed by ended_at: if the retried run ends badly again, its new Retry works at once. */
function retryPending(run) {
  return state.retryingRuns.has(run.id) && state.retryingRuns.get(run.id) === run.ended_at;
}

function onMessageAction(button) {
  const message = button.closest(".message");
  const action = button.dataset.action;
  if (action === "retry-run") retryRun(message.dataset.runId);
  else if (SIGNAL_ACTIONS.includes(action)) onSignalAction(action, button.closest(".workflow"));
  else onFailedMessageAction(action, message.dataset.clientId);
}

// --- Agents and workflow signals ----------------------------------------------

let agentsLoading = null;
let agentsRetries = 0;

/** Fetch who messages can go to. Resolves either way; a failure tries again later. */
function loadAgents() {
  agentsLoading ??= (async () => {
    try {
      const agents = await api("GET", "/api/agents");
      state.agents = Array.isArray(agents) ? agents.filter((agent) => agent?.name) : [];
      state.agentsLoaded = true;
    } catch {
      const delay = AGENTS_RETRY_MS[Math.min(agentsRetries, AGENTS_RETRY_MS.length - 1)];
      agentsRetries += 1;
      setTimeout(loadAgents, delay);
    } finally {
      agentsLoading = null;
    }
    renderAgentPicker();
    renderControls();
  })();
  return agentsLoading;
}

const SIGNAL_ACTIONS = ["approve", "reject", "signal"];

/** Which wait a run is in: a signal sent to one wait must not disable the next one's buttons. */
function waitKey(run) {
  const step = (run.steps ?? []).filter((candidate) => candidate.status === "waiting").at(-1);
  return `${run.waiting_for}|${step?.op ?? ""}|${run.until_ms ?? ""}`;
}

function signalPending(run) {
  return state.signalling.get(run.id) === waitKey(run);
}

function onSignalAction(action, panel) {
  const runId = panel?.dataset.runId;
  const parts = runId ? runPanels.get(runId) : null;
  const run = state.view ? findRun(state.view, runId) : null;
  if (!parts || !run?.waiting_for) return;
  if (action === "approve") {
    sendSignal(run, "approval", { approved: true }, parts.feedback);
  } else if (action === "reject") {
    sendSignal(run, "approval", { approved: false, feedback: parts.feedback.value.trim() }, parts.feedback);
  } else {
    const text = parts.payload.value.trim();
    let payload = null;
    try {
      payload = text ? JSON.parse(text) : null;
    } catch (error) {
      showError(`The payload isn't valid JSON: ${error.message}`);
      parts.payload.focus();
      return;
    }
    sendSignal(run, run.waiting_for, payload, parts.payload);
  }
}

/**
 * Send a waiting run its signal. The buttons stay disabled until the run moves
 * on (its events redraw it). Never retried: a second copy would be kept and
 * answer the run's next wait.
 */
async function sendSignal(run, name, payload, input) {
  if (run.status !== "waiting" || signalPending(run)) return;
  state.signalling.set(run.id, waitKey(run));
  scheduleRender();
  try {
    await api("POST", `/api/runs/${encodeURIComponent(run.id)}/signal`, { name, payload });
    input.value = "";
  } catch (error) {
    state.signalling.delete(run.id);
    showError(`Couldn't send “${name}”: ${error.message}`);
  }
  scheduleRender();
}

/** The buttons on a message that failed to send: try again with the same client_id, or drop it. */
function onFailedMessageAction(action, clientId) {
  const entry = state.outbox.get(clientId);
  if (entry?.status !== "failed") return;
  if (action === "retry") {
    deliver(entry);
  } else if (action === "discard") {
    state.outbox.delete(clientId);
    scheduleRender();
  }
}

// ---------------------------------------------------------------------------
// 5. Rendering
// ---------------------------------------------------------------------------

let dom = null;
let renderQueued = false;
let stickToBottom = true; // the reader is at the bottom, so new text should keep it in view
let threadListSignature = "";
let errorTimer = null;
const messageNodes = new Map(); // render key → the parts of one message element

/** Coalesce the many updates of a token stream into one render per frame. */
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  renderHeader();
  renderMessages();
  renderEmptyState();
  renderControls();
  if (stickToBottom) scrollToBottom();
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

/** Create an element with a class and, optionally, text. */
function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text) element.textContent = text;
  return element;
}

function setConnection(status) {
  const hints = {
    connecting: "Connecting to the server…",
    live: "Live: updates arrive as they happen",
    reconnecting: "Connection lost, reconnecting…",
    offline: "Not connected",
  };
  setText(dom.connection, status);
  dom.connection.dataset.state = status;
  dom.connection.title = hints[status] ?? "";
}

function renderHeader() {
  const fallback = state.threadId ? "Untitled thread" : "New conversation";
  const title = state.view?.title || fallback;
  setText(dom.title, title);
  document.title = `${title} · Slipstream`;
}

function renderEmptyState() {
  const [title, body] = emptyStateText();
  dom.empty.hidden = !title;
  setText(dom.emptyTitle, title);
  setText(dom.emptyBody, body);
}

function emptyStateText() {
  if (state.missing) return ["This thread isn't available", state.missing];
  if (messageNodes.size > 0) return ["", ""];
  if (!state.threadId) return ["Start a conversation", "Type a message below to begin a new thread."];
  if (!state.view) return ["Loading…", ""];
  return ["No messages yet", "Say hello below."];
}

function renderControls() {
  const runId = state.missing ? null : activeRunId(state.view);
  const stopping = runId !== null && state.stoppingRun === runId;
  dom.stop.hidden = runId === null;
  dom.stop.disabled = stopping;
  setText(dom.stopLabel, stopping ? "Stopping…" : "Stop");
  dom.send.disabled = !composerDraft(dom.input.value).content || Boolean(state.missing);
  dom.newThread.disabled = state.creatingThread;
}

// --- Messages ---------------------------------------------------------------

/** The open thread's messages, then its optimistic ones still on their way. */
function visibleMessages() {
  const optimistic = [...state.outbox.values()]
    .filter((entry) => entry.threadId === state.threadId)
    .map((entry) => newMessage({
      id: entry.messageId ?? "",
      role: "user",
      agent: entry.agent,
      content: entry.content,
      status: entry.status,
      client_id: entry.clientId,
      created_at: entry.createdAt,
      error: entry.error,
      local: true,
    }));
  return [...(state.view?.messages ?? []), ...optimistic];
}

/**
 * Update message elements in place rather than rebuilding them: streaming
 * re-renders every frame, and rebuilding would lose the reader's selection.
 */
function renderMessages() {
  const activeRun = activeRunId(state.view); // the one queued runs wait for
  const lastOfRun = lastMessageOfRuns(state.view);
  const used = new Set();
  const usedPanels = new Set();
  let previous = null;
  for (const message of visibleMessages()) {
    const key = messageKey(message, used);
    used.add(key);
    let parts = messageNodes.get(key);
    if (!parts) {
      parts = createMessageParts();
      messageNodes.set(key, parts);
    }
    const run = state.view ? findRun(state.view, message.run_id) : null;
    const last = message.role === "assistant" && lastOfRun.get(message.run_id) === message;
    updateMessageParts(parts, message, run, activeRun, last);
    if (last && hasPanel(run)) {
      placePanel(parts.node, run);
      usedPanels.add(run.id);
    }
    const expected = previous ? previous.nextSibling : dom.messageList.firstChild;
    if (parts.node !== expected) dom.messageList.insertBefore(parts.node, expected);
    previous = parts.node;
  }
  for (const [key, parts] of messageNodes) {
    if (!used.has(key)) {
      parts.node.remove();
      messageNodes.delete(key);
    }
  }
  for (const [runId, panel] of runPanels) {
    if (!usedPanels.has(runId)) {
      panel.node.remove();
      runPanels.delete(runId);
    }
  }
}

/** Run id → its last assistant message: a workflow's later agent turns add messages of their own. */
function lastMessageOfRuns(view) {
  const last = new Map();
  for (const message of view?.messages ?? []) {
    if (message.role === "assistant" && message.run_id) last.set(message.run_id, message);
  }
  return last;
}

/**
 * User messages are keyed by client_id when they have one, so the optimistic
 * element simply becomes the confirmed one: no flicker, no duplicate.
 */
function messageKey(message, used) {
  const byClient = message.role === "user" && message.client_id ? `client:${message.client_id}` : null;
  return byClient && !used.has(byClient) ? byClient : `message:${message.id}`;
}

function clearMessages() {
  messageNodes.clear();
  runPanels.clear();
  dom.messageList.replaceChildren();
}

function createMessageParts() {
  const node = el("article", "message");
  node.setAttribute("data-testid", "message");
  const meta = el("header", "message__meta");
  const author = el("span", "message__author");
  const to = el("span", "message__to");
  const time = el("time", "message__time");
  const status = el("span", "message__status");
  meta.append(author, to, time, status);
  const content = el("div", "content");
  const typing = el("span", "typing");
  typing.setAttribute("aria-hidden", "true");
  typing.append(el("span"), el("span"), el("span"));
  const note = el("p", "message__note");
  const actions = el("div", "message__actions");
  // For a message that failed to send: it isn't in the thread, so the reader decides.
  const retrySend = actionButton("retry", "Try again");
  const discard = actionButton("discard", "Discard");
  // For an answer that failed or was stopped: the run can run again, from scratch.
  const retryRun = actionButton("retry-run", "Retry");
  actions.append(retrySend, discard, retryRun);
  node.append(meta, content, typing, note, actions);
  return { node, author, to, time, status, content, note, actions, retrySend, discard, retryRun };
}

function actionButton(action, text) {
  const button = el("button", "message__action", text);
  button.type = "button";
  button.dataset.action = action;
  return button;
}

function updateMessageParts(parts, message, run, activeRun, lastOfRun) {
  const { node } = parts;
  const phase = messagePhase(message, run, lastOfRun);
  node.dataset.role = message.role;
  node.dataset.status = message.status;
  node.dataset.phase = phase;
  node.dataset.messageId = message.id ?? "";
  if (message.client_id) node.dataset.clientId = message.client_id;
  else delete node.dataset.clientId;
  node.dataset.runStatus = run?.status ?? "";
  node.dataset.runId = message.role === "assistant" ? message.run_id ?? "" : "";

  setText(parts.author, message.role === "user" ? "You" : message.agent || run?.agent || "Assistant");
  const to = message.role === "user" && message.agent && message.agent !== DEFAULT_AGENT
    ? `to ${message.agent}` : "";
  setText(parts.to, to);
  parts.to.hidden = !to;
  updateTime(parts.time, message.created_at);
  const label = statusLabel(message, phase, run, activeRun);
  setText(parts.status, label);
  parts.status.hidden = !label;
  setStreamingText(parts.content, message.content ?? "");
  const note = noteText(message, run);
  setText(parts.note, note);
  parts.note.hidden = !note;
  updateActions(parts, message, run);
}

function updateActions(parts, message, run) {
  const failedSend = Boolean(message.local && message.status === "failed");
  const retryable = message.role === "assistant" && Boolean(run)
    && RUN_RETRYABLE.includes(message.status) && RUN_RETRYABLE.includes(run.status);
  const pending = retryable && retryPending(run);
  if (!retryable && document.activeElement === parts.retryRun) dom.input.focus(); // don't strand focus
  parts.retrySend.hidden = !failedSend;
  parts.discard.hidden = !failedSend;
  parts.retryRun.hidden = !retryable;
  parts.retryRun.disabled = pending;
  setText(parts.retryRun, pending ? "Retrying…" : "Retry");
  parts.retryRun.setAttribute("aria-label", pending ? "Retrying this answer" : "Retry this answer");
  parts.actions.hidden = !failedSend && !retryable;
}

function updateTime(element, ms) {
  if (!ms || element.dataset.ms === String(ms)) return;
  const date = new Date(ms);
  element.dataset.ms = String(ms);
  element.dateTime = date.toISOString();
  element.title = fullFormat.format(date);
  element.textContent = timeFormat.format(date);
}

/** Appending to the text node keeps a reader's selection, and is cheaper than replacing it. */
function setStreamingText(element, text) {
  const current = element.textContent;
  if (current === text) return;
  const node = element.firstChild;
  const appendable = current && text.startsWith(current)
    && element.childNodes.length === 1 && node.nodeType === Node.TEXT_NODE;
  if (appendable) node.appendData(text.slice(current.length));
  else element.textContent = text;
}

/**
 * How an answer looks, which for a workflow's messages is not always its status:
 * a workflow parks and resumes its reply, so a finished text can be "waiting" or
 * "streaming" while the run waits, runs a plain step or writes a later message.
 */
function messagePhase(message, run, lastOfRun) {
  const { status } = message;
  if (message.role !== "assistant" || !run?.steps?.length) return status;
  if (status !== "streaming" && status !== "waiting") return status;
  if (!lastOfRun) return "completed"; // a later message of the run carries on
  if (status === "waiting") return "waiting";
  const writing = run.steps.some((step) => step.kind === "agent" && step.status === "running");
  return writing ? "streaming" : "working";
}

function statusLabel(message, phase, run, activeRun) {
  if (message.role === "user") {
    return { pending: "Sending…", failed: "Not sent" }[message.status] ?? "";
  }
  if (run?.status === "retrying" && !RUN_ENDED.includes(message.status)) {
    return "Retrying…";
  }
  switch (phase) {
    case "pending":
      return pendingLabel(run, activeRun);
    case "streaming":
      return "Writing…";
    case "working":
      return workingLabel(run);
    case "waiting":
      return waitingLabel(run);
    case "cancelled":
      return "Stopped";
    case "failed":
      return "Failed";
    default:
      return "";
  }
}

/**
 * The thread answers one run at a time, in order: a queued run either waits for
 * the one before it or, when it is next, for a worker to pick it up.
 */
function pendingLabel(run, activeRun) {
  if (run?.status === "running") return run.steps?.length ? workingLabel(run) : "Thinking…";
  // A waiting workflow lets the thread go on, so a run queued behind it is not held up.
  const blocking = activeRun && findRun(state.view, activeRun)?.status !== "waiting";
  if (run?.status === "queued" && blocking && activeRun !== run.id) {
    return "Queued — waits for the answer before it";
  }
  return "Waiting for a worker…";
}

/** A workflow between its agent turns: name the step it runs. */
function workingLabel(run) {
  const step = (run?.steps ?? []).filter((candidate) => candidate.status === "running").at(-1);
  return step ? `Running ${stepLabel(step)}…` : "Working…";
}

function waitingLabel(run) {
  if (!run?.waiting_for) return "Waiting";
  return run.waiting_for === "timer" ? "Sleeping" : `Waiting for ${run.waiting_for}`;
}

function noteText(message, run) {
  if (message.role === "user") {
    return message.status === "failed" ? message.error || "The message couldn't be sent." : "";
  }
  if (message.status === "failed") return run?.reason || "The answer failed.";
  if (message.status === "cancelled") return run?.reason || "";
  if (run?.status === "retrying" && !RUN_ENDED.includes(message.status)) return retryingNote(run);
  return "";
}

/** run.retrying names the attempt to come; the view keeps the one that failed, so add one. */
function retryingNote(run) {
  const attempt = run.attempt > 0 ? ` (attempt ${run.attempt + 1})` : "";
  return run.reason ? `Retrying${attempt}: ${run.reason}` : `Retrying${attempt}…`;
}

// --- Workflows ------------------------------------------------------------------

const runPanels = new Map(); // run id → the parts of its workflow panel

/** A workflow run gets a panel: its steps, what it waits for, its result. */
function hasPanel(run) {
  return Boolean(run) && (run.steps?.length > 0 || run.status === "waiting" || run.result != null);
}

/**
 * The panel sits in the run's last message, where the newest draft is. It is one
 * element per run, moved rather than rebuilt, so typed feedback and the open or
 * closed state of its details survive a new message.
 */
function placePanel(host, run) {
  let panel = runPanels.get(run.id);
  if (!panel) {
    panel = createPanel();
    runPanels.set(run.id, panel);
  }
  panel.node.dataset.runId = run.id;
  updatePanel(panel, run);
  if (panel.node.parentNode !== host) host.append(panel.node);
}

function createPanel() {
  const node = el("section", "workflow");
  node.setAttribute("aria-label", "Workflow");

  const wait = el("div", "workflow__wait");
  wait.setAttribute("data-testid", "workflow-wait");
  const waitText = el("p", "workflow__wait-text");
  wait.append(waitText);

  const approval = el("div", "workflow__form");
  const feedback = el("input", "workflow__input");
  feedback.type = "text";
  feedback.placeholder = "Feedback for a revision (optional)";
  feedback.setAttribute("aria-label", "Feedback for a revision");
  feedback.setAttribute("data-testid", "feedback-input");
  const reject = signalButton("reject", "Reject", "reject-button", "button--quiet");
  const approve = signalButton("approve", "Approve", "approve-button", "button--primary");
  approval.append(feedback, reject, approve);

  const generic = el("div", "workflow__form");
  const payload = el("textarea", "workflow__input workflow__payload");
  payload.rows = 2;
  payload.placeholder = '{"key": "value"}';
  payload.spellcheck = false;
  payload.setAttribute("aria-label", "Signal payload (JSON)");
  payload.setAttribute("data-testid", "signal-payload");
  const send = signalButton("signal", "Send", "signal-send", "button--primary");
  generic.append(payload, send);

  const details = el("details", "workflow__steps");
  details.open = true;
  details.setAttribute("data-testid", "workflow-steps");
  const summary = el("summary", "workflow__summary");
  const list = el("ol", "workflow__list");
  const result = el("details", "workflow__result");
  result.setAttribute("data-testid", "workflow-result");
  const resultPre = el("pre", "workflow__json");
  result.append(el("summary", "workflow__result-summary", "Result"), resultPre);
  details.append(summary, list);

  node.append(details);
  return {
    node, wait, waitText, approval, feedback, reject, approve, generic, payload, send,
    details, summary, list, listSignature: "", result, resultPre,
  };
}

function signalButton(action, text, testId, variant) {
  const button = el("button", `button button--small ${variant}`, text);
  button.type = "button";
  button.dataset.action = action;
  button.setAttribute("data-testid", testId);
  return button;
}

function updatePanel(panel, run) {
  updateWait(panel, run);
  const steps = run.steps ?? [];
  const done = steps.filter((step) => step.status === "completed").length;
  setText(panel.summary, `Workflow · ${done}/${plural(steps.length, "step")} · ${run.status}`);
  panel.node.dataset.runStatus = run.status;

  const signature = JSON.stringify(steps.map((step) => [
    step.op, step.name, step.kind, step.status, step.attempts, step.duration_ms, step.error,
    step.until_ms, step.kind === "wait" ? step.result : null,
  ]));
  if (signature !== panel.listSignature) {
    panel.listSignature = signature;
    panel.list.replaceChildren(...steps.map(stepItem));
  }

  const showResult = run.status === "completed" && run.result != null;
  setText(panel.resultPre, showResult ? JSON.stringify(run.result, null, 2) : "");
  attach(panel.details, showResult ? [panel.result] : [], 2);
}

/**
 * Keep `children` after the first `keep` children of `parent`, and nothing else.
 * Controls a run doesn't need are taken out of the page, not hidden: a thread
 * with several runs then has exactly one Approve button, the one that works.
 */
function attach(parent, children, keep = 0) {
  const current = [...parent.children].slice(keep);
  if (current.length === children.length && current.every((child, i) => child === children[i])) {
    return;
  }
  for (const child of current) {
    if (!children.includes(child)) child.remove();
  }
  for (const child of children) parent.append(child);
}

function updateWait(panel, run) {
  const waiting = run.status === "waiting" && Boolean(run.waiting_for);
  const signal = waiting && run.waiting_for !== "timer" ? run.waiting_for : null;
  if (!waiting && panel.wait.contains(document.activeElement)) dom.input.focus(); // don't strand focus
  if (!waiting) {
    panel.wait.remove();
    return;
  }
  if (panel.node.firstChild !== panel.wait) panel.node.prepend(panel.wait);
  panel.wait.dataset.waitingFor = run.waiting_for;
  setText(panel.waitText, waitText(run));
  const form = signal === "approval" ? panel.approval : signal ? panel.generic : null;
  attach(panel.wait, form ? [form] : [], 1);
  const pending = Boolean(signal) && signalPending(run);
  for (const control of [panel.feedback, panel.reject, panel.approve, panel.payload, panel.send]) {
    control.disabled = pending;
  }
  panel.wait.setAttribute("aria-busy", String(pending));
}

function waitText(run) {
  if (run.waiting_for === "timer") {
    return run.until_ms ? `Sleeping until ${formatMoment(run.until_ms)}` : "Sleeping";
  }
  const what = run.waiting_for === "approval"
    ? "Waiting for your approval"
    : `Waiting for the “${run.waiting_for}” signal`;
  return run.until_ms ? `${what} · expires ${formatMoment(run.until_ms)}` : what;
}

const STEP_ICONS = { completed: "✓", failed: "✕", retrying: "↻", waiting: "◷", running: "" };

function stepItem(step) {
  const item = el("li", "step");
  item.setAttribute("data-testid", "workflow-step");
  item.dataset.status = step.status;
  item.dataset.name = step.name;
  item.dataset.kind = step.kind;
  const icon = el("span", "step__icon", STEP_ICONS[step.status] ?? "•");
  icon.setAttribute("aria-hidden", "true");
  const name = el("span", "step__name", stepLabel(step));
  item.append(icon, name);
  if (step.kind === "agent" || step.kind === "value") item.append(el("span", "step__kind", step.kind));
  const status = el("span", "step__status", step.status);
  if (step.status === "completed") status.className = "visually-hidden";
  item.append(status);
  const meta = stepMeta(step);
  if (meta) item.append(el("span", "step__meta", meta));
  const detail = step.error || waitOutcome(step);
  if (detail) item.append(el("p", step.error ? "step__error" : "step__detail", detail));
  return item;
}

/** "wait:approval" reads better as "wait for approval"; other names are the workflow's own. */
function stepLabel(step) {
  if (step.kind === "wait" && step.name.startsWith("wait:")) return `wait for ${step.name.slice(5)}`;
  return step.name;
}

function stepMeta(step) {
  const parts = [];
  if (step.attempts > 1) parts.push(`${step.attempts} attempts`);
  if (step.status === "waiting" && step.until_ms) {
    parts.push(`${step.kind === "sleep" ? "until" : "expires"} ${formatMoment(step.until_ms)}`);
  } else if (step.duration_ms != null && step.status !== "running" && step.kind !== "value") {
    parts.push(formatDuration(step.duration_ms));
  }
  return parts.join(" · ");
}

/** What a finished wait received: its payload, compact, or that it timed out. */
function waitOutcome(step) {
  if (step.kind !== "wait" || step.status !== "completed") return "";
  const result = step.result && typeof step.result === "object" ? step.result : {};
  if (result.timed_out) return "timed out";
  const text = JSON.stringify(result.payload ?? null);
  return text.length > 160 ? `${text.slice(0, 159)}…` : text;
}

function formatDuration(ms) {
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 60) return `${minutes} min ${Math.round((ms % 60_000) / 1_000)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** A moment in local time: the time alone today, with the date otherwise. */
function formatMoment(ms) {
  const date = new Date(ms);
  return date.toDateString() === new Date().toDateString()
    ? timeFormat.format(date)
    : fullFormat.format(date);
}

// --- Agent picker -----------------------------------------------------------------

let agentPickerSignature = "";

/** Chat agents and workflows, in two groups; test-only workflows stay out of it. */
function renderAgentPicker() {
  const listed = state.agents.filter((agent) => !agent.name.startsWith("test_"));
  const agents = listed.length
    ? listed
    : [{ name: DEFAULT_AGENT, kind: "chat", description: "" }];
  if (!agents.some((agent) => agent.name === state.agent)) {
    state.agent = agents.some((agent) => agent.name === DEFAULT_AGENT) ? DEFAULT_AGENT : agents[0].name;
  }
  const signature = JSON.stringify(agents.map((agent) => [agent.name, agent.kind, agent.description]));
  if (signature !== agentPickerSignature) {
    agentPickerSignature = signature;
    const groups = [["chat", "Chat"], ["workflow", "Workflows"]].map(([kind, label]) => {
      const group = document.createElement("optgroup");
      group.label = label;
      for (const agent of agents.filter((candidate) => (candidate.kind ?? "chat") === kind)) {
        const option = el("option", "", agent.name);
        option.value = agent.name;
        option.title = agent.description ?? "";
        group.append(option);
      }
      return group;
    });
    dom.agent.replaceChildren(...groups.filter((group) => group.children.length));
  }
  dom.agent.value = state.agent;
  dom.agent.title = agents.find((agent) => agent.name === state.agent)?.description ?? "";
}

// --- Thread list --------------------------------------------------------------

function renderThreadList() {
  const rows = state.threads.map((thread) => ({
    id: thread.id,
    title: thread.title || "Untitled thread",
    when: formatWhen(thread.updated_at),
    messages: thread.messages ?? 0,
    active: Boolean(thread.active_run),
  }));
  // Rebuild only on change: a rebuild every 5 s would steal keyboard focus for nothing.
  const signature = JSON.stringify([state.threadId, rows]);
  if (signature !== threadListSignature) {
    threadListSignature = signature;
    const focusedId = document.activeElement?.closest?.("[data-thread-id]")?.dataset.threadId;
    dom.threadList.replaceChildren(...rows.map(threadItem));
    if (focusedId) {
      dom.threadList.querySelector(`[data-thread-id="${CSS.escape(focusedId)}"]`)?.focus();
    }
  }
  dom.threadListEmpty.hidden = rows.length > 0;
  setText(dom.threadListEmpty, state.threadsFailed ? "Couldn't load threads." : "No threads yet.");
}

/** A plain link: the hash change opens the thread, and it can be copied or opened in a new tab. */
function threadItem(row) {
  const link = el("a", "thread");
  link.href = `#${encodeURIComponent(row.id)}`;
  link.dataset.threadId = row.id;
  if (row.id === state.threadId) link.setAttribute("aria-current", "page");
  const title = el("span", "thread__title", row.title);
  const meta = el("span", "thread__meta");
  if (row.active) {
    const dot = el("span", "thread__active");
    dot.title = "Answering";
    dot.append(el("span", "visually-hidden", "Answering,"));
    meta.append(dot);
  }
  meta.append(document.createTextNode([row.when, plural(row.messages, "message")]
    .filter(Boolean).join(" · ")));
  link.append(title, meta);
  const item = el("li");
  item.append(link);
  return item;
}

// --- Scrolling, errors, announcements --------------------------------------------

function isNearBottom() {
  const { scrollHeight, scrollTop, clientHeight } = dom.scroller;
  return scrollHeight - scrollTop - clientHeight < 48;
}

function scrollToBottom() {
  dom.scroller.scrollTop = dom.scroller.scrollHeight;
  dom.jump.hidden = true;
}

function onScroll() {
  stickToBottom = isNearBottom();
  dom.jump.hidden = stickToBottom;
}

function showError(message) {
  setText(dom.errorText, message);
  dom.errorBanner.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(hideError, ERROR_VISIBLE_MS);
}

function hideError() {
  dom.errorBanner.hidden = true;
}

/** Clear first, then set a moment later, so the same phrase twice is announced twice. */
function announce(text) {
  dom.announcer.textContent = "";
  setTimeout(() => {
    dom.announcer.textContent = text;
  }, 100);
}

// ---------------------------------------------------------------------------
// 6. Wiring
// ---------------------------------------------------------------------------

function collectDom() {
  const byId = (id) => document.getElementById(id);
  return {
    threadList: byId("thread-list"),
    threadListEmpty: byId("thread-list-empty"),
    newThread: byId("new-thread"),
    title: byId("thread-title"),
    connection: byId("connection-status"),
    errorBanner: byId("error-banner"),
    errorText: byId("error-text"),
    errorDismiss: byId("error-dismiss"),
    scroller: byId("messages"),
    empty: byId("empty-state"),
    emptyTitle: byId("empty-title"),
    emptyBody: byId("empty-body"),
    messageList: byId("message-list"),
    jump: byId("jump-to-latest"),
    composer: byId("composer"),
    input: byId("message-input"),
    agent: byId("agent-select"),
    send: byId("send-button"),
    stop: byId("stop-button"),
    stopLabel: byId("stop-label"),
    announcer: byId("announcer"),
  };
}

/** Grow the textarea with its text (CSS caps the height) and keep the send button in step. */
function onInputChanged() {
  const input = dom.input;
  input.style.height = "auto";
  const borders = input.offsetHeight - input.clientHeight;
  input.style.height = `${input.scrollHeight + borders}px`;
  renderControls();
}

function onInputKeydown(event) {
  // isComposing: Enter that confirms an IME composition (Japanese, Chinese…) must not send.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  sendFromComposer();
}

function wire() {
  dom.newThread.addEventListener("click", startNewThread);
  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendFromComposer();
  });
  dom.input.addEventListener("input", onInputChanged);
  dom.input.addEventListener("keydown", onInputKeydown);
  dom.agent.addEventListener("change", () => {
    state.agent = dom.agent.value;
    renderAgentPicker();
  });
  dom.stop.addEventListener("click", stopActiveRun);
  dom.messageList.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (button && !button.disabled) onMessageAction(button);
  });
  dom.errorDismiss.addEventListener("click", hideError);
  dom.scroller.addEventListener("scroll", onScroll, { passive: true });
  dom.jump.addEventListener("click", () => {
    stickToBottom = true;
    scrollToBottom();
  });
  // The log shrinks when the composer grows or the window resizes: stay at the bottom.
  new ResizeObserver(() => {
    if (stickToBottom) scrollToBottom();
  }).observe(dom.scroller);

  window.addEventListener("hashchange", () => openThread(threadIdFromHash()));
  window.addEventListener("online", () => {
    state.live?.wake();
    refreshThreads();
  });
  window.addEventListener("offline", () => state.live?.pause());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshThreads();
  });
  setInterval(() => {
    // No point polling for a list nobody can see; visibilitychange catches up on return.
    if (!document.hidden) refreshThreads();
  }, THREADS_REFRESH_MS);
}

function start() {
  dom = collectDom();
  wire();
  setConnection("offline");
  renderAgentPicker();
  loadAgents();
  refreshThreads();
  openThread(threadIdFromHash());
  scheduleRender();
}

// Guarded so the fold above can be imported and tested under Node, where there is no page.
if (typeof document !== "undefined") start();
