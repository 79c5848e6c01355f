/**
 * The conversation's messages, updated in place rather than rebuilt: streaming
 * re-renders every frame, and rebuilding would lose focus and scroll position.
 *
 * User text only ever goes through textContent. Assistant text goes through
 * markdown.js, which sanitises it, at most once per frame (the render loop's).
 */

import { regeneratePending, retryPending } from "./actions.js";
import { shownMessages } from "./answers.js";
import { dom, el, icon, setText } from "./dom.js";
import { findRun, newMessage } from "./fold.js";
import { showExplained } from "./failures.js";
import { fullFormat, timeFormat } from "./format.js";
import { messagePhase, noteText, statusLabel } from "./labels.js";
import { markdownVersion, renderMarkdown } from "./markdown.js";
import { DEFAULT_AGENT, RUN_RETRYABLE, state } from "./state.js";
import { createActivityParts, updateActivity } from "./tools.js";
import { hasPanel, placePanel, runPanels } from "./workflows.js";

const messageNodes = new Map(); // render key → the parts of one message element

/** The open thread's messages as shown, then its optimistic ones still on their way. */
function visibleMessages() {
  const { shown: branch, places, versions } = shownMessages(state.view);
  const pending = [...state.outbox.values()].filter((entry) => entry.threadId === state.threadId);
  // An edit on its way takes the place of the message it revises, and of what followed.
  const cut = pending
    .map((entry) => branch.findIndex((message) => message.id === entry.editOf))
    .filter((index) => index >= 0);
  const shown = cut.length ? branch.slice(0, Math.min(...cut)) : branch;
  const optimistic = pending
    .map((entry) => newMessage({
      id: entry.messageId ?? "",
      role: "user",
      agent: entry.agents ? entry.agents.join(", ") : entry.agent,
      content: entry.content,
      status: entry.status,
      client_id: entry.clientId,
      created_at: entry.createdAt,
      error: entry.error,
      local: true,
    }));
  return { messages: [...shown, ...optimistic], places, versions };
}

