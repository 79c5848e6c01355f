/**
 * The composer: typing, sending (optimistically, with retries that the
 * client_id makes safe), and stopping. Enter sends, Shift+Enter is a new line,
 * Esc anywhere in the page stops the answer being written; "@" opens the list
 * of agents to mention (mentions.js).
 */

import * as http from "./api.js";
import { followDraft, knownAgent, loadAgents, mentionsIn, pickOverridesMentions } from "./agents.js";
import { followNewest, replyParent } from "./answers.js";
import { forgetStop, navigate } from "./conversation.js";
import { dom, setText } from "./dom.js";
import { wireMentions } from "./mentions.js";
import { showError } from "./notices.js";
import { stickToBottom } from "./scroll.js";
import { scheduleRender, state } from "./state.js";
import { createThreadOnce } from "./threads.js";

const LEADING_MENTION = /^@(\S+)(?:\s+|$)/;
const MAX_AGENTS = 8; // the server's MAX_AGENTS_PER_MESSAGE, which its router keeps to as well

/**
 * What the composer would send. The agents the text @mentions get it, as the
 * server's router would send it (one: `agent`; several: `agents`, each answering
 * at once); mentions at the start only address it and are taken off its text.
 * With no mention, or once the picker was changed by hand over them, the
 * picker's agent gets it.
 */
function composerDraft(text, picked = pickOverridesMentions()) {
  let content = text.trim();
  if (picked) return { agent: state.agent, agents: null, content };
  const agents = mentionsIn(content).slice(0, MAX_AGENTS);
  for (let mention = LEADING_MENTION.exec(content); mention && knownAgent(mention[1]);
    mention = LEADING_MENTION.exec(content)) {
    content = content.slice(mention[0].length).trim();
  }
  if (agents.length > 1) return { agent: agents[0], agents, content };
  return { agent: agents[0] ?? state.agent, agents: null, content };
}

function sendFromComposer() {
  const text = dom.input.value;
  if (!composerDraft(text).content || state.missing) return;
  const picked = pickOverridesMentions(); // as it is now: clearing the box forgets it
  dom.input.value = "";
  onInputChanged();
  dom.input.focus(); // clicking Send moved focus to a button that may now be hidden
  stickToBottom(true);
  // A mention can only be told from text once the agents are known: wait for them, briefly.
  const mention = text.includes("@");
  if (mention && !state.agentsLoaded) loadAgents().then(() => queueMessage(text, picked));
  else queueMessage(text, picked);
}

function queueMessage(text, picked) {
  const { agent, agents, content } = composerDraft(text, picked);
  if (!content) return;
  // Paged back to an earlier branch, the message goes on from there; one sent before the
  // last such message was accepted goes on from that one, once its id is known (else
  // both would hang from the same message, as two versions).
  const before = [...state.outbox.values()]
    .filter((other) => other.threadId === state.threadId && other.threadId && !other.messageId
      && other.status !== "failed")
    .at(-1);
  const branching = before ? Boolean(before.parentId || before.follows) : false;
  const entry = {
    clientId: http.newClientId(),
    threadId: state.threadId, // null: the thread gets created on the way
    content,
    agent,
    agents,
    parentId: before ? null : replyParent(state.view),
    follows: branching ? before : null,
    createdAt: Date.now(),
    status: "pending",
    error: null,
    messageId: null,
  };
  state.outbox.set(entry.clientId, entry);
  entry.delivered = deliver(entry);
}

/**
 * Resend `message` (a user message of the open thread) as `text`: a new version of it,
 * to the agents it went to (or the router again, if the router chose), answered afresh.
 */
export function sendEdit(message, text) {
  const content = text.trim();
  if (!content || !state.threadId) return false;
  const routed = message.routed;
  const picked = !routed || routed.by === "pick";
  const agents = picked && routed?.agents?.length > 1 ? [...routed.agents] : null;
  const entry = {
    clientId: http.newClientId(),
    threadId: state.threadId,
    content,
    agent: picked ? message.agent : null,
    agents,
    editOf: message.id,
    createdAt: Date.now(),
    status: "pending",
    error: null,
    messageId: null,
  };
  followNewest(message.parent_id);
  state.outbox.set(entry.clientId, entry);
  stickToBottom(true);
  deliver(entry);
  return true;
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
    const body = { content: entry.content, client_id: entry.clientId };
    if (entry.agents) body.agents = entry.agents; // one answer from each, at once
    else if (entry.agent) body.agent = entry.agent; // none: the router decides
    if (entry.follows) await entry.follows.delivered;
    const parentId = entry.follows?.messageId ?? entry.parentId;
    // An edit makes what answers the old version moot: it stops a run holding its
    // agent (one waiting for an approval no longer shown would hold the edit forever).
    if (entry.editOf) Object.assign(body, { edit_of: entry.editOf, on_busy: "interrupt" });
    else if (parentId) body.parent_id = parentId;
    const accepted = await http.withRetries(() => http.sendMessage(entry.threadId, body));
    entry.messageId = accepted?.message_id ?? null;
  } catch (error) {
    entry.status = "failed";
    entry.error = error.message;
  }
  scheduleRender();
}

