/**
 * Several answers to one message: each regeneration is a new run for the same
 * user message and agent. The thread shows one of them, the newest unless the
 * reader paged to another, with "‹ 2 / 3 ›" to move between them. A message
 * sent to several agents at once has one such group per agent, all shown.
 */

import { state } from "./state.js";

/** The answers a run is among: the same message's runs by the same agent. */
export function answerGroupKey(run) {
  return `${run.message_id}/${run.agent ?? ""}`;
}

/** Group key → the runs that answer it, oldest first, for groups with several. */
export function answerGroups(view) {
  const groups = new Map();
  for (const run of Object.values(view?.runs ?? {})) {
    if (!run.message_id) continue;
    const key = answerGroupKey(run);
    const runs = groups.get(key) ?? [];
    runs.push(run);
    groups.set(key, runs);
  }
  for (const [messageId, runs] of groups) {
    if (runs.length < 2) groups.delete(messageId);
    else runs.sort((a, b) => (a.requested_at ?? 0) - (b.requested_at ?? 0));
  }
  return groups;
}

/** How many runs answer a user message: one, plus one per regeneration. */
export function answersTo(view, messageId) {
  if (!messageId) return 0;
  return Object.values(view?.runs ?? {}).filter((run) => run.message_id === messageId).length;
}

/** The run shown: the reader's pick, until a new answer arrives and takes its place. */
export function chosenRun(messageId, runs) {
  const choice = state.answerChoice.get(messageId);
  if (choice && choice.count === runs.length && runs.some((run) => run.id === choice.runId)) {
    return choice.runId;
  }
  return runs.at(-1).id;
}

/** Show the answer `step` places before (-1) or after (+1) the one shown now. */
export function pageAnswers(messageId, step) {
  const runs = answerGroups(state.view).get(messageId);
  if (!runs) return;
  const index = runs.findIndex((run) => run.id === chosenRun(messageId, runs));
  const next = runs[Math.min(runs.length - 1, Math.max(0, index + step))];
  state.answerChoice.set(messageId, { runId: next.id, count: runs.length });
}

/**
 * The thread's messages as shown: each message's chosen answer in the place of
 * its first one, the others left out. Also returns, per shown run among several,
 * its place: run id → {messageId (its group key), index, count}.
 */
export function shownMessages(view) {
  const { chain, versions } = shownBranch(view);
  const onBranch = (message) => {
    if (message.role === "user") return chain.has(message.id);
    const run = view?.runs?.[message.run_id];
    return !run || chain.has(run.message_id);
  };
  const { shown, places } = shownAnswers(view, (view?.messages ?? []).filter(onBranch));
  return { shown, places, versions };
}

// --- Versions of a message: edits, and replies that went on from an earlier branch ---

const ROOT = ""; // the parent key of a thread's first messages

/**
 * The user messages shown, from the thread's first: at each step the reader's pick
 * among the versions there, else the one leading to the newest message (the branch
 * the server continues). Also returns, per shown message among several versions,
 * its place: message id → {parent (its versions' key), index, count}.
 */
export function shownBranch(view) {
  const users = (view?.messages ?? []).filter((message) => message.role === "user");
  const children = new Map(); // parent key → its user messages, oldest first
  const parentOf = new Map(users.map((message) => [message.id, message.parent_id ?? ROOT]));
  const newest = new Map(); // message id → stream position of the newest message below it
  for (const message of users) {
    const key = message.parent_id ?? ROOT;
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(message);
  }
  // Newest first: a climb stops at the first message marked, whose ancestors a newer
  // message marked already, so each message is marked once.
  for (let position = users.length - 1; position >= 0; position -= 1) {
    for (let id = users[position].id; parentOf.has(id) && !newest.has(id); id = parentOf.get(id)) {
      newest.set(id, position);
    }
  }
  const chain = new Set();
  const versions = new Map();
  const visited = new Set(); // parents only point back, but a bad view must not loop
  for (let key = ROOT; children.has(key) && !visited.has(key);) {
    visited.add(key);
    const siblings = children.get(key);
    const picked = state.versionChoice.get(key);
    const shown = siblings.find((message) => message.id === picked)
      ?? siblings.reduce((a, b) => ((newest.get(b.id) ?? 0) > (newest.get(a.id) ?? 0) ? b : a));
    chain.add(shown.id);
    if (siblings.length > 1) {
      versions.set(shown.id, {
        parent: key, index: siblings.indexOf(shown), count: siblings.length,
      });
    }
    key = shown.id;
  }
  return { chain, versions };
}