export function renderMessages() {
  const { messages, places, versions } = visibleMessages();
  const lastOfRun = new Map(); // run id → its last message: a workflow's agent turns add more
  const turnOf = new Map(); // message → its place among its run's messages (hand-offs add them)
  const turns = new Map();
  for (const message of messages) {
    if (message.role !== "assistant" || !message.run_id) continue;
    lastOfRun.set(message.run_id, message);
    const turn = turns.get(message.run_id) ?? 0;
    turnOf.set(message, turn);
    turns.set(message.run_id, turn + 1);
  }
  // Each agent's latest answer may be written again, once nothing runs in its lane.
  const latestOfAgent = new Map(); // a run's agent (its lane) → that agent's latest answer
  for (const message of messages) {
    const run = message.role === "assistant" && state.view ? findRun(state.view, message.run_id) : null;
    if (run) latestOfAgent.set(run.agent, message);
  }
  const used = new Set();
  const usedPanels = new Set();
  let previous = null;
  for (const message of messages) {
    const key = messageKey(message, used);
    used.add(key);
    let parts = messageNodes.get(key);
    if (!parts) {
      parts = createMessageParts();
      messageNodes.set(key, parts);
    }
    const run = state.view ? findRun(state.view, message.run_id) : null;
    const last = message.role === "assistant" && lastOfRun.get(message.run_id) === message;
    const context = {
      last,
      place: last ? places.get(message.run_id) ?? null : null,
      regenerable: last && run?.status === "completed" && latestOfAgent.get(run.agent) === message
        && !laneBusy(run.agent),
      turn: turnOf.get(message) ?? 0,
      version: message.role === "user" ? versions.get(message.id) ?? null : null,
    };
    updateMessageParts(parts, message, run, context);
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

/** A run of `agent` is queued, running or waiting in this thread. */
function laneBusy(agent) {
  return Object.values(state.view?.runs ?? {}).some((run) => run.agent === agent
    && ["queued", "running", "retrying", "waiting"].includes(run.status));
}

/**
 * User messages are keyed by client_id when they have one, so the optimistic
 * element simply becomes the confirmed one: no flicker, no duplicate.
 */
function messageKey(message, used) {
  const byClient = message.role === "user" && message.client_id ? `client:${message.client_id}` : null;
  return byClient && !used.has(byClient) ? byClient : `message:${message.id}`;
}

export function clearMessages() {
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
  const model = el("span", "message__model"); // which model wrote an answer
  model.setAttribute("data-testid", "answer-model");
  const time = el("time", "message__time");
  const status = el("span", "message__status");
  const activity = createActivityParts();
  meta.append(author, to, model, time, status, activity.usage);
  const content = el("div", "content");
  const typing = el("span", "typing");
  typing.setAttribute("aria-hidden", "true");
  typing.append(el("span"), el("span"), el("span"));
  const note = el("div", "message__note"); // a div: it may hold a <details>
  const actions = el("div", "message__actions");
  const copy = actionButton("copy", "Copy", "copy", "Copy the answer as markdown");
  // On a message one sent: a new version of it, answered afresh on a branch of its own.
  const edit = actionButton("edit", "Edit", "edit", "Edit and resend this message");
  const versions = el("div", "answers versions");
  versions.setAttribute("role", "group");
  const previousVersion = actionButton("previous-version", "", "previous", "Previous version");
  const versionPosition = el("span", "answers__position");
  const nextVersion = actionButton("next-version", "", "next", "Next version");
  versions.append(previousVersion, versionPosition, nextVersion);
  const editor = createEditor();
  const details = createDetails();
  // For the last answer of a finished run: a new answer to the same message.
  const regenerate = actionButton("regenerate", "Regenerate", "regenerate", "Regenerate: write a new answer");
  // For an answer that failed or was stopped: the run can run again, from scratch.
  const retryRun = actionButton("retry-run", "Retry", "retry", "Retry this answer");
  // For a message that failed to send: it isn't in the thread, so the reader decides.
  const retrySend = actionButton("retry", "Try again");
  const discard = actionButton("discard", "Discard");
  const pager = el("div", "answers");
  pager.setAttribute("role", "group");
  const previousAnswer = actionButton("previous-answer", "", "previous", "Previous answer");
  const position = el("span", "answers__position");
  const nextAnswer = actionButton("next-answer", "", "next", "Next answer");
  pager.append(previousAnswer, position, nextAnswer);
  actions.append(versions, pager, copy, edit, regenerate, retryRun, retrySend, discard, details.toggle);
  node.append(
    meta, activity.routed, activity.tools, content, editor.form, typing, activity.handedOff, note,
    actions, details.panel,
  );
  return {
    node, author, to, model, time, status, content, note, actions, copy, regenerate, retryRun, activity,
    retrySend, discard, pager, previousAnswer, position, nextAnswer, rendered: null,
    edit, versions, previousVersion, versionPosition, nextVersion, editor, details,
  };
}

/** The form that edits a sent message in place: Enter (or Send) resends, Esc cancels. */
function createEditor() {
  const form = el("form", "message__editor");
  form.hidden = true;
  form.dataset.action = "edit-form";
  const label = el("label", "visually-hidden", "Edit your message");
  const input = el("textarea", "message__editor-input");
  input.rows = 3;
  input.setAttribute("data-testid", "edit-input");
  const inputId = `edit-${Math.random().toString(36).slice(2)}`;
  input.id = inputId;
  label.htmlFor = inputId;
  const buttons = el("div", "message__editor-buttons");
  const cancel = el("button", "button", "Cancel");
  cancel.type = "button";
  cancel.dataset.action = "edit-cancel";
  const send = el("button", "button button--primary", "Send");
  send.type = "submit";
  send.setAttribute("data-testid", "edit-send");
  buttons.append(cancel, send);
  form.append(label, input, buttons);
  return { form, input, messageId: null };
}

/** "Details" on an answer: agent, model, tokens, time to first token and in all. */
function createDetails() {
  const toggle = el("button", "message__action");
  toggle.type = "button";
  toggle.dataset.action = "details";
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("data-testid", "answer-details-toggle");
  toggle.append(icon("info"), el("span", "label", "Details"));
  const panel = el("dl", "message__details");
  panel.hidden = true;
  panel.setAttribute("data-testid", "answer-details");
  const panelId = `details-${Math.random().toString(36).slice(2)}`;
  panel.id = panelId;
  toggle.setAttribute("aria-controls", panelId);
  return { toggle, panel, signature: "" };
}

function actionButton(action, text, iconName = null, label = null) {
  const button = el("button", "message__action");
  button.type = "button";
  button.dataset.action = action;
  if (iconName) button.append(icon(iconName));
  if (text) button.append(el("span", "label", text));
  if (label) button.setAttribute("aria-label", label);
  if (label && !text) button.title = label;
  return button;
}

function updateMessageParts(parts, message, run, context) {
  const { node } = parts;
  const phase = messagePhase(message, run, context.last);
  node.dataset.role = message.role;
  node.dataset.status = message.status;
  node.dataset.phase = phase;
  node.dataset.messageId = message.id ?? "";
  if (message.client_id) node.dataset.clientId = message.client_id;
  else delete node.dataset.clientId;
  node.dataset.runStatus = run?.status ?? "";
  node.dataset.runId = message.role === "assistant" ? message.run_id ?? "" : "";
  if (context.place) node.dataset.answerOf = context.place.messageId;
  else delete node.dataset.answerOf;

  setText(parts.author, message.role === "user" ? "You" : message.agent || run?.agent || "Assistant");
  // Sent to several agents at once: the routing names them all.
  const addressed = message.routed?.agents?.length > 1 ? message.routed.agents.join(", ") : message.agent;
  const to = message.role === "user" && addressed && addressed !== DEFAULT_AGENT
    ? `to ${addressed}` : "";
  setText(parts.to, to);
  parts.to.hidden = !to;
  const modelName = message.role === "assistant" ? modelLabel(run?.model) : "";
  setText(parts.model, modelName);
  parts.model.hidden = !modelName;
  parts.model.title = run?.model === "scripted" ? "Slipstream's offline demo model: it does not really answer" : "";
  updateTime(parts.time, message.created_at);
  const label = statusLabel(message, phase, run);
  setText(parts.status, label);
  parts.status.hidden = !label;
  updateActivity(parts.activity, message, run, { turn: context.turn, lastOfRun: context.last });
  updateContent(parts, message, phase);
  updateEditor(parts, message);
  updateDetails(parts.details, message, run);
  const note = noteText(message, run);
  if (note.text) showExplained(parts.note, note);
  parts.note.hidden = !note.text;
  updateActions(parts, message, run, phase, context);
}

function updateEditor(parts, message) {
  const { editor } = parts;
  const editing = message.role === "user" && !message.local && state.editing === message.id;
  if (editing && editor.messageId !== message.id) {
    editor.messageId = message.id;
    editor.input.value = message.content ?? "";
    editor.form.hidden = false;
    editor.input.focus();
    editor.input.setSelectionRange(editor.input.value.length, editor.input.value.length);
  } else if (!editing && editor.messageId) {
    editor.messageId = null;
    editor.form.hidden = true;
  }
  parts.content.hidden = editing;
}

function modelLabel(model) {
  if (!model) return "";
  return model === "scripted" ? "offline demo model" : model;
}

/** What the details list says about an answer's run: the model, its tokens and its times. */
export function answerDetails(message, run) {
  if (message.role !== "assistant" || !run) return [];
  const rows = [["Agent", message.agent || run.agent]];
  if (run.model) rows.push(["Model", run.model === "scripted" ? "scripted (offline demo model)" : run.model]);
  const usage = run.usage ?? {};
  if (usage.calls) {
    rows.push(["Tokens in", usage.input_tokens.toLocaleString()]);
    rows.push(["Tokens out", usage.output_tokens.toLocaleString()]);
    if (usage.calls > 1) rows.push(["Model calls", String(usage.calls)]);
  }
  if (run.first_token_at && run.requested_at) {
    rows.push(["First token after", seconds(run.first_token_at - run.requested_at)]);
  }
  if (run.ended_at && run.requested_at) rows.push(["Total time", seconds(run.ended_at - run.requested_at)]);
  if (run.attempt > 1) rows.push(["Attempts", String(run.attempt)]);
  return rows;
}

function seconds(ms) {
  return ms < 1000 ? `${Math.max(0, ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function updateDetails(details, message, run) {
  const open = state.openDetails.has(message.id);
  details.toggle.setAttribute("aria-expanded", String(open));
  details.panel.hidden = !open;
  if (!open) return;
  const rows = answerDetails(message, run);
  const signature = JSON.stringify(rows);
  if (signature === details.signature) return;
  details.signature = signature;
  details.panel.replaceChildren(...rows.flatMap(([term, value]) => [
    el("dt", "message__details-term", term), el("dd", "message__details-value", value),
  ]));
}

function updateContent(parts, message, phase) {
  const text = message.content ?? "";
  if (message.role === "user") {
    setStreamingText(parts.content, text);
    return;
  }
  const streaming = phase === "streaming";
  const rendered = parts.rendered;
  if (rendered && rendered.text === text && rendered.streaming === streaming
      && rendered.version === markdownVersion()) return;
  renderMarkdown(parts.content, text, { streaming });
  parts.rendered = { text, streaming, version: markdownVersion() };
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

function updateActions(parts, message, run, phase, context) {
  const assistant = message.role === "assistant";
  const failedSend = Boolean(message.local && message.status === "failed");
  const retryable = assistant && Boolean(run)
    && RUN_RETRYABLE.includes(message.status) && RUN_RETRYABLE.includes(run.status);
  const retrying = retryable && retryPending(run);
  const copyable = !message.local && Boolean(message.content)
    && !["pending", "streaming"].includes(phase);
  const editable = message.role === "user" && !message.local && Boolean(message.id)
    && state.editing !== message.id && !state.missing;
  const described = assistant && Boolean(run);
  const version = context.version;
  const regenerating = context.regenerable && regeneratePending(run);
  const place = context.place;

  keepFocus(parts.retryRun, retryable);
  keepFocus(parts.regenerate, context.regenerable);
  parts.copy.hidden = !copyable;
  parts.copy.setAttribute("aria-label", assistant ? "Copy the answer as markdown" : "Copy your message");
  keepFocus(parts.edit, editable);
  parts.edit.hidden = !editable;
  parts.details.toggle.hidden = !described;
  parts.versions.hidden = !version;
  if (version) {
    setText(parts.versionPosition, `${version.index + 1} / ${version.count}`);
    parts.versions.setAttribute("aria-label", `Version ${version.index + 1} of ${version.count}`);
    parts.previousVersion.disabled = version.index === 0;
    parts.nextVersion.disabled = version.index === version.count - 1;
    parts.node.dataset.versionOf = version.parent;
  } else {
    delete parts.node.dataset.versionOf;
  }
  parts.regenerate.hidden = !context.regenerable;
  parts.regenerate.disabled = regenerating;
  setText(parts.regenerate.lastChild, regenerating ? "Regenerating…" : "Regenerate");
  parts.retrySend.hidden = !failedSend;
  parts.discard.hidden = !failedSend;
  parts.retryRun.hidden = !retryable;
  parts.retryRun.disabled = retrying;
  setText(parts.retryRun.lastChild, retrying ? "Retrying…" : "Retry");
  parts.retryRun.setAttribute("aria-label", retrying ? "Retrying this answer" : "Retry this answer");
  parts.pager.hidden = !place;
  if (place) {
    setText(parts.position, `${place.index + 1} / ${place.count}`);
    parts.pager.setAttribute("aria-label", `Answer ${place.index + 1} of ${place.count}`);
    parts.previousAnswer.disabled = place.index === 0;
    parts.nextAnswer.disabled = place.index === place.count - 1;
  }
  parts.actions.hidden = !copyable && !context.regenerable && !failedSend && !retryable && !place
    && !editable && !described && !version;
}

/** A control about to disappear hands focus to the composer rather than strand it. */
function keepFocus(control, staying) {
  if (!staying && document.activeElement === control) dom.input.focus();
}

function updateTime(element, ms) {
  if (!ms || element.dataset.ms === String(ms)) return;
  const date = new Date(ms);
  element.dataset.ms = String(ms);
  element.dateTime = date.toISOString();
  element.title = fullFormat.format(date);
  element.textContent = timeFormat.format(date);
}

export function renderEmptyState() {
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
