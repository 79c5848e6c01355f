/**
 * Workflow runs: a panel in the run's last message with its steps, what it
 * waits for (with Approve / Reject or a signal form), and its result.
 */

import { newClientId, signalRun, withRetries } from "./api.js";
import { stopRun } from "./composer.js";
import { dom, el, setText } from "./dom.js";
import { findRun } from "./fold.js";
import { formatDuration, formatMoment, plural } from "./format.js";
import { stepLabel } from "./labels.js";
import { showExplained } from "./failures.js";
import { showError } from "./notices.js";
import { scheduleRender, state } from "./state.js";
import { waitingCall } from "./tools.js";
import { createValueBox } from "./values.js";

export const runPanels = new Map(); // run id → the parts of its workflow panel

/**
 * A workflow run gets a panel: its steps, what it waits for, its result. An agent
 * run waiting for a tool call's approval asks on the call's own card instead.
 */
export function hasPanel(run) {
  if (!run) return false;
  const waits = run.status === "waiting" && !waitingCall(run);
  return run.steps?.length > 0 || waits || run.result != null;
}

/**
 * The panel sits in the run's last message, where the newest draft is. It is one
 * element per run, moved rather than rebuilt, so typed feedback and the open or
 * closed state of its details survive a new message.
 */
export function placePanel(host, run) {
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

  // The composer has no Stop for a run parked on a wait (nothing is being written):
  // ending one that waits, for days perhaps, is asked for here, where the wait is.
  const cancel = signalButton("cancel-wait", "Cancel workflow", "cancel-wait", "button--quiet");
  cancel.classList.add("workflow__cancel");

  const details = el("details", "workflow__steps");
  details.open = true;
  details.setAttribute("data-testid", "workflow-steps");
  const summary = el("summary", "workflow__summary");
  const list = el("ol", "workflow__list");
  const result = el("details", "workflow__result");
  result.setAttribute("data-testid", "workflow-result");
  const resultValue = createValueBox("the workflow's result", "workflow-result-value");
  result.append(el("summary", "workflow__result-summary", "Result"), resultValue.node);
  details.append(summary, list);

  node.append(details);
  return {
    node, wait, waitText, approval, feedback, reject, approve, generic, payload, send, cancel,
    details, summary, list, stepNodes: new Map(), result, resultValue,
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

  updateSteps(panel, steps);

  const showResult = run.status === "completed" && run.result != null;
  if (showResult) panel.resultValue.update(run.result);
  attach(panel.details, showResult ? [panel.result] : [], 2);
}

/**
 * One item per step, kept by its op and rebuilt only when the step changes,
 * so a result a reader opened stays open while later steps run.
 */
function updateSteps(panel, steps) {
  const keep = new Set();
  const items = steps.map((step) => {
    keep.add(step.op);
    const signature = JSON.stringify([
      step.name, step.kind, step.status, step.attempts, step.duration_ms, step.error,
      step.until_ms, step.kind === "agent" ? null : step.result,
    ]);
    let entry = panel.stepNodes.get(step.op);
    if (entry?.signature !== signature) {
      const node = stepItem(step);
      const focused = entry?.node.contains(document.activeElement);
      entry?.node.replaceWith(node);
      if (focused) (node.querySelector("summary") ?? dom.input).focus(); // don't strand focus
      entry = { signature, node };
      panel.stepNodes.set(step.op, entry);
    }
    return entry.node;
  });
  for (const [op, entry] of panel.stepNodes) {
    if (keep.has(op)) continue;
    entry.node.remove();
    panel.stepNodes.delete(op);
  }
  let previous = null;
  for (const node of items) {
    const expected = previous ? previous.nextSibling : panel.list.firstChild;
    if (node !== expected) panel.list.insertBefore(node, expected);
    previous = node;
  }
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
  attach(panel.wait, form ? [form, panel.cancel] : [panel.cancel], 1);
  const cancelling = state.stoppingRun === run.id;
  panel.cancel.disabled = cancelling;
  setText(panel.cancel, cancelling ? "Cancelling…" : "Cancel workflow");
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
  if (step.error) {
    // The step's own exception: its class and text are for whoever wrote the workflow.
    const error = el("div", "step__error");
    showExplained(error, { text: "The step raised an error.", detail: step.error });
    item.append(error);
  }
  const outcome = waitOutcome(step);
  if (outcome) item.append(el("p", "step__detail", outcome));
  const result = stepResult(step);
  if (result !== undefined) item.append(resultDetails(step, result));
  return item;
}

/** What a finished step gave, to show as a list: not an agent's text (it is the message), not a wait's sentence. */
function stepResult(step) {
  if (step.status !== "completed" || step.kind === "agent" || step.result == null) return undefined;
  if (step.kind !== "wait") return step.result;
  const payload = waitResult(step).payload;
  return isApprovalPayload(payload) || payload == null ? undefined : payload;
}

function resultDetails(step, result) {
  const details = el("details", "step__result");
  const box = createValueBox(`${stepLabel(step)}'s result`, "step-result");
  box.update(result);
  details.append(el("summary", "step__result-summary", step.kind === "wait" ? "Signal" : "Result"), box.node);
  return details;
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

function waitResult(step) {
  return step.result && typeof step.result === "object" ? step.result : {};
}

/** {approved, feedback?}: the payload the approval form sends (and an API caller may). */
function isApprovalPayload(payload) {
  return Boolean(payload) && typeof payload === "object" && typeof payload.approved === "boolean";
}

const FEEDBACK_CHARS = 160;

/**
 * What a finished wait received, in a line: "Approved", "Declined — feedback",
 * that it timed out, or that a signal came (its payload follows as a list).
 */
function waitOutcome(step) {
  if (step.kind !== "wait" || step.status !== "completed") return "";
  const result = waitResult(step);
  if (result.timed_out) return "Timed out: no answer came in time";
  const payload = result.payload;
  if (!isApprovalPayload(payload)) return payload == null ? "Signal received" : "";
  const verdict = payload.approved ? "Approved" : "Declined";
  const feedback = String(payload.feedback ?? payload.reason ?? "").trim();
  if (!feedback) return verdict;
  const shown = feedback.length > FEEDBACK_CHARS ? `${feedback.slice(0, FEEDBACK_CHARS - 1)}…` : feedback;
  return `${verdict} — “${shown}”`;
}

// --- Signals ---------------------------------------------------------------------

export const SIGNAL_ACTIONS = ["approve", "reject", "signal", "cancel-wait"];

/** Which wait a run is in: a signal sent to one wait must not disable the next one's buttons. */
function waitKey(run) {
  const step = (run.steps ?? []).filter((candidate) => candidate.status === "waiting").at(-1);
  return `${run.waiting_for}|${step?.op ?? ""}|${run.until_ms ?? ""}`;
}

function signalPending(run) {
  return state.signalling.get(run.id) === waitKey(run);
}

export function onSignalAction(action, panel) {
  const runId = panel?.dataset.runId;
  const parts = runId ? runPanels.get(runId) : null;
  const run = state.view ? findRun(state.view, runId) : null;
  if (!parts || !run?.waiting_for) return;
  if (action === "cancel-wait") {
    stopRun(run.id);
  } else if (action === "approve") {
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
 * on (its events redraw it). Retried with the same client id: the server keeps
 * one copy, so a resend cannot answer the run's next wait.
 */
async function sendSignal(run, name, payload, input) {
  if (run.status !== "waiting" || signalPending(run)) return;
  state.signalling.set(run.id, waitKey(run));
  scheduleRender();
  try {
    const clientId = newClientId();
    await withRetries(() => signalRun(run.id, name, payload, clientId));
    input.value = "";
  } catch (error) {
    state.signalling.delete(run.id);
    showError(`Couldn't send “${name}”: ${error.message}`);
  }
  scheduleRender();
}
