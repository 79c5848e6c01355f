/**
 * Moving around the page: the skip link, Esc closing whatever lies on top
 * (a dialog, the phone's thread drawer, the inspector) wherever focus is, and
 * the thread list as a drawer on phones.
 *
 * The drawer is the sidebar itself, laid over the conversation below
 * PHONE_WIDTH (style.css has the same number). While it is open the rest of
 * the page is inert, so focus and a screen reader stay in it; it closes on
 * Esc, on picking a thread, and on a tap outside it.
 */

import { dom } from "./dom.js";
import { toggleInspector } from "./inspector.js";
import { state } from "./state.js";

const PHONE = window.matchMedia("(max-width: 720px)");

let drawerOpen = false;

export function isDrawerOpen() {
  return drawerOpen;
}

/** Open or close the phone's thread drawer; focus goes in, and back to the menu button. */
export function setDrawer(open, { returnFocus = true } = {}) {
  const opening = Boolean(open) && PHONE.matches;
  if (opening === drawerOpen) return;
  drawerOpen = opening;
  document.body.classList.toggle("drawer-open", opening);
  dom.drawerBackdrop.hidden = !opening;
  dom.menu.setAttribute("aria-expanded", String(opening));
  for (const behind of [dom.conversation, dom.inspector]) behind.inert = opening;
  if (opening) {
    const current = dom.threadList.querySelector("a[aria-current='page']");
    (current ?? dom.threadList.querySelector("a") ?? dom.newThread).focus();
  } else if (returnFocus && (dom.sidebar.contains(document.activeElement)
      || document.activeElement === document.body)) {
    dom.menu.focus();
  }
}

/** The topmost open <dialog>, if any: a modal one would close on Esc by itself, others wouldn't. */
function openDialog() {
  const open = [...document.querySelectorAll("dialog[open]")];
  return open.at(-1) ?? null;
}

/**
 * Esc closes what lies on top, nearest first, wherever focus is. A control
 * that uses Esc itself (renaming, a suggestion list) prevents the default
 * first, and then this leaves it be; with nothing to close, Esc goes on to
 * stop the answer (composer.js).
 */
function onEscape(event) {
  if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
  if (event.shiftKey || event.ctrlKey || event.metaKey || event.altKey) return; // others' shortcuts
  const dialog = openDialog();
  if (dialog) {
    // Taken here either way, so the same Esc stops no answer; requestClose lets
    // the dialog's owner hear "cancel" as it would from the browser's own Esc.
    event.preventDefault();
    if (typeof dialog.requestClose === "function") dialog.requestClose();
    else dialog.close();
  } else if (drawerOpen) {
    event.preventDefault();
    setDrawer(false);
  } else if (state.inspectorOpen) {
    event.preventDefault();
    const inside = dom.inspector.contains(document.activeElement);
    toggleInspector(false);
    if (inside || document.activeElement === document.body) dom.inspectorToggle.focus();
  }
}

/** Into the message box without touching the URL: its #fragment would read as a thread id. */
function onSkipLink(event) {
  event.preventDefault();
  if (drawerOpen) setDrawer(false, { returnFocus: false });
  dom.input.focus();
}

export function wireNavigation() {
  // Before composer.js's Esc (stop the answer): the same key closes what is on top first.
  document.addEventListener("keydown", onEscape);
  dom.skipLink.addEventListener("click", onSkipLink);
  dom.menu.addEventListener("click", () => setDrawer(!drawerOpen));
  dom.drawerBackdrop.addEventListener("click", () => setDrawer(false));
  // Picking a thread (or starting one) closes the drawer: the conversation is what comes next.
  // Captured, so the page is no longer inert when the button's own handler moves focus into it.
  dom.sidebar.addEventListener("click", (event) => {
    if (event.target.closest("a.thread, #new-thread")) setDrawer(false);
  }, true);
  window.addEventListener("hashchange", () => setDrawer(false, { returnFocus: false }));
  // Wider than a phone there is no drawer: a rotated phone must not stay inert.
  PHONE.addEventListener("change", () => {
    if (!PHONE.matches) setDrawer(false, { returnFocus: false });
  });
}
