/**
 * The sidebar: the thread list, live from every tab through /api/live/threads,
 * with GET /api/threads polling only while that socket is down. Creating,
 * renaming, archiving and unarchiving threads.
 */

import * as http from "./api.js";
import { navigate } from "./conversation.js";
import { dom, el, icon, setText } from "./dom.js";
import { setListConnection } from "./header.js";
import { activeRunId, compareEventIds } from "./fold.js";
import { formatWhen, plural } from "./format.js";
import { liveThreads } from "./live.js";
import { showError, showToast } from "./notices.js";
import { revealOnOpen, searchEmptyText, searching } from "./search.js";
import { scheduleRender, state } from "./state.js";

const POLL_MS = 10_000;
const POLL_GRACE_MS = 1_500; // give the socket a moment before falling back to polling

let socket = null;
let pollTimer = null;
// Each list that arrives takes a ticket, so a slow poll can't overwrite a newer list.
let listTicket = 0;
let shownTicket = 0;
let listSignature = "";

export function startThreadList() {
  socket = liveThreads({ status: onSocketStatus, threads: receiveList, thread: upsert });
  socket.start();
}

/** The browser is back online, or the tab visible again. */
export function wakeThreadList() {
  socket?.wake();
  if (!socket?.live) refreshThreads();
}

export function pauseThreadList() {
  socket?.pause();
}

function onSocketStatus(status) {
  setListConnection(status);
  if (status === "live") {
    clearTimeout(pollTimer);
    pollTimer = null;
  } else if (pollTimer === null) {
    pollTimer = setTimeout(poll, POLL_GRACE_MS);
  }
}

function poll() {
  if (socket?.live) {
    pollTimer = null;
    return;
  }
  // No point polling for a list nobody can see; wakeThreadList() catches up on return.
  if (!document.hidden && navigator.onLine) refreshThreads();
  pollTimer = setTimeout(poll, POLL_MS);
}

export async function refreshThreads() {
  const ticket = ++listTicket;
  try {
    const threads = await http.listThreads();
    if (ticket < shownTicket || socket?.live) return; // the socket's list is newer
    receiveList(Array.isArray(threads) ? threads : [], ticket);
  } catch {
    state.threadsFailed = true; // keep showing the last list; the next poll may work
    scheduleRender();
  }
}

/** A whole list: the socket's first frame, or a poll. Archived threads keep to their own list. */
function receiveList(threads, ticket = ++listTicket) {
  shownTicket = ticket;
  state.threadsFailed = false;
  state.threads = sorted(threads.filter((thread) => thread?.id && !thread.archived));
  if (state.archivedThreads) {
    const active = new Set(state.threads.map((thread) => thread.id));
    const archived = threads.filter((thread) => thread?.archived);
    const kept = state.archivedThreads.filter((thread) => !active.has(thread.id)
      && !archived.some((other) => other.id === thread.id));
    state.archivedThreads = sorted([...kept, ...archived]);
  }
  if (state.view) patchSummary(state.view); // the live view may be ahead of the list
  scheduleRender();
}

function sorted(threads) {
  return threads.sort((a, b) => (b.updated_at ?? 0) - (a.updated_at ?? 0)
    || String(b.id).localeCompare(String(a.id)));
}

function findSummary(id) {
  return state.threads.find((thread) => thread.id === id)
    ?? state.archivedThreads?.find((thread) => thread.id === id)
    ?? null;
}

/** Put one summary in its list, in order. Older news than what is shown is dropped unless forced. */
function upsert(summary, { force = false } = {}) {
  const old = findSummary(summary.id);
  if (!force && old?.last_event_id && summary.last_event_id
      && compareEventIds(old.last_event_id, summary.last_event_id) > 0) return;
  const others = (threads) => threads.filter((thread) => thread.id !== summary.id);
  state.threads = others(state.threads);
  if (state.archivedThreads) state.archivedThreads = others(state.archivedThreads);
  if (!summary.archived) state.threads = sorted([...state.threads, summary]);
  else if (state.archivedThreads) state.archivedThreads = sorted([...state.archivedThreads, summary]);
  scheduleRender();
}

