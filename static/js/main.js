/**
 * Slipstream web chat: ES modules, no build step. This one wires the page.
 *
 *   fold.js          the thread-view fold, a mirror of projections/thread_view.py
 *   api.js           the JSON API          live.js       websockets that reconnect
 *   state.js         state + render loop   dom.js        the page's elements
 *   conversation.js  the open thread       threads.js    the sidebar's thread list
 *   header.js        title, rename, archive, connection
 *   messages.js      messages              labels.js     what they say about themselves
 *   answers.js       regenerated answers   actions.js    buttons on messages
 *   markdown.js      model output          clipboard.js  copying
 *   composer.js      send, queue, stop     agents.js     who answers
 *   workflows.js     workflow panels       inspector.js  raw events
 *   tools.js         routing, tool calls, approvals and tokens on answers
 *   session.js       signing in and out (SLIPSTREAM_AUTH=tokens)
 *   mentions.js      the @ list of agents  suggestions.js  examples in an empty thread
 *   model.js         which model answers   shortcuts.js    keyboard shortcuts and their help
 *   scroll.js        following the bottom  notices.js    errors, toasts, announcements
 *   navigation.js    skip link, Esc, the phone's thread drawer
 *   highlight.js     code colours          values.js     JSON values as lists
 *   failures.js      failures in plain words
 *   search.js        searching threads     deletion.js   deleting one, after asking
 */

import { wireMessageActions } from "./actions.js";
import { loadAgents, renderAgentPicker, wireAgentPicker } from "./agents.js";
import { renderControls, wireComposer } from "./composer.js";
import { openThread, pageAnchor, threadIdFromHash } from "./conversation.js";
import { collectDom } from "./dom.js";
import { renderHeader, setConnection, wireHeader } from "./header.js";
import { renderInspector, wireInspector } from "./inspector.js";
import { markdownReady } from "./markdown.js";
import { wireNavigation } from "./navigation.js";
import { loadModelBadge, wireModelBadge } from "./model.js";
import { renderEmptyState, renderMessages } from "./messages.js";
import { wireDeletion } from "./deletion.js";
import { renderReveal, renderSearchStatus, wireSearch } from "./search.js";
import { wireNotices } from "./notices.js";
import { renderScroll, wireScroll } from "./scroll.js";
import { showSession, signIn, whoAmI, wireSession } from "./session.js";
import { wireShortcuts } from "./shortcuts.js";
import { onRender, scheduleRender, state } from "./state.js";
import { renderSuggestions, wireSuggestions } from "./suggestions.js";
import {
  pauseThreadList, renderThreadList, startThreadList, wakeThreadList, wireThreadList,
} from "./threads.js";

function wire() {
  wireNavigation(); // first: Esc closes what is on top before anything else hears it
  wireThreadList();
  wireSearch();
  wireDeletion();
  wireHeader();
  wireNotices();
  wireMessageActions();
  wireComposer();
  wireAgentPicker();
  wireInspector();
  wireScroll();
  wireModelBadge();
  wireSuggestions();
  wireShortcuts();
  // A #fragment naming an element of the page is a place on it, not a thread.
  window.addEventListener("hashchange", () => {
    if (!pageAnchor()) openThread(threadIdFromHash());
  });
  window.addEventListener("online", () => {
    state.live?.wake();
    wakeThreadList();
  });
  window.addEventListener("offline", () => {
    state.live?.pause();
    pauseThreadList();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) wakeThreadList();
  });
}

/** Who is using the page first: nothing else asks the server before there is someone. */
async function signedIn() {
  let session = null;
  try {
    session = await whoAmI();
  } catch {
    return null; // the server is unreachable: start, and let the page say so as it retries
  }
  return session ?? (await signIn());
}

function start() {
  // Wired at once, as the page appears: a click must never land before its handler.
  wireSession();
  collectDom();
  for (const step of [
    renderHeader, renderThreadList, renderSearchStatus, renderMessages, renderReveal, renderEmptyState,
    renderSuggestions, renderControls, renderInspector, renderScroll,
  ]) {
    onRender(step);
  }
  wire();
  setConnection("offline");
  renderAgentPicker();
  markdownReady.then(scheduleRender); // answers shown before it loaded become markdown
  scheduleRender();
  // What reads the server waits for someone to be signed in (with no auth, at once).
  signedIn().then((session) => {
    if (session) showSession(session);
    loadAgents();
    loadModelBadge();
    startThreadList();
    openThread(threadIdFromHash());
  });
}

start();
