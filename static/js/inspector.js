/**
 * The event inspector: the open thread's raw events, as `redis-cli XRANGE`
 * would list them. Filled from GET /api/threads/{id}/events when opened, then
 * from every event frame of the thread's socket. Text only, last 2,000 rows.
 */

import { threadEvents } from "./api.js";
import { dom, el, setText } from "./dom.js";
import { compareEventIds } from "./fold.js";
import { plural } from "./format.js";
import { scheduleRender, state } from "./state.js";

const MAX_ROWS = 2_000;
const PAGE = 1_000;
const MAX_PAGES = 200; // 200,000 events: past that, the inspector shows where it stopped

let loadedThread = null; // the thread the rows belong to
let loadToken = 0;
let loading = false;
let failure = "";
let lastId = null; // the last event id taken in: later frames and pages must come after it
let total = 0; // events taken in, shown or not
let buffer = []; // socket events that arrived while the pages were loading
let pending = []; // rows waiting for the next render

export function toggleInspector(open = !state.inspectorOpen) {
  state.inspectorOpen = Boolean(open);
  dom.inspector.hidden = !state.inspectorOpen;
  document.body.classList.toggle("with-inspector", state.inspectorOpen);
  if (state.inspectorOpen) load();
  else forget();
  scheduleRender();
}

/**
 * The open thread changed, or a snapshot arrived: load the thread's events if
 * they aren't shown, or catch up on those a fresh snapshot skipped over.
 */
export function inspectorThreadChanged() {
  if (!state.inspectorOpen) return;
  if (loadedThread !== state.threadId) load();
  else if (!loading) fetchPages();
}

/** One event folded from the thread socket. */
export function inspectorEvent(id, event) {
  if (!state.inspectorOpen || loadedThread !== state.threadId) return;
  if (loading) buffer.push([id, event]);
  else take(id, event);
}

function forget() {
  loadToken += 1;
  loadedThread = null;
  loading = false;
  failure = "";
  lastId = null;
  total = 0;
  buffer = [];
  pending = [];
  dom.inspectorRows.replaceChildren();
}

function load() {
  forget();
  loadedThread = state.threadId;
  if (loadedThread) fetchPages();
}

/** Page through the events after the last one shown, then take those the socket brought meanwhile. */
async function fetchPages() {
  const token = loadToken;
  const threadId = loadedThread;
  loading = true;
  failure = "";
  scheduleRender();
  try {
    let after = lastId;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const events = await threadEvents(threadId, { after, limit: PAGE });
      if (token !== loadToken) return;
      for (const stored of events ?? []) take(stored.id, stored.event);
      if (!events || events.length < PAGE) break;
      after = events.at(-1).id;
    }
  } catch (error) {
    if (token !== loadToken) return;
    failure = `Couldn't load the events: ${error.message}`;
  }
  loading = false;
  for (const [id, event] of buffer) take(id, event);
  buffer = [];
  scheduleRender();
}

function take(id, event) {
  if (lastId && compareEventIds(id, lastId) <= 0) return; // a page and a frame can overlap
  lastId = id;
  total += 1;
  pending.push([id, event]);
  if (pending.length > MAX_ROWS) pending.splice(0, pending.length - MAX_ROWS);
  scheduleRender();
}

/** Add the rows that came since the last render, and drop the oldest past the cap. */
function flush() {
  if (!pending.length) return;
  const list = dom.inspectorRows;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  const rows = document.createDocumentFragment();
  for (const [id, event] of pending) rows.append(row(id, event));
  pending = [];
  list.append(rows);
  for (let excess = list.childElementCount - MAX_ROWS; excess > 0; excess -= 1) {
    list.firstElementChild.remove();
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

/** One entry: its stream id, its type, and the rest of its fields as compact JSON. */
function row(id, event) {
  const { type = "?", ...fields } = event && typeof event === "object" ? event : {};
  const item = el("li", "event");
  item.setAttribute("data-testid", "inspector-event");
  item.dataset.eventId = id;
  item.dataset.type = type;
  item.append(
    el("span", "event__id", id),
    el("span", "event__type", type),
    el("span", "event__fields", JSON.stringify(fields)),
  );
  return item;
}

export function renderInspector() {
  if (!state.inspectorOpen) return;
  flush();
  const key = state.view?.stream_key ?? "";
  setText(dom.inspectorKey, state.threadId ? key || "…" : "no thread open");
  const shown = dom.inspectorRows.childElementCount;
  let count = loading ? "Loading…" : plural(total, "event");
  if (!loading && total > shown) count += ` · the last ${shown.toLocaleString()} shown`;
  setText(dom.inspectorCount, failure || count);
}

export function wireInspector() {
  dom.inspectorClose.addEventListener("click", () => {
    toggleInspector(false);
    dom.inspectorToggle.focus();
  });
  // Esc closes it wherever focus is: navigation.js.
}
