/**
 * Searching threads: the sidebar's box asks GET /api/threads?q= (the server's word
 * index over titles and message text, best match first) and the thread list shows the
 * matches, each with the words around the match; opening one scrolls to the message
 * that matched. Ctrl/⌘+K (shortcuts.js) comes here.
 */

import * as http from "./api.js";
import { pageTo } from "./answers.js";
import { dom, setText } from "./dom.js";
import { plural } from "./format.js";
import { stickToBottom } from "./scroll.js";
import { scheduleRender, state } from "./state.js";

const DEBOUNCE_MS = 150; // typing fast asks once, at the pause
const FOUND_MS = 2_000; // how long the message that matched stays marked

let timer = 0;
let ticket = 0; // answers to an older query are dropped: the newest query wins

export function searching() {
  return Boolean(state.search.query);
}

export function focusSearch() {
  dom.threadSearch.focus();
  dom.threadSearch.select();
}

function onInput() {
  clearTimeout(timer);
  const query = dom.threadSearch.value.trim();
  if (!query) {
    forget();
    return;
  }
  state.search = { ...state.search, query, loading: true };
  scheduleRender();
  timer = setTimeout(() => ask(query), DEBOUNCE_MS);
}

async function ask(query) {
  const mine = ++ticket;
  let results = [];
  let error = null;
  try {
    const answer = await http.searchThreads(query);
    results = Array.isArray(answer) ? answer : [];
  } catch (failure) {
    error = failure.message;
  }
  if (mine !== ticket) return;
  state.search = { query, results, loading: false, error };
  scheduleRender();
}

function forget() {
  ticket += 1;
  clearTimeout(timer);
  state.search = { query: "", results: [], loading: false, error: null };
  scheduleRender();
}

export function clearSearch() {
  dom.threadSearch.value = "";
  forget();
}

/** What the list says when a search shows nothing, or while it asks. */
export function searchEmptyText() {
  const { query, loading, error } = state.search;
  if (loading) return "Searching…";
  if (error) return `Couldn't search: ${error}`;
  return `No thread matches “${query}”.`;
}

/** For screen readers: how many threads the search found, once it has. */
export function renderSearchStatus() {
  const { query, loading, results } = state.search;
  setText(dom.threadSearchStatus, !query || loading ? "" : `${plural(results.length, "thread")} found`);
}

/** Opening a result: its thread, scrolled to the message that matched. */
export function revealOnOpen(threadId, messageId) {
  state.reveal = messageId ? { threadId, messageId } : null;
  state.revealPaged = false;
}

/** A render step after the messages: bring the matched message into view, once it is there. */
export function renderReveal() {
  if (!state.reveal || state.view?.id !== state.reveal.threadId) return; // not open yet
  const id = state.reveal.messageId;
  const node = dom.messageList.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
  if (!node) {
    // On another branch (an earlier version, another answer): page there, once.
    if (state.revealPaged || !pageTo(state.view, id)) state.reveal = null;
    else scheduleRender();
    state.revealPaged = true;
    return;
  }
  state.reveal = null;
  stickToBottom(false);
  node.scrollIntoView({ block: "center" });
  node.classList.add("message--found");
  setTimeout(() => node.classList.remove("message--found"), FOUND_MS);
}

export function wireSearch() {
  dom.threadSearch.addEventListener("input", onInput);
  dom.threadSearch.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && dom.threadSearch.value) {
      event.stopPropagation(); // clears the box; a second Esc goes on to the page
      event.preventDefault();
      clearSearch();
    } else if (event.key === "ArrowDown" || event.key === "Enter") {
      const first = dom.threadList.querySelector("a");
      if (!first || !searching()) return;
      event.preventDefault();
      if (event.key === "Enter") first.click();
      else first.focus();
    }
  });
}
