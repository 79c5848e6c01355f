/**
 * What an agent did inside an answer: who routed the message to it (or handed
 * it over), the tool calls it made as compact cards (arguments, result, and
 * Approve / Deny while a call waits for a person), and the tokens it used.
 *
 * Tool calls live on the run (view `runs[id].tools`); each call's `turn` is the
 * number of hand-offs before it, so it belongs in the run's message of that turn.
 * A run parked for a person's yes (`run.waiting`, waiting_for "approval") names
 * the call in the view's `runs[id].approval`: that call's card asks.
 */

import { newClientId, signalRun, withRetries } from "./api.js";
import { dom, el, setText } from "./dom.js";
import { formatDuration } from "./format.js";
import { showError } from "./notices.js";
import { scheduleRender, state } from "./state.js";
import { createValueBox } from "./values.js";

const HANDOFF_TOOL = "handoff"; // shown as "handed off to …", not as a card
const PREVIEW_CHARS = 80;
const LIVE = ["pending", "streaming", "waiting"];

/**
 * The call an agent run waits on a person's yes for, or null. It is journaled
 * (tool.called) before the run parks; if it is not there yet, the wait's own
 * copy of it stands in, in the run's current turn.
 */
export function waitingCall(run) {
  if (run?.status !== "waiting" || run.waiting_for !== "approval") return null;
  const asked = run.approval;
  if (!asked?.call_id) return null;
  return (run.tools ?? []).find((call) => call.call_id === asked.call_id) ?? {
    call_id: asked.call_id,
    tool: asked.tool ?? "",
    args: asked.args ?? null,
    status: "running",
    result: null,
    turn: (run.handoffs ?? []).length,
    started_at: null,
    ended_at: null,
    denied: false,
    decided_at: null,
  };
}

/** The parts a message shows about its agent's work, added once to its element. */
export function createActivityParts() {
  const routed = el("p", "message__routed");
  routed.setAttribute("data-testid", "routed");
  // Under the answer: where the turn went when its agent handed the message on.
  const handedOff = el("p", "message__handoff");
  handedOff.setAttribute("data-testid", "handed-off");
  const tools = el("div", "tools");
  tools.setAttribute("data-testid", "tool-calls");
  const usage = el("span", "message__usage");
  usage.setAttribute("data-testid", "message-usage");
  return { routed, handedOff, tools, usage, cards: new Map() };
}

/**
 * Update a message's activity parts. `turn` is the message's place among its
 * run's messages; `lastOfRun` says it is the run's last one, which also shows
 * calls of a turn whose message has not started yet, and the run's usage.
 */
export function updateActivity(activity, message, run, { turn, lastOfRun }) {
  const assistant = message.role === "assistant" && Boolean(run);
  updateRouted(activity.routed, assistant ? run : null, turn);
  updateHandedOff(activity.handedOff, assistant ? run?.handoffs?.[turn] : null);
  const calls = assistant ? callsOf(run, turn, lastOfRun) : [];
  updateCards(activity, calls, run, message);
  // A run's tokens are counted per run, not per message: after a hand-off the
  // last message carries the whole run's, and says so.
  const handedOn = assistant && (run.handoffs ?? []).length > 0;
  updateUsage(activity.usage, assistant && lastOfRun ? run.usage : null, handedOn);
}

/** "→ handed off to critic — needs a review" on the message whose agent handed over. */
function updateHandedOff(element, handoff) {
  const text = handoff
    ? `→ handed off to ${handoff.to_agent}${handoff.reason ? ` — ${handoff.reason}` : ""}` : "";
  setText(element, text);
  element.title = text;
  element.hidden = !text;
}

function callsOf(run, turn, lastOfRun) {
  const calls = run.tools ?? [];
  const asked = waitingCall(run);
  const all = asked && !calls.includes(asked) ? [...calls, asked] : calls;
  return all.filter((call) => call.tool !== HANDOFF_TOOL
    && (call.turn === turn || (lastOfRun && call.turn > turn)));
}

