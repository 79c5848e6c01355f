/**
 * What the buttons on messages do: copy, regenerate, retry, page between
 * answers, and (delegated) workflow signals, tool approvals and failed sends.
 */

import * as http from "./api.js";
import { answerGroupKey, answersTo, pageAnswers } from "./answers.js";
import { copyFromButton } from "./clipboard.js";
import { onFailedMessageAction } from "./composer.js";
import { dom } from "./dom.js";
import { findMessage, findRun } from "./fold.js";
import { showError } from "./notices.js";
import { RUN_RETRYABLE, scheduleRender, state } from "./state.js";
import { isApprovalAction, onApprovalAction } from "./tools.js";
import { SIGNAL_ACTIONS, onSignalAction } from "./workflows.js";

export function wireMessageActions() {
  dom.messageList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && !button.disabled && dom.messageList.contains(button)) onMessageAction(button);
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
