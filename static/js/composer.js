/**
 * The composer: typing, sending (optimistically, with retries that the
 * client_id makes safe), and stopping. Enter sends, Shift+Enter is a new line,
 * Esc anywhere in the page stops the answer being written.
 */

import * as http from "./api.js";
import { knownAgent, loadAgents } from "./agents.js";
import { forgetStop, navigate } from "./conversation.js";
import { dom, setText } from "./dom.js";
import { activeRunId, findRun } from "./fold.js";
import { showError } from "./notices.js";
import { stickToBottom } from "./scroll.js";
import { scheduleRender, state } from "./state.js";
import { createThreadOnce } from "./threads.js";
import { waitingCall } from "./tools.js";

/**
 * What the composer would send: a message that starts with "@name " (a known
 * agent) goes to that agent without the mention, and one that starts with several
 * ("@writer @critic …") to all of them at once (`agents`); anything else to the
 * picker's agent.
 */
function composerDraft(text) {
  let content = text.trim();
  const agents = [];
  for (let mention = /^@(\S+)(?:\s+|$)/.exec(content); mention && knownAgent(mention[1]);
    mention = /^@(\S+)(?:\s+|$)/.exec(content)) {
    if (!agents.includes(mention[1])) agents.push(mention[1]);
    content = content.slice(mention[0].length).trim();
  }
  if (agents.length > 1) return { agent: agents[0], agents, content };
  return { agent: agents[0] ?? state.agent, agents: null, content };
}

function sendFromComposer() {
  const text = dom.input.value;
  if (!composerDraft(text).content || state.missing) return;
  dom.input.value = "";
  onInputChanged();
  dom.input.focus(); // clicking Send moved focus to a button that may now be hidden
  stickToBottom(true);
  // A mention can only be told from text once the agents are known: wait for them, briefly.
  const mention = text.trim().startsWith("@");
  if (mention && !state.agentsLoaded) loadAgents().then(() => queueMessage(text));
  else queueMessage(text);
}

function queueMessage(text) {
  const { agent, agents, content } = composerDraft(text);
  if (!content) return;
  const entry = {
    clientId: http.newClientId(),
    threadId: state.threadId, // null: the thread gets created on the way
    content,
    agent,
    agents,
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
    const body = { content: entry.content, client_id: entry.clientId };
    if (entry.agents) body.agents = entry.agents; // one answer from each, at once
    else if (entry.agent) body.agent = entry.agent; // none: the router decides
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
 * The run Stop would stop: the thread's active one, as the server picks it, but
 * not one that only waits for a person to approve a tool call; that one is
 * answered on its card, and a run working beside it can still be stopped.
 */
function stoppableRunId() {
  if (state.missing || !state.view) return null;
  const runId = activeRunId(state.view);
  if (!waitingCall(findRun(state.view, runId))) return runId;
  const runs = Object.values(state.view.runs);
  const busy = runs.find((run) => ["running", "retrying"].includes(run.status)
    || (run.status === "waiting" && !waitingCall(run)));
  return (busy ?? runs.find((run) => run.status === "queued"))?.id ?? null;
}

export async function stopActiveRun() {
  const runId = stoppableRunId();
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
  dom.newThread.disabled = state.creatingThread;
  if (stopFocused && dom.stop.hidden) dom.input.focus(); // don't strand focus
}

/** Grow the textarea with its text (CSS caps the height) and keep the buttons in step. */
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

/**
 * Esc stops the answer, wherever focus is, unless something closer used the key.
 * Not a workflow parked on a wait, though: that may have waited for days, and a
 * stray Esc shouldn't end it (its Stop button still does).
 */
function onPageKeydown(event) {
  if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
  const run = state.missing ? null : findRun(state.view, stoppableRunId());
  if (!run || run.status === "waiting") return;
  event.preventDefault();
  stopActiveRun();
}

export function wireComposer() {
  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendFromComposer();
  });
  dom.input.addEventListener("input", onInputChanged);
  dom.input.addEventListener("keydown", onInputKeydown);
  dom.stop.addEventListener("click", stopActiveRun);
  document.addEventListener("keydown", onPageKeydown);
}
