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
    runs: view.runs ?? {},
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
  // Steps, timers, tools and signals don't change this view yet.
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
  if (reply && event.attempt !== reply.attempt) {
    // A new attempt writes the answer again: show only the current attempt's text.
    restartReply(reply, event.attempt);
    reply.status = "streaming";
  }
}

function messageDelta(view, event) {
  const reply = findMessage(view, event.message_id);
  const attempt = event.attempt ?? 1;
  if (!reply || attempt < reply.attempt) return;
  if (attempt > reply.attempt) restartReply(reply, attempt);
  if (event.seq !== reply.seq + 1) return; // a duplicate, or a gap the writer never leaves
  reply.content += event.text;
  reply.seq = event.seq;
  reply.status = "streaming";
}

function messageCompleted(view, event) {
  const reply = findMessage(view, event.message_id);
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
    const reply = findMessage(view, run.reply_id);
    if (reply && reply.status !== "completed") reply.status = messageStatus;
  };
}

/** The attempt failed and another follows: the answer is due again, its old text stays until then. */
function runRetrying(view, event) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  run.status = "retrying";
  run.reason = event.reason;
  const reply = findMessage(view, run.reply_id);
  if (reply) reply.status = "pending";
}

/**
 * A failed or cancelled run asked to run again. Its text stays until run.started
 * brings a new attempt number and resets it, as for any new attempt.
 */
function runRestarted(view, event) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  Object.assign(run, { status: "queued", reason: null, ended_at: null });
  const reply = findMessage(view, run.reply_id);
  if (reply) reply.status = "pending";
}

function runWaiting(view, event) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  run.status = "waiting";
  run.waiting_for = event.waiting_for;
  const reply = findMessage(view, run.reply_id);
  if (reply) reply.status = "waiting";
}

function runResumed(view, event) {
  const run = findRun(view, event.run_id);
  if (!run) return;
  run.status = "running";
  run.waiting_for = null;
  const reply = findMessage(view, run.reply_id);
  if (reply?.status === "waiting") reply.status = "streaming";
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
  ["run.retrying", runRetrying],
  ["run.waiting", runWaiting],
  ["run.resumed", runResumed],
  ["run.restarted", runRestarted],
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
  creatingThread: false,
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
    threadId, view: null, live: null, missing: null, stoppingRun: null, retryingRuns: new Map(),
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
  announceChange(before, assistantReply(view, event)?.status);
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

function announceChange(before, after) {
  if (!after || after === before) return;
  if (after === "streaming" && before === "pending") announce("Answer started");
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

function sendFromComposer() {
  const content = dom.input.value.trim();
  if (!content || state.missing) return;
  const entry = {
    clientId: newClientId(),
    threadId: state.threadId, // null: the thread gets created on the way
    content,
    createdAt: Date.now(),
    status: "pending",
    error: null,
    messageId: null,
  };
  state.outbox.set(entry.clientId, entry);
  dom.input.value = "";
  onInputChanged();
  dom.input.focus(); // clicking Send moved focus to a button that is now disabled
  stickToBottom = true;
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
    const body = { content: entry.content, client_id: entry.clientId };
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
  if (button.dataset.action === "retry-run") retryRun(message.dataset.runId);
  else onFailedMessageAction(button.dataset.action, message.dataset.clientId);
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
  dom.send.disabled = !dom.input.value.trim() || Boolean(state.missing);
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
  const used = new Set();
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
    updateMessageParts(parts, message, run, activeRun);
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
  dom.messageList.replaceChildren();
}

function createMessageParts() {
  const node = el("article", "message");
  node.setAttribute("data-testid", "message");
  const meta = el("header", "message__meta");
  const author = el("span", "message__author");
  const time = el("time", "message__time");
  const status = el("span", "message__status");
  meta.append(author, time, status);
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
  return { node, author, time, status, content, note, actions, retrySend, discard, retryRun };
}

function actionButton(action, text) {
  const button = el("button", "message__action", text);
  button.type = "button";
  button.dataset.action = action;
  return button;
}

function updateMessageParts(parts, message, run, activeRun) {
  const { node } = parts;
  node.dataset.role = message.role;
  node.dataset.status = message.status;
  node.dataset.messageId = message.id ?? "";
  if (message.client_id) node.dataset.clientId = message.client_id;
  else delete node.dataset.clientId;
  node.dataset.runStatus = run?.status ?? "";
  node.dataset.runId = message.role === "assistant" ? message.run_id ?? "" : "";

  setText(parts.author, message.role === "user" ? "You" : message.agent || run?.agent || "Assistant");
  updateTime(parts.time, message.created_at);
  const label = statusLabel(message, run, activeRun);
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

function statusLabel(message, run, activeRun) {
  if (message.role === "user") {
    return { pending: "Sending…", failed: "Not sent" }[message.status] ?? "";
  }
  if (run?.status === "retrying" && !RUN_ENDED.includes(message.status)) {
    return "Retrying…";
  }
  switch (message.status) {
    case "pending":
      return pendingLabel(run, activeRun);
    case "streaming":
      return "Writing…";
    case "waiting":
      return run?.waiting_for ? `Waiting for ${run.waiting_for}` : "Waiting";
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
  if (run?.status === "running") return "Thinking…";
  if (run?.status === "queued" && activeRun && activeRun !== run.id) {
    return "Queued — waits for the answer before it";
  }
  return "Waiting for a worker…";
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
  refreshThreads();
  openThread(threadIdFromHash());
  scheduleRender();
}

// Guarded so the fold above can be imported and tested under Node, where there is no page.
if (typeof document !== "undefined") start();