/** Show the version `step` places before (-1) or after (+1) the one shown at `parent`. */
export function pageVersions(parent, step) {
  const siblings = (state.view?.messages ?? [])
    .filter((message) => message.role === "user" && (message.parent_id ?? ROOT) === parent);
  const { chain } = shownBranch(state.view);
  const index = siblings.findIndex((message) => chain.has(message.id));
  const next = siblings[Math.min(siblings.length - 1, Math.max(0, index + step))];
  if (next) state.versionChoice.set(parent, next.id);
}

/**
 * Page the thread so that `messageId` is shown: its branch picked at every step, and
 * for an answer, that answer among its regenerations. False if the view lacks it.
 */
export function pageTo(view, messageId) {
  const message = (view?.messages ?? []).find((candidate) => candidate.id === messageId);
  if (!message) return false;
  const run = message.role === "assistant" ? view.runs?.[message.run_id] : null;
  const users = new Map((view.messages ?? [])
    .filter((candidate) => candidate.role === "user").map((user) => [user.id, user]));
  const seen = new Set();
  for (let user = users.get(run ? run.message_id : message.id); user && !seen.has(user.id);
    user = users.get(user.parent_id)) {
    seen.add(user.id);
    state.versionChoice.set(user.parent_id ?? ROOT, user.id);
  }
  const runs = run ? answerGroups(view).get(answerGroupKey(run)) : null;
  if (runs) state.answerChoice.set(answerGroupKey(run), { runId: run.id, count: runs.length });
  return true;
}

/** Forget the picks at and below `parent`: the branch the server continues is shown there. */
export function followNewest(parent) {
  state.versionChoice.delete(parent ?? ROOT);
}

/**
 * The user message a new one should follow: the last one shown, when that is not the
 * newest (the reader went back to an earlier branch); null lets the server pick the newest.
 */
export function replyParent(view) {
  const users = (view?.messages ?? []).filter((message) => message.role === "user");
  if (!users.length) return null;
  const { chain } = shownBranch(view);
  const last = users.filter((message) => chain.has(message.id)).at(-1);
  return last && last.id !== users.at(-1).id ? last.id : null;
}

function shownAnswers(view, messages) {
  const groups = answerGroups(view);
  const groupOf = new Map(); // run id → the user message it answers, for runs among several
  for (const [messageId, runs] of groups) {
    for (const run of runs) groupOf.set(run.id, messageId);
  }
  const messagesOf = new Map(); // run id → its messages, for those runs
  for (const message of messages) {
    if (message.role !== "assistant" || !groupOf.has(message.run_id)) continue;
    messagesOf.set(message.run_id, [...(messagesOf.get(message.run_id) ?? []), message]);
  }
  const shown = [];
  const places = new Map();
  const placed = new Set();
  for (const message of messages) {
    const messageId = message.role === "assistant" ? groupOf.get(message.run_id) : undefined;
    if (messageId === undefined) {
      shown.push(message);
      continue;
    }
    if (placed.has(messageId)) continue;
    placed.add(messageId);
    const runs = groups.get(messageId);
    const runId = chosenRun(messageId, runs);
    places.set(runId, {
      messageId, index: runs.findIndex((run) => run.id === runId), count: runs.length,
    });
    shown.push(...(messagesOf.get(runId) ?? []));
  }
  return { shown, places };
}