/** Bring the open thread's entry up to date with its live view, when the view is newer. */
export function patchSummary(view) {
  if (!view?.version) return;
  const summary = findSummary(view.id);
  if (summary?.last_event_id && view.last_event_id
      && compareEventIds(summary.last_event_id, view.last_event_id) > 0) return;
  const next = {
    id: view.id,
    created_at: view.created_at,
    ...summary,
    title: view.title,
    archived: Boolean(view.archived),
    updated_at: Math.max(summary?.updated_at ?? 0, view.updated_at),
    last_event_id: view.last_event_id,
    messages: view.messages.length,
    active_run: activeRunId(view),
  };
  if (!summary || JSON.stringify(next) !== JSON.stringify(summary)) upsert(next);
}

// --- Creating, renaming, archiving ------------------------------------------------

async function createThread() {
  const view = await http.createThread();
  // Show it at once; the socket (or the next poll) brings whatever the server says.
  if (!findSummary(view.id)) {
    upsert({
      id: view.id,
      title: view.title ?? "",
      created_at: view.created_at ?? Date.now(),
      updated_at: view.updated_at ?? Date.now(),
      last_event_id: view.last_event_id ?? null,
      messages: 0,
      active_run: null,
      archived: false,
    });
  }
  return view.id;
}

let creation = null;

/** One creation at a time: quick sends from a fresh conversation all belong in one thread. */
export function createThreadOnce() {
  creation ??= createThread().finally(() => {
    creation = null;
  });
  return creation;
}

/**
 * A new conversation is a draft in the page: nothing is saved until its first message
 * is sent (the composer creates the thread on the way), so unsent ones never pile up.
 */
export function startNewThread() {
  navigate(null);
  dom.input.focus();
}

/** PATCH a thread and show the summary the server answers with. Rejects with an ApiError. */
async function updateThread(id, patch) {
  const answer = await http.updateThread(id, patch);
  const summary = { ...findSummary(id), ...answer, ...patch, id };
  upsert(summary, { force: true });
  if (state.view?.id === id) Object.assign(state.view, patch); // its event follows on the socket
  scheduleRender();
  return summary;
}

export async function renameThread(id, title) {
  try {
    await updateThread(id, { title });
    return true;
  } catch (error) {
    showError(`Couldn't rename the thread: ${error.message}`);
    return false;
  }
}

/** Archive or bring back a thread. Archiving the open one leaves it, with an undo. */
export async function setArchived(id, archived) {
  try {
    await updateThread(id, { archived });
  } catch (error) {
    showError(`Couldn't ${archived ? "archive" : "unarchive"} the thread: ${error.message}`);
    return;
  }
  if (!archived) {
    showToast("Thread restored.");
    return;
  }
  if (state.threadId === id && !state.showArchived) {
    navigate(null);
    dom.input.focus();
  }
  showToast("Thread archived.", {
    label: "Undo",
    run: async () => {
      await setArchived(id, false);
      if (!state.threadId) navigate(id);
    },
  });
}

export async function toggleArchivedList() {
  state.showArchived = !state.showArchived;
  scheduleRender();
  if (!state.showArchived) return;
  try {
    const threads = await http.listThreads(true);
    const archived = (Array.isArray(threads) ? threads : []).filter((thread) => thread?.archived);
    state.archivedThreads = sorted(archived);
  } catch (error) {
    state.archivedThreads ??= [];
    showError(`Couldn't load the archived threads: ${error.message}`);
  }
  scheduleRender();
}

// --- Rendering ---------------------------------------------------------------------

