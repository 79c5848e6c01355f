/**
 * What the buttons on messages do: copy, regenerate, retry, page between
 * answers, and (delegated) workflow signals, tool approvals and failed sends.
 */

import * as http from "./api.js";
import { answerGroupKey, answersTo, pageAnswers, pageVersions } from "./answers.js";
import { copyFromButton } from "./clipboard.js";
import { onFailedMessageAction, sendEdit } from "./composer.js";
import { dom } from "./dom.js";
import { findMessage, findRun } from "./fold.js";
import { showError } from "./notices.js";
import { RUN_RETRYABLE, scheduleRender, state } from "./state.js";
import { isApprovalAction, onApprovalAction } from "./tools.js";
import { SIGNAL_ACTIONS, onSignalAction } from "./workflows.js";

export function wireMessageActions() {
  dom.messageList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button?.type === "submit") return; // the form's submit event handles it
    if (button && !button.disabled && dom.messageList.contains(button)) onMessageAction(button);
  });
  dom.messageList.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-action='edit-form']");
    if (!form) return;
    event.preventDefault();
    finishEdit(form);
  });
  dom.messageList.addEventListener("keydown", (event) => {
    const form = event.target.closest?.("form[data-action='edit-form']");
    if (!form || event.isComposing) return;
    if (event.key === "Escape") {
      event.stopPropagation(); // Esc here cancels the edit; it does not stop an answer
      cancelEdit();
    } else if (event.key === "Enter" && !event.shiftKey && event.target.tagName === "TEXTAREA") {
      event.preventDefault(); // Enter on Cancel or Send is that button's
      finishEdit(form);
    }
  });
}

function finishEdit(form) {
  const message = state.view ? findMessage(state.view, state.editing) : null;
  const text = form.querySelector("textarea")?.value ?? "";
  if (!message || !text.trim()) return;
  if (text.trim() === message.content.trim()) {
    cancelEdit(); // nothing changed: no new version
    return;
  }
  state.editing = null;
  sendEdit(message, text);
  scheduleRender();
}

function cancelEdit() {
  const editing = state.editing;
  state.editing = null;
  scheduleRender();
  // Back to the Edit button of the message, once the render has shown it again.
  requestAnimationFrame(() => {
    dom.messageList
      .querySelector(`[data-message-id="${CSS.escape(editing ?? "")}"] [data-action="edit"]`)
      ?.focus();
  });
}

function onMessageAction(button) {
  const message = button.closest(".message");
  const action = button.dataset.action;
  const runId = message?.dataset.runId;
  if (action === "copy-code") {
    copyFromButton(button, button.closest(".codeblock")?.querySelector("pre")?.textContent ?? "");
  } else if (action === "copy") {
    const shown = state.view ? findMessage(state.view, message.dataset.messageId) : null;
    copyFromButton(button, shown?.content ?? "");
  } else if (action === "regenerate") {
    regenerate(runId);
  } else if (action === "retry-run") {
    retryRun(runId);
  } else if (action === "edit") {
    state.editing = message.dataset.messageId;
    scheduleRender();
  } else if (action === "edit-cancel") {
    cancelEdit();
  } else if (action === "previous-version" || action === "next-version") {
    pageVersions(message.dataset.versionOf, action === "next-version" ? 1 : -1);
    scheduleRender();
  } else if (action === "details") {
    const id = message.dataset.messageId;
    if (state.openDetails.has(id)) state.openDetails.delete(id);
    else state.openDetails.add(id);
    scheduleRender();
  } else if (action === "previous-answer" || action === "next-answer") {
    pageAnswers(message.dataset.answerOf, action === "next-answer" ? 1 : -1);
    scheduleRender();
  } else if (isApprovalAction(action)) {
    onApprovalAction(action, button);
  } else if (SIGNAL_ACTIONS.includes(action)) {
    onSignalAction(action, button.closest(".workflow"));
  } else {
    onFailedMessageAction(action, message?.dataset.clientId);
  }
}

/**
 * Run a failed or stopped answer again. Nothing changes here on success: the
 * run.restarted, run.started and deltas that follow redraw it through the fold.
 * Retried on network errors with the same client id, which answers a resend
 * the first 202 rather than a 409.
 */
async function retryRun(runId) {
  const run = state.view ? findRun(state.view, runId) : null;
  if (!run || !RUN_RETRYABLE.includes(run.status) || retryPending(run)) return;
  const retrying = state.retryingRuns;
  retrying.set(runId, run.ended_at);
  scheduleRender();
  try {
    const clientId = http.newClientId();
    await http.withRetries(() => http.retryRun(runId, clientId));
    // The entry stays, so the button stays disabled until run.restarted hides it.
  } catch (error) {
    retrying.delete(runId);
    showError(`Couldn't retry the answer: ${error.message}`);
  }
  scheduleRender();
}

/** Keyed by ended_at: if the retried run ends badly again, its new Retry works at once. */
export function retryPending(run) {
  return state.retryingRuns.has(run.id) && state.retryingRuns.get(run.id) === run.ended_at;
}

/**
 * A new answer to the message a finished run answered: a new run, whose
 * run.requested (same message_id, new reply_id) brings the new answer in.
 * Retried with the same client id, so a resend starts no second answer.
 */
async function regenerate(runId) {
  const run = state.view ? findRun(state.view, runId) : null;
  if (!run || regeneratePending(run)) return;
  state.regenerating.set(runId, answersTo(state.view, run.message_id));
  state.answerChoice.delete(answerGroupKey(run)); // show the new answer when it comes
  scheduleRender();
  try {
    const clientId = http.newClientId();
    await http.withRetries(() => http.regenerateRun(runId, clientId));
  } catch (error) {
    state.regenerating.delete(runId);
    // 409: the run isn't finished after all, or another tab regenerated it first.
    showError(`Couldn't regenerate the answer: ${error.message}`);
  }
  scheduleRender();
}

export function regeneratePending(run) {
  return Boolean(run) && state.regenerating.has(run.id);
}