/**
 * "→ researcher · rule matched “how much”" on a run's first message (the whole
 * reason in the tooltip); "handed off by …" on later ones.
 */
function updateRouted(element, run, turn) {
  let text = "";
  let title = "";
  if (run && turn === 0) {
    const routed = state.view?.messages.find((message) => message.id === run.message_id)?.routed;
    if (routed) {
      text = routedText(routed, run.agent);
      title = routedTitle(routed);
    }
  } else if (run) {
    const handoff = run.handoffs?.[turn - 1];
    if (handoff) {
      text = `handed off by ${handoff.from_agent}${handoff.reason ? ` — ${handoff.reason}` : ""}`;
      title = text;
    }
  }
  setText(element, text);
  element.title = title;
  element.hidden = !text;
}

/**
 * One short line: who, and why in a few words. Sent to several agents, each
 * answer names them all once ("→ writer, critic"); a rule names what it matched.
 */
function routedText(routed, agent) {
  const to = routed.agents.length > 1 || !routed.agents.includes(agent)
    ? routed.agents.join(", ") : agent;
  const why = routedWhy(routed);
  return `→ ${to}${why ? ` · ${why}` : ""}`;
}

const RULE_TERM_CHARS = 24;

function routedWhy(routed) {
  if (routed.by === "rule") {
    const term = ruleTerm(routed.reason);
    return term ? `rule matched “${term}”` : "rule matched";
  }
  if (routed.by === "pick") return "";  // the sender chose: the names say it all
  return routed.by;
}

/**
 * What a rule matched, from the router's reason "researcher's rule (?i)… matched
 * 'how much'" (the matched text is quoted as Python quotes it). Null if none.
 */