export function renderThreadList() {
  const found = searching();
  const archivedList = state.showArchived && !found;
  const threads = found ? state.search.results : archivedList ? state.archivedThreads ?? [] : state.threads;
  const rows = threads.map((thread) => ({
    id: thread.id,
    title: thread.title || "Untitled thread",
    when: formatWhen(thread.updated_at),
    messages: thread.messages ?? 0,
    active: Boolean(thread.active_run),
    archived: Boolean(thread.archived) && (found || archivedList),
    snippet: found ? thread.snippet ?? "" : "",
    messageId: found ? thread.message_id ?? "" : "",
  }));
  // Rebuild only on change: a rebuild on every update would steal keyboard focus for nothing.
  const signature = JSON.stringify([state.threadId, archivedList, found, rows]);
  if (signature !== listSignature) {
    listSignature = signature;
    const focused = document.activeElement?.closest?.("[data-thread-id]");
    const focusedId = focused && dom.threadList.contains(focused) ? focused.dataset.threadId : null;
    const focusedAction = document.activeElement?.dataset?.action ?? null;
    dom.threadList.replaceChildren(...rows.map(threadItem));
    if (focusedId) {
      const row = dom.threadList.querySelector(`li[data-thread-id="${CSS.escape(focusedId)}"]`);
      const target = focusedAction ? row?.querySelector(`[data-action="${focusedAction}"]`) : null;
      (target ?? row?.querySelector("a"))?.focus();
    }
  }
  dom.archivedToggle.setAttribute("aria-pressed", String(archivedList));
  dom.archivedToggle.title = archivedList ? "Back to the threads" : "Show archived threads";
  setText(dom.threadListHeading, found ? "Search results" : archivedList ? "Archived" : "Threads");
  dom.threadListHeading.classList.toggle("visually-hidden", !archivedList && !found);
  dom.threadListEmpty.hidden = rows.length > 0;
  setText(dom.threadListEmpty, found ? searchEmptyText() : emptyText(archivedList));
}

/** A thread deleted here or elsewhere: out of every list. */
export function forgetThread(id) {
  state.threads = state.threads.filter((thread) => thread.id !== id);
  if (state.archivedThreads) state.archivedThreads = state.archivedThreads.filter((thread) => thread.id !== id);
  state.search = { ...state.search, results: state.search.results.filter((thread) => thread.id !== id) };
  scheduleRender();
}

function emptyText(archivedList) {
  if (archivedList) return state.archivedThreads ? "No archived threads." : "Loading…";
  return state.threadsFailed ? "Couldn't load threads." : "No threads yet.";
}

/** A plain link: the hash change opens the thread, and it can be copied or opened in a new tab. */
function threadItem(row) {
  const item = el("li", "thread-list__item");
  item.dataset.threadId = row.id;
  const link = el("a", "thread");
  link.href = `#${encodeURIComponent(row.id)}`;
  link.dataset.threadId = row.id;
  if (row.id === state.threadId) link.setAttribute("aria-current", "page");
  const title = el("span", "thread__title", row.title);
  const meta = el("span", "thread__meta");
  if (row.active) {
    const dot = el("span", "thread__active");
    dot.title = "Answering";
    dot.append(el("span", "visually-hidden", "Answering,"));
    meta.append(dot);
  }
  meta.append(document.createTextNode([row.when, plural(row.messages, "message")]
    .filter(Boolean).join(" · ")));
  link.append(title);
  if (row.snippet) {
    link.append(el("span", "thread__snippet", row.snippet));
    if (row.messageId) link.dataset.messageId = row.messageId;
  }
  link.append(meta);
  item.append(link);
  if (row.archived) {
    const restore = el("button", "thread__action");
    restore.type = "button";
    restore.dataset.action = "unarchive";
    restore.setAttribute("data-testid", "unarchive-thread");
    restore.setAttribute("aria-label", `Unarchive “${row.title}”`);
    restore.append(icon("unarchive"), el("span", "thread__action-label", "Unarchive"));
    item.append(restore);
  }
  return item;
}

export function wireThreadList() {
  dom.newThread.addEventListener("click", startNewThread);
  dom.archivedToggle.addEventListener("click", toggleArchivedList);
  dom.threadList.addEventListener("click", (event) => {
    const found = event.target.closest("a[data-message-id]");
    if (!found) return;
    revealOnOpen(found.dataset.threadId, found.dataset.messageId);
    scheduleRender(); // the thread may be open already: the hash does not change then
  });
  dom.threadList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action='unarchive']");
    if (!button || button.disabled) return;
    button.disabled = true;
    setArchived(button.closest("[data-thread-id]").dataset.threadId, false);
  });
}