/** The buttons on a message that failed to send: try again with the same client_id, or drop it. */
export function onFailedMessageAction(action, clientId) {
  const entry = state.outbox.get(clientId);
  if (entry?.status !== "failed") return;
  if (action === "retry") {
    deliver(entry);
  } else if (action === "discard") {
    state.outbox.delete(clientId);
    scheduleRender();
  }
}

/**
 * The run Stop would stop: one writing an answer (running, or about to retry),
 * else one queued to write one. Never a run parked on a wait (a person's
 * approval, a signal, a timer): nothing is being written, the person may answer
 * with Send, and the wait's card or panel says what it waits for.
 */
function stoppableRunId() {
  if (state.missing || !state.view) return null;
  const runs = Object.values(state.view.runs);
  const busy = runs.find((run) => ["running", "retrying"].includes(run.status));
  return (busy ?? runs.find((run) => run.status === "queued"))?.id ?? null;
}

export function stopActiveRun() {
  return stopRun(stoppableRunId());
}

/** Cancel a run: the one answering (Stop), or one parked on a wait (its panel's Cancel). */
export async function stopRun(runId) {
  if (!runId || state.stoppingRun === runId) return;
  state.stoppingRun = runId;
  scheduleRender();
  try {
    const clientId = http.newClientId(); // one per Stop: its resends are the same cancel
    const answer = await http.withRetries(() => http.cancelRun(runId, clientId));
    // "cancel_requested": its worker stops it, and "Stopping…" lasts until run.cancelled ends it.
    // "cancelled": it ended on the spot (it was queued or retrying); run.cancelled is on its way.
    if (answer?.status === "cancelled") forgetStop(runId);
  } catch (error) {
    forgetStop(runId);
    // 409: it finished before the cancel arrived, and its own events say how.
    if (error.status !== 409) showError(`Couldn't stop the answer: ${error.message}`);
  }
  scheduleRender();
}

/**
 * While the thread answers, Stop is the primary action and takes Send's place;
 * Send comes back beside it as soon as there is text, to queue a message.
 */
export function renderControls() {
  const runId = stoppableRunId();
  const stopping = runId !== null && state.stoppingRun === runId;
  const hasText = Boolean(composerDraft(dom.input.value).content);
  const stopFocused = document.activeElement === dom.stop;
  dom.stop.hidden = runId === null;
  dom.stop.disabled = stopping;
  setText(dom.stopLabel, stopping ? "Stopping…" : "Stop");
  dom.send.hidden = runId !== null && !hasText;
  dom.send.disabled = !hasText || Boolean(state.missing);
  dom.send.classList.toggle("button--primary", runId === null);
  dom.send.classList.toggle("button--quiet", runId !== null);
  dom.send.setAttribute("aria-label", runId === null ? "Send message" : "Queue message");
  if (stopFocused && dom.stop.hidden) dom.input.focus(); // don't strand focus
}

/** Grow the textarea with its text (CSS caps the height) and keep the buttons in step. */
function onInputChanged() {
  const input = dom.input;
  input.style.height = "auto";
  const borders = input.offsetHeight - input.clientHeight;
  input.style.height = `${input.scrollHeight + borders}px`;
  followDraft();
  renderControls();
}

/** Put `text` in the composer, as if typed (an example from the empty thread). */
export function fillComposer(text) {
  dom.input.value = text;
  onInputChanged();
  dom.input.focus();
  dom.input.setSelectionRange(text.length, text.length);
}

function onInputKeydown(event) {
  // defaultPrevented: the mention list took the key. isComposing: Enter that
  // confirms an IME composition (Japanese, Chinese…) must not send.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.defaultPrevented) return;
  event.preventDefault();
  sendFromComposer();
}

/**
 * Esc stops the answer being written, wherever focus is, unless something closer
 * used the key (a list, a dialog: Esc closes those). Shift+Esc is a shortcut of
 * its own (shortcuts.js). A run parked on a wait is never stopped by it.
 */
function onPageKeydown(event) {
  if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
  if (event.shiftKey || event.target?.closest?.("dialog")) return;
  if (!stoppableRunId()) return;
  event.preventDefault();
  stopActiveRun();
}

export function wireComposer() {
  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendFromComposer();
  });
  wireMentions(dom.input); // before the Enter that sends: a pick in the list takes it
  dom.input.addEventListener("input", onInputChanged);
  dom.input.addEventListener("keydown", onInputKeydown);
  dom.stop.addEventListener("click", stopActiveRun);
  document.addEventListener("keydown", onPageKeydown);
}
