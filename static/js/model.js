/**
 * Which model answers, in the header (GET /api/about): the offline demo model says
 * so plainly, with how to use a real one; a real model shows its name. The badge
 * is a button that opens a line of explanation (a tooltip alone is out of reach
 * on a phone and for the keyboard).
 */

import { getAbout } from "./api.js";
import { dom, el } from "./dom.js";

const RETRY_MS = [2_000, 5_000, 15_000, 30_000];
let retries = 0;

/** Ask the server once it is signed in; a failure tries again later. */
export async function loadModelBadge() {
  try {
    showModel(await getAbout());
  } catch {
    const delay = RETRY_MS[Math.min(retries, RETRY_MS.length - 1)];
    retries += 1;
    setTimeout(loadModelBadge, delay);
  }
}

function showModel(about) {
  if (!about?.model) return;
  const demo = Boolean(about.demo);
  const badge = dom.modelBadge;
  // On a phone the badge says "demo" alone: the header has no room for more.
  badge.replaceChildren(...(demo
    ? [el("span", "model-badge__more", "offline "), "demo", el("span", "model-badge__more", " model")]
    : [about.model]));
  badge.dataset.demo = String(demo);
  badge.title = demo
    ? "Answers are made up from your words, offline. Click for how to use a real model."
    : `Answers come from ${about.model} (${about.llm})`;
  const real = `Answers come from ${about.model}, through the ${about.llm} provider.`;
  dom.modelHint.replaceChildren(...(demo ? demoHint() : [real]));
  badge.hidden = false;
}

/** What the demo model is, and the one step to a real one. */
function demoHint() {
  return [
    "This is Slipstream's offline demo model: its answers are made up from your words, to show how answers stream, "
      + "route and call tools. For a real model, set ",
    el("code", "", "ANTHROPIC_API_KEY"),
    " (or ",
    el("code", "", "SLIPSTREAM_LLM=anthropic"),
    ") and restart.",
  ];
}

function setOpen(open) {
  dom.modelBadge.setAttribute("aria-expanded", String(open));
  dom.modelHint.hidden = !open;
}

export function wireModelBadge() {
  dom.modelBadge.addEventListener("click", () => {
    setOpen(dom.modelHint.hidden);
  });
  // Esc or a click elsewhere closes it, as any popup.
  dom.modelBadge.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || dom.modelHint.hidden) return;
    event.preventDefault(); // not a Stop
    setOpen(false);
  });
  document.addEventListener("click", (event) => {
    if (!dom.modelHint.hidden && !event.target.closest?.(".model")) setOpen(false);
  });
}
