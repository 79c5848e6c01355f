/** The words a message shows about itself: its phase, status label and note. */

import { explainFailure } from "./failures.js";
import { RUN_ENDED, state } from "./state.js";

/**
 * How an answer looks, which for a workflow's messages is not always its status:
 * a workflow parks and resumes its reply, so a finished text can be "waiting" or
 * "streaming" while the run waits, runs a plain step or writes a later message.
 */
export function messagePhase(message, run, lastOfRun) {
  const { status } = message;
  if (message.role !== "assistant" || !run?.steps?.length) return status;
  if (status !== "streaming" && status !== "waiting") return status;
  if (!lastOfRun) return "completed"; // a later message of the run carries on
  if (status === "waiting") return "waiting";
  const writing = run.steps.some((step) => step.kind === "agent" && step.status === "running");
  return writing ? "streaming" : "working";
}

export function statusLabel(message, phase, run) {
  if (message.role === "user") {
    return { pending: "Sending…", failed: "Not sent" }[message.status] ?? "";
  }
  if (run?.status === "retrying" && !RUN_ENDED.includes(message.status)) {
    return "Retrying…";
  }
  switch (phase) {
    case "pending":
      return pendingLabel(run);
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
 * A thread answers one run per agent at a time (the agent's lane), in order: a
 * queued run waits for the run holding its lane, for one queued before it in
 * that lane, or, when it is next, for a worker to pick it up.
 */
function pendingLabel(run) {
  if (run?.status === "running") return run.steps?.length ? workingLabel(run) : "Thinking…";
  const ahead = run?.status === "queued" ? runAhead(run) : null;
  if (ahead?.status === "waiting") {
    const what = ahead.waiting_for === "approval" ? "an approval" : ahead.waiting_for || "a signal";
    return `Queued — ${ahead.agent} waits for ${what}`;
  }
  if (ahead) return "Queued — waits for the answer before it";
  return "Waiting for a worker…";
}

/**
 * The run a queued one waits behind in its agent's lane, or null. A waiting
 * workflow lets its lane go on; a chat run waiting for a person's yes holds it.
 */
function runAhead(run) {
  const runs = Object.values(state.view?.runs ?? {})
    .filter((other) => other.id !== run.id && other.agent === run.agent);
  const holder = runs.find((other) => ["running", "retrying"].includes(other.status)
    || (other.status === "waiting" && !other.steps?.length));
  return holder ?? runs.find((other) => other.status === "queued"
    && other.requested_at < run.requested_at) ?? null;
}

/** A workflow between its agent turns: name the step it runs. */
function workingLabel(run) {
  const step = (run?.steps ?? []).filter((candidate) => candidate.status === "running").at(-1);
  return step ? `Running ${stepLabel(step)}…` : "Working…";
}

export function waitingLabel(run) {
  if (!run?.waiting_for) return "Waiting";
  return run.waiting_for === "timer" ? "Sleeping" : `Waiting for ${run.waiting_for}`;
}

/** "wait:approval" reads better as "wait for approval"; other names are the workflow's own. */
export function stepLabel(step) {
  if (step.kind === "wait" && step.name.startsWith("wait:")) return `wait for ${step.name.slice(5)}`;
  return step.name;
}

/**
 * The note under a message, {text, detail}: a run's failure in a person's words
 * (failures.js), its reason as written kept as the detail. Empty text: no note.
 */
export function noteText(message, run) {
  if (message.role === "user") {
    // The page's own words already (api.js): nothing technical to tuck away.
    const text = message.status === "failed" ? message.error || "The message couldn't be sent." : "";
    return { text, detail: "" };
  }
  if (message.status === "failed") return explainFailure(run?.reason, "The answer failed.");
  if (message.status === "cancelled") {
    return run?.reason ? explainFailure(run.reason, "Stopped.") : { text: "", detail: "" };
  }
  if (run?.status === "retrying" && !RUN_ENDED.includes(message.status)) return retryingNote(run);
  return { text: "", detail: "" };
}

/** run.retrying names the attempt to come; the view keeps the one that failed, so add one. */
function retryingNote(run) {
  const attempt = run.attempt > 0 ? ` (attempt ${run.attempt + 1})` : "";
  if (!run.reason) return { text: `Retrying${attempt}…`, detail: "" };
  const { text, detail } = explainFailure(run.reason);
  return { text: `Retrying${attempt}: ${text}`, detail };
}
