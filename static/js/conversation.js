/**
 * The open conversation: which thread the URL names, its live socket, and
 * folding its snapshot and events into state.view.
 */

import { answersTo } from "./answers.js";
import { setConnection } from "./header.js";
import { inspectorEvent, inspectorThreadChanged } from "./inspector.js";
import { activeRunId, applyEvent, findRun, laterEventId, normaliseView, replyOf } from "./fold.js";
import { liveThread } from "./live.js";
import { clearMessages } from "./messages.js";
import { waitingLabel } from "./labels.js";
import { announce, showError } from "./notices.js";
import { stickToBottom } from "./scroll.js";
import { RUN_ENDED, RUN_RETRYABLE, scheduleRender, state } from "./state.js";
import { patchSummary } from "./threads.js";

const THREAD_ID = /^[A-Za-z0-9_-]{1,64}$/; // the API's thread id pattern

function hashText() {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return ""; // a malformed hash names nothing
  }
}

/** The URL's #fragment names an element of the page (#message-input): a place, not a thread. */
export function pageAnchor() {
  const id = hashText();
  return Boolean(id) && document.getElementById(id) !== null;
}

/** The thread the URL names, or null: none, not shaped like a thread id, or a page anchor. */
export function threadIdFromHash() {
  const id = hashText();
  return THREAD_ID.test(id) && !pageAnchor() ? id : null;
}

/** Open a thread and record it in the URL, so reload and shared links come back to it. */
export function navigate(threadId) {
  openThread(threadId);
  const target = threadId ? `#${encodeURIComponent(threadId)}` : location.pathname + location.search;
  if (threadIdFromHash() !== threadId) history.pushState(null, "", target);
}

export function openThread(threadId) {
  if (threadId === state.threadId) return;
  state.live?.stop();
  Object.assign(state, {
    threadId,
    view: null,
    live: null,
    missing: null,
    stoppingRun: null,
    retryingRuns: new Map(),
    regenerating: new Map(),
    answerChoice: new Map(),
    versionChoice: new Map(),
    editing: null,
    openDetails: new Set(),
    signalling: new Map(),
  });
  clearMessages();
  stickToBottom(true);
  inspectorThreadChanged();
  scheduleRender();
  if (!threadId) {
    setConnection("offline");
    return;
  }
  state.live = liveThread(threadId, {
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
  settle(view);
  patchSummary(view);
  inspectorThreadChanged();
  scheduleRender();
}

function receiveEvent(id, event) {
  const view = state.view;
  if (!view || !event) return; // events only ever follow a snapshot or our own cursor
  const before = assistantReply(view, event)?.status;
  if (!applyEvent(view, id, event)) return;
  inspectorEvent(id, event);
  if (event.type === "message.sent" && event.client_id) {
    state.outbox.delete(event.client_id); // the optimistic copy is now the real one
  }
  announceChange(before, assistantReply(view, event)?.status, findRun(view, event.run_id));
  settle(view);
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

/** The live region hears when an answer starts and ends, never its tokens. */
function announceChange(before, after, run) {
  if (!after || after === before) return;
  if (after === "streaming" && before === "pending") announce("Answer started");
  else if (after === "waiting") announce(waitingLabel(run));
  else if (after === "pending" && RUN_RETRYABLE.includes(before)) announce("Answer queued again");
  else if (ANNOUNCEMENTS[after]) announce(ANNOUNCEMENTS[after]);
}

/**
 * Drop the "in progress" marks the events have made moot: "Stopping…" lasts
 * until the run ends (so a run retried later doesn't start out "Stopping…"),
 * "Regenerating…" until the new run shows.
 */
function settle(view) {
  const stopping = findRun(view, state.stoppingRun);
  if (stopping && RUN_ENDED.includes(stopping.status)) state.stoppingRun = null;
  if (!activeRunId(view)) state.stoppingRun = null;
  for (const [runId, answers] of state.regenerating) {
    if (answersTo(view, findRun(view, runId)?.message_id) > answers) state.regenerating.delete(runId);
  }
}

export function forgetStop(runId) {
  if (state.stoppingRun === runId) state.stoppingRun = null;
}
