/**
 * Follow the conversation only while the reader is at its bottom. Scrolled up,
 * they keep their place and get a "Jump to latest" button instead.
 */

import { dom } from "./dom.js";

const NEAR_BOTTOM_PX = 48;
let sticky = true; // the reader is at the bottom, so new text should keep it in view

/** Set whether to follow new text, or just ask. */
export function stickToBottom(value) {
  if (value !== undefined) sticky = value;
  return sticky;
}

function isNearBottom() {
  const { scrollHeight, scrollTop, clientHeight } = dom.scroller;
  return scrollHeight - scrollTop - clientHeight < NEAR_BOTTOM_PX;
}

export function scrollToBottom() {
  dom.scroller.scrollTop = dom.scroller.scrollHeight;
  dom.jump.hidden = true;
}

/** The last step of a render: follow, or offer the way back down if there is more below. */
export function renderScroll() {
  if (sticky) scrollToBottom();
  else dom.jump.hidden = isNearBottom();
}

function onScroll() {
  sticky = isNearBottom();
  dom.jump.hidden = sticky;
}

export function wireScroll() {
  dom.scroller.addEventListener("scroll", onScroll, { passive: true });
  dom.jump.addEventListener("click", () => {
    sticky = true;
    scrollToBottom();
    dom.input.focus({ preventScroll: true });
  });
  // The log shrinks when the composer grows or the window resizes: stay at the bottom.
  new ResizeObserver(() => {
    if (sticky) scrollToBottom();
  }).observe(dom.scroller);
}
