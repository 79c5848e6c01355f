/**
 * The conversation's header: its title (renamed inline), whether it is
 * archived, the tokens it used, the archive button, the inspector toggle and
 * the connection state.
 */

import { dom, setText } from "./dom.js";
import { plural } from "./format.js";
import { toggleInspector } from "./inspector.js";
import { state } from "./state.js";
import { renameThread, setArchived } from "./threads.js";
import { formatTokens, usageTitle } from "./tools.js";

let editing = null; // the thread id whose title is being edited
let saving = null; // {threadId, title} while a rename is on its way

function shownTitle() {
  if (saving?.threadId === state.threadId) return saving.title;
  const fallback = state.threadId ? "Untitled thread" : "New conversation";
  return state.view?.title || fallback;
}

export function renderHeader() {
  if (editing && editing !== state.threadId) stopEditing(); // the reader went to another thread
  const title = shownTitle();
  setText(dom.title, title);
  document.title = `${title} · Slipstream`;
  const thread = Boolean(state.threadId && state.view && !state.missing);
  const archived = Boolean(thread && state.view.archived);
  dom.rename.hidden = !thread || Boolean(editing);
  dom.archive.hidden = !thread;
  dom.deleteThread.hidden = !thread;
  dom.archivedBadge.hidden = !archived;
  dom.archive.dataset.archived = String(archived);
  const label = archived ? "Unarchive thread" : "Archive thread";
  dom.archive.setAttribute("aria-label", label);
  dom.archive.title = archived ? "Unarchive" : "Archive";
  renderThreadUsage(thread ? state.view.usage : null);
  dom.inspectorToggle.setAttribute("aria-expanded", String(state.inspectorOpen));
  dom.inspectorToggle.title = state.inspectorOpen ? "Hide the event inspector" : "Show the thread's raw events";
}

/** The thread's tokens in the header; per agent and per model in its tooltip. */
function renderThreadUsage(usage) {
  const total = usage?.total;
  dom.threadUsage.hidden = !total?.calls;
  if (!total?.calls) return;
  setText(dom.threadUsage, `${formatTokens(total.input_tokens + total.output_tokens)} tokens`);
  const lines = [`Thread: ${usageTitle(total)}`];
  for (const [name, totals] of Object.entries(usage.by_agent ?? {})) {
    lines.push(`${name}: ${formatTokens(totals.input_tokens)} in · ${formatTokens(totals.output_tokens)} out`);
  }
  for (const [name, totals] of Object.entries(usage.by_model ?? {})) {
    lines.push(`model ${name}: ${plural(totals.calls, "call")}`);
  }
  dom.threadUsage.title = lines.join("\n");
}

const CONNECTION_HINTS = {
  connecting: "Connecting to the server…",
  live: "Live: updates arrive as they happen",
  reconnecting: "Connection lost, reconnecting…",
  offline: "Not connected",
};

let threadConnection = "offline"; // the open thread's socket
let listConnection = "offline"; // the thread list's socket, shown while no thread is open

export function setConnection(status) {
  threadConnection = status;
  showConnection();
}

export function setListConnection(status) {
  listConnection = status;
  showConnection();
}

function showConnection() {
  const status = state.threadId ? threadConnection : listConnection;
  setText(dom.connection, status);
  dom.connection.dataset.state = status;
  dom.connection.title = CONNECTION_HINTS[status] ?? "";
}

// --- Renaming in place ----------------------------------------------------------

function startEditing() {
  if (!state.threadId || !state.view || editing) return;
  editing = state.threadId;
  dom.titleInput.value = state.view.title || "";
  dom.title.hidden = true;
  dom.titleForm.hidden = false;
  dom.rename.hidden = true;
  dom.titleInput.focus();
  dom.titleInput.select();
}

function stopEditing({ focusRename = false } = {}) {
  const wasEditing = editing;
  editing = null;
  dom.titleForm.hidden = true;
  dom.title.hidden = false;
  renderHeader();
  if (wasEditing && focusRename) dom.rename.focus();
}

async function commitEditing() {
  if (!editing) return;
  const threadId = editing;
  const title = dom.titleInput.value.trim();
  const unchanged = !title || title === (state.view?.title ?? "");
  stopEditing({ focusRename: document.activeElement === dom.titleInput });
  if (unchanged) return;
  saving = { threadId, title };
  renderHeader();
  await renameThread(threadId, title);
  saving = null;
  renderHeader();
}

export function wireHeader() {
  dom.rename.addEventListener("click", startEditing);
  dom.title.addEventListener("dblclick", startEditing);
  dom.titleForm.addEventListener("submit", (event) => {
    event.preventDefault();
    commitEditing();
  });
  dom.titleInput.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.preventDefault(); // Esc here cancels the edit; it doesn't stop the answer
    stopEditing({ focusRename: true });
  });
  dom.titleInput.addEventListener("blur", () => commitEditing());
  dom.archive.addEventListener("click", () => {
    if (state.threadId && state.view) setArchived(state.threadId, !state.view.archived);
  });
  dom.inspectorToggle.addEventListener("click", toggleInspector);
}