function ruleTerm(reason) {
  const found = / matched (['"])(.*)\1$/s.exec(String(reason ?? ""));
  if (!found) return null;
  const term = found[2].replace(/\s+/g, " ").trim();
  if (!term) return null;
  return term.length > RULE_TERM_CHARS ? `${term.slice(0, RULE_TERM_CHARS - 1)}…` : term;
}

function routedTitle(routed) {
  return `Routed to ${routed.agents.join(", ")} by ${routed.by}${routed.reason ? `: ${routed.reason}` : ""}`;
}

function updateUsage(element, usage, wholeRun = false) {
  const shown = Boolean(usage?.calls);
  element.hidden = !shown;
  if (!shown) return;
  const tokens = `${formatTokens(usage.input_tokens)} in · ${formatTokens(usage.output_tokens)} out`;
  setText(element, wholeRun ? `run: ${tokens}` : tokens);
  element.title = `${wholeRun ? "The whole run, every agent in it: " : ""}${usageTitle(usage)}`;
}

export function formatTokens(count) {
  if (count < 1_000) return String(count);
  if (count < 1_000_000) return `${(count / 1_000).toFixed(count < 10_000 ? 1 : 0)}k`;
  return `${(count / 1_000_000).toFixed(1)}M`;
}

export function usageTitle(usage) {
  const parts = [
    `${usage.input_tokens} input tokens`,
    `${usage.output_tokens} output tokens`,
    `${usage.calls} model call${usage.calls === 1 ? "" : "s"}`,
  ];
  if (usage.cache_read_tokens) parts.push(`${usage.cache_read_tokens} read from cache`);
  if (usage.cache_write_tokens) parts.push(`${usage.cache_write_tokens} written to cache`);
  return parts.join(" · ");
}

// --- Tool cards -------------------------------------------------------------------

/**
 * One card per call, kept by call id and updated in place: a reader's open or
 * closed card, and a reason typed for a denial, survive the stream's renders.
 */
function updateCards(activity, calls, run, message) {
  const { tools, cards } = activity;
  const keep = new Set();
  let previous = null;
  for (const call of calls) {
    keep.add(call.call_id);
    let card = cards.get(call.call_id);
    if (!card) {
      card = createCard();
      cards.set(call.call_id, card);
    }
    updateCard(card, call, run, message);
    const expected = previous ? previous.nextSibling : tools.firstChild;
    if (card.node !== expected) tools.insertBefore(card.node, expected);
    previous = card.node;
  }
  for (const [callId, card] of cards) {
    if (keep.has(callId)) continue;
    if (card.node.contains(document.activeElement)) dom.input.focus(); // don't strand focus
    card.node.remove();
    cards.delete(callId);
  }
  tools.hidden = calls.length === 0;
}

function createCard() {
  const node = el("details", "tool");
  node.setAttribute("data-testid", "tool-call");
  const summary = el("summary", "tool__summary");
  const marker = el("span", "tool__icon");
  marker.setAttribute("aria-hidden", "true");
  const name = el("span", "tool__name");
  name.setAttribute("data-testid", "tool-name");
  const preview = el("span", "tool__preview");
  const status = el("span", "tool__status");
  status.setAttribute("data-testid", "tool-status");
  summary.append(marker, name, preview, status);

  const body = el("div", "tool__body");
  // Arguments and result as name → value lists, each with its raw JSON behind a toggle.
  const argsBox = el("div", "tool__args");
  const args = createValueBox("the arguments", "tool-args", { empty: "no arguments" });
  argsBox.append(el("p", "tool__label", "Arguments"), args.node);
  const resultBox = el("div", "tool__result");
  const resultLabel = el("p", "tool__label", "Result");
  const result = createValueBox("the result", "tool-result");
  resultBox.append(resultLabel, result.node);

  const approval = el("div", "tool__approval");
  approval.setAttribute("role", "group");
  const question = el("p", "tool__question");
  const form = el("div", "workflow__form");
  const reason = el("input", "workflow__input");
  reason.type = "text";
  reason.placeholder = "Reason for a denial (optional)";
  reason.maxLength = REASON_CHARS;
  reason.setAttribute("aria-label", "Reason for denying the tool call");
  reason.setAttribute("data-testid", "deny-reason");
  const deny = el("button", "button button--small button--quiet", "Deny");
  deny.type = "button";
  deny.dataset.action = "deny-call";
  deny.setAttribute("data-testid", "deny-button");
  const approve = el("button", "button button--small button--primary", "Approve");
  approve.type = "button";
  approve.dataset.action = "approve-call";
  approve.setAttribute("data-testid", "approve-button");
  form.append(reason, deny, approve);
  // Enter in the reason box sends the denial it explains.
  reason.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.isComposing) return;
    event.preventDefault();
    onApprovalAction("deny-call", deny);
  });
  const aside = el("p", "tool__aside");
  aside.setAttribute("data-testid", "approval-note");
  approval.append(question, form, aside);

  body.append(argsBox, resultBox);
  node.append(summary, approval, body);
  return {
    node, summary, name, preview, status, args, resultBox, resultLabel, result,
    approval, question, reason, deny, approve, aside, opened: false,
  };
}

function updateCard(card, call, run, message) {
  const { node } = card;
  const asking = waitingCall(run)?.call_id === call.call_id;
  // A call the run ended without (it was stopped, or failed) will get no result.
  const interrupted = call.status === "running" && !LIVE.includes(message.status)
    && !["running", "retrying", "waiting", "queued"].includes(run.status);
  // A person's no is not a crash: it gets its own, quiet look.
  const denied = call.denied && call.status === "failed";
  const status = asking ? "waiting" : interrupted ? "interrupted" : denied ? "denied" : call.status;
  node.dataset.status = status;
  node.dataset.tool = call.tool;
  node.dataset.callId = call.call_id;
  node.dataset.runId = run.id;
  setText(card.name, call.tool || "tool");
  setText(card.preview, argsPreview(call.args));
  setText(card.status, statusText(call, status));
  card.args.update(call.args);
  const done = call.status === "completed" || call.status === "failed";
  card.resultBox.hidden = !done;
  if (done) {
    setText(card.resultLabel, denied ? "Denied" : call.status === "failed" ? "Error" : "Result");
    card.result.update(call.result);
  }
  updateApproval(card, call, run, asking);
}

