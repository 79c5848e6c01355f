/**
 * JSON values for people: objects as name → value lists (nested ones
 * indented), arrays as lists, texts as they are, wrapped, and cut when very
 * long. The raw JSON stays one click away, behind "Show JSON", whole.
 *
 * Everything goes in through textContent: a value is data, never markup.
 */

import { el, setText } from "./dom.js";

const TEXT_CHARS = 1_200; // a longer text is cut here; "Show JSON" has all of it
const ITEMS = 50; // entries shown of one object or array; "Show JSON" has the rest
const DEPTH = 6; // past this, nested values show as compact JSON

/** A value as a key/value list (objects), a list (arrays) or a word (scalars). */
export function valueView(value, depth = 0) {
  if (value === null || value === undefined) return el("span", "value value--empty", "none");
  if (typeof value === "string") return textView(value);
  if (typeof value === "number" || typeof value === "boolean") {
    return el("span", `value value--${typeof value}`, String(value));
  }
  if (depth >= DEPTH) return el("code", "value value--json", cut(JSON.stringify(value)));
  if (Array.isArray(value)) return listView(value, depth);
  return objectView(value, depth);
}

function textView(text) {
  if (!text) return el("span", "value value--empty", "empty text");
  return el("span", "value value--text", cut(text));
}

function cut(text) {
  return text.length > TEXT_CHARS ? `${text.slice(0, TEXT_CHARS - 1)}…` : text;
}

function listView(items, depth) {
  if (!items.length) return el("span", "value value--empty", "empty list");
  const list = el("ol", "value value--list");
  for (const item of items.slice(0, ITEMS)) {
    const entry = el("li", "value__item");
    entry.append(valueView(item, depth + 1));
    list.append(entry);
  }
  if (items.length > ITEMS) list.append(el("li", "value__more", `… ${items.length - ITEMS} more`));
  return list;
}

function objectView(object, depth) {
  const entries = Object.entries(object);
  if (!entries.length) return el("span", "value value--empty", "nothing");
  const list = el("dl", "value value--object");
  for (const [key, item] of entries.slice(0, ITEMS)) {
    const name = el("dt", "value__key", key);
    const shown = el("dd", "value__value");
    shown.append(valueView(item, depth + 1));
    list.append(name, shown);
  }
  if (entries.length > ITEMS) {
    list.append(el("dt", "value__more", `… ${entries.length - ITEMS} more`), el("dd"));
  }
  return list;
}

/**
 * A value shown as a list, with a "Show JSON" toggle that swaps in its raw
 * JSON (objects and arrays only: a word is its own JSON). `label` names the
 * value in the toggle's accessible name ("the result"). Returns
 * {node, view, json, update(value)}; `empty` is what an empty value says
 * ("no arguments"). `view`, `json` and the toggle have the
 * test ids `testId`, `${testId}-json` and `${testId}-toggle`.
 */
export function createValueBox(label, testId, { empty = null } = {}) {
  const node = el("div", "value-box");
  const view = el("div", "value-box__view");
  view.setAttribute("data-testid", testId);
  const json = el("pre", "value-box__json");
  json.setAttribute("data-testid", `${testId}-json`);
  json.hidden = true;
  const toggle = el("button", "value-box__toggle", "Show JSON");
  toggle.type = "button";
  toggle.setAttribute("aria-pressed", "false");
  toggle.setAttribute("aria-label", `Show JSON of ${label}`); // the visible words first (axe)
  toggle.setAttribute("data-testid", `${testId}-toggle`);
  toggle.addEventListener("click", () => {
    const shown = json.hidden;
    json.hidden = !shown;
    view.hidden = shown;
    toggle.setAttribute("aria-pressed", String(shown));
  });
  node.append(toggle, view, json);
  const box = {
    node, view, json, toggle, signature: undefined,
    update(value) {
      const signature = JSON.stringify(value ?? null);
      if (signature === box.signature) return;
      box.signature = signature;
      const blank = value == null || (typeof value === "object" && !Object.keys(value).length);
      view.replaceChildren(blank && empty ? el("span", "value value--empty", empty) : valueView(value));
      setText(json, JSON.stringify(value ?? null, null, 2));
      const structured = value !== null && typeof value === "object";
      toggle.hidden = !structured;
      if (!structured && !json.hidden) toggle.click(); // back to the only view there is
    },
  };
  return box;
}
