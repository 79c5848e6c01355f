/** What the page tells the reader besides the messages: errors, toasts, announcements. */

import { dom, setText } from "./dom.js";

const ERROR_VISIBLE_MS = 8_000;
const TOAST_VISIBLE_MS = 6_000;
let errorTimer = null;
let toastTimer = null;
let toastAction = null;

export function showError(message) {
  setText(dom.errorText, message);
  dom.errorBanner.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(hideError, ERROR_VISIBLE_MS);
}

export function hideError() {
  dom.errorBanner.hidden = true;
}

/** A short confirmation, with an optional action such as "Undo". */
export function showToast(text, action = null) {
  setText(dom.toastText, text);
  toastAction = action;
  dom.toastAction.hidden = !action;
  if (action) setText(dom.toastAction, action.label);
  dom.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(hideToast, TOAST_VISIBLE_MS);
}

export function hideToast() {
  dom.toast.hidden = true;
  toastAction = null;
}

export function wireNotices() {
  dom.errorDismiss.addEventListener("click", hideError);
  dom.toastAction.addEventListener("click", () => {
    const action = toastAction;
    hideToast();
    action?.run();
  });
}

/**
 * Say something through the live region. Token streams are too chatty for it:
 * callers announce when answers start and end. Clear first, then set a moment
 * later, so the same phrase twice is announced twice.
 */
export function announce(text) {
  dom.announcer.textContent = "";
  setTimeout(() => {
    dom.announcer.textContent = text;
  }, 100);
}