/**
 * A call waiting for a person opens itself once, so its arguments can be read
 * before saying yes; after that the reader decides whether it stays open.
 */
function updateApproval(card, call, run, asking) {
  if (!asking) decidedElsewhere.delete(call.call_id);
  const elsewhere = asking && decidedElsewhere.has(call.call_id);
  const pending = asking && (approvalPending(run, call) || elsewhere);
  // A control about to be hidden or disabled would drop focus to the page:
  // hand it to the card's summary, which stays, so the keyboard keeps its place.
  if ((!asking || pending) && card.approval.contains(document.activeElement)) card.summary.focus();
  card.approval.hidden = !asking;
  if (asking && !card.opened) {
    card.opened = true;
    card.node.open = true;
  }
  if (!asking) return;
  setText(card.question, `${run.agent} wants to run ${call.tool}. Allow it?`);
  card.approval.setAttribute("aria-label", `Approve or deny ${call.tool}`);
  for (const control of [card.reason, card.deny, card.approve]) control.disabled = pending;
  card.approval.setAttribute("aria-busy", String(pending));
  const aside = elsewhere ? "Already decided in another window; the answer goes on from there." : "";
  setText(card.aside, aside);
  card.aside.hidden = !aside;
}

function statusText(call, status) {
  // An approved call ran from the person's yes: their wait is not its duration.
  const from = call.decided_at ?? call.started_at;
  const took = call.ended_at != null && from != null
    ? ` · ${formatDuration(Math.max(0, call.ended_at - from))}` : "";
  switch (status) {
    case "waiting":
      return "needs approval";
    case "running":
      return "running…";
    case "completed":
      return `done${took}`;
    case "failed":
      return `error${took}`;
    case "denied":
      return "denied";
    default:
      return "no result";
  }
}

/** A one-line hint in the summary: `expression: "2+3"`, cut to fit. */
function argsPreview(args) {
  if (args == null) return "";
  const text = isPlainObject(args)
    ? Object.entries(args).map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join(", ")
    : JSON.stringify(args);
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS - 1)}…` : text;
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// --- Approve / Deny -----------------------------------------------------------------

const APPROVAL_ACTIONS = ["approve-call", "deny-call"];
const REASON_CHARS = 2000; // the approval payload's bound on a denial's reason
const decidedElsewhere = new Set(); // call ids another window decided first (a 409 said so)

export function isApprovalAction(action) {
  return APPROVAL_ACTIONS.includes(action);
}

/** A decision sent for this call, not yet followed by the run moving on. */
function approvalPending(run, call) {
  return state.signalling.get(run.id) === `approval|${call.call_id}`;
}

/** The Approve / Deny buttons of a card: the `approval` signal with the call's id. */
export async function onApprovalAction(action, button) {
  const node = button.closest(".tool");
  const run = state.view?.runs?.[node?.dataset.runId];
  const call = waitingCall(run);
  if (!call || call.call_id !== node.dataset.callId || approvalPending(run, call)
      || decidedElsewhere.has(call.call_id)) return;
  const reasonInput = node.querySelector("[data-testid='deny-reason']");
  const approved = action === "approve-call";
  const payload = { call_id: call.call_id, approved };
  const reason = reasonInput?.value.trim();
  if (!approved && reason) payload.reason = reason;
  state.signalling.set(run.id, `approval|${call.call_id}`);
  scheduleRender();
  try {
    const clientId = newClientId(); // one per decision: its resends are the same signal
    await withRetries(() => signalRun(run.id, "approval", payload, clientId));
    if (reasonInput) reasonInput.value = "";
  } catch (error) {
    state.signalling.delete(run.id);
    // 409: the run no longer waits for this call, so someone decided it first
    // (another tab, another person). Not an error: the view shows what happened.
    if (error.status === 409) decidedElsewhere.add(call.call_id);
    else showError(`Couldn't send the ${approved ? "approval" : "denial"}: ${error.message}`);
  }
  scheduleRender();
}
