/**
 * Keyboard shortcuts, and their help (a native <dialog>, so Esc closes it and
 * focus comes back where it was). ⌘ on a Mac, Ctrl elsewhere:
 *
 *   Ctrl/⌘+Shift+O  new thread          Ctrl/⌘+K  search threads
 *   Shift+Esc       the message box     ?         this help (outside text fields)
 */

import { dom, el } from "./dom.js";

const MAC = /Mac|iPhone|iPad/.test(navigator.userAgentData?.platform ?? navigator.platform ?? "");
const MOD = MAC ? "⌘" : "Ctrl";

/** What the help lists: keys (each shown as a key cap) and what they do. */
const HELP = [
  [[MOD, "Shift", "O"], "New thread"],
  [[MOD, "K"], "Search threads"],
  [["Shift", "Esc"], "Go to the message box"],
  [["Enter"], "Send the message"],
  [["Shift", "Enter"], "New line in the message"],
  [["@"], "Mention an agent, in the message box"],
  [["Esc"], "Stop the answer being written"],
  [["?"], "Show these shortcuts"],
];

/** The platform's command key held, and no other modifier but the ones asked for. */
function command(event, { shift = false } = {}) {
  const held = MAC ? event.metaKey && !event.ctrlKey : event.ctrlKey && !event.metaKey;
  return held && event.shiftKey === shift && !event.altKey;
}

/** Where "?" is text being typed, not a shortcut. */
function typing(target) {
  if (!(target instanceof Element)) return false;
  if (target.isContentEditable || target.closest("textarea, select, [contenteditable]")) return true;
  const input = target.closest("input");
  return Boolean(input) && !["button", "checkbox", "radio", "submit", "reset", "range", "color"]
    .includes(input.type);
}

function onKeydown(event) {
  // A dialog open (this help, or another) has the keys to itself: Esc closes it.
  if (event.defaultPrevented || event.isComposing || document.querySelector("dialog[open]")) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (key === "o" && command(event, { shift: true })) {
    event.preventDefault(); // the browser's own (bookmarks) would take it
    dom.newThread.click();
  } else if (key === "k" && command(event)) {
    // The sidebar's search box; a page without one leaves the key to the browser.
    const search = document.querySelector('[data-testid="thread-search"]');
    if (!search) return;
    event.preventDefault();
    search.focus();
    search.select?.();
  } else if (key === "Escape" && event.shiftKey && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    dom.input.focus();
  } else if (key === "?" && !event.ctrlKey && !event.metaKey && !event.altKey && !typing(event.target)) {
    event.preventDefault();
    openHelp();
  }
}

function keyCaps(keys) {
  const caps = el("dt", "shortcuts__keys");
  keys.forEach((key, index) => {
    if (index) caps.append(el("span", "shortcuts__plus", "+"));
    caps.append(el("kbd", "", key));
  });
  return caps;
}

function openHelp() {
  if (!dom.shortcutsList.firstChild) {
    dom.shortcutsList.append(...HELP.flatMap(([keys, what]) => [keyCaps(keys), el("dd", "", what)]));
  }
  dom.shortcutsDialog.showModal();
}

export function wireShortcuts() {
  document.addEventListener("keydown", onKeydown);
  dom.newThread.setAttribute("aria-keyshortcuts", MAC ? "Meta+Shift+O" : "Control+Shift+O");
  dom.newThread.title = `New thread (${MOD}+Shift+O)`;
  // A click on the backdrop (outside the dialog's box) closes it too.
  dom.shortcutsDialog.addEventListener("click", (event) => {
    if (event.target === dom.shortcutsDialog) dom.shortcutsDialog.close();
  });
}
