/**
 * "@" in the composer opens a list of the agents to mention, with what each
 * does, narrowed as the name is typed: the ARIA combobox pattern (the textarea
 * is the combobox, #mention-list its listbox; focus stays in the textarea and
 * aria-activedescendant names the option in view). Arrows move, Enter or Tab
 * picks, Esc closes; a click picks too. Picking writes `@name ` in place.
 */

import { pickableAgents } from "./agents.js";
import { dom, el } from "./dom.js";

// An "@" at the start or after a space, then the name so far, up to the caret.
const TYPING = /(?:^|\s)@([A-Za-z0-9_-]{0,64})$/;
const NAME_CHARS = /^[A-Za-z0-9_-]*/;

let open = null; // {start, end, options: [agent], active: index} while the list shows

/** The mention being typed at the caret: where it starts and ends, and its text. */
function typedMention(input) {
  if (input.selectionStart !== input.selectionEnd) return null;
  const caret = input.selectionStart;
  const typed = TYPING.exec(input.value.slice(0, caret));
  if (!typed) return null;
  const rest = NAME_CHARS.exec(input.value.slice(caret))[0]; // the caret may be mid-name
  return { start: caret - typed[1].length - 1, end: caret + rest.length, query: typed[1].toLowerCase() };
}

/** Names that start with what was typed first, then names and descriptions that contain it. */
function matching(query) {
  const agents = pickableAgents();
  const rank = (agent) => {
    const name = agent.name.toLowerCase();
    if (name.startsWith(query)) return 0;
    if (name.includes(query)) return 1;
    return (agent.description ?? "").toLowerCase().includes(query) ? 2 : -1;
  };
  return agents
    .map((agent, index) => ({ agent, index, rank: rank(agent) }))
    .filter((entry) => entry.rank >= 0)
    .sort((a, b) => a.rank - b.rank || a.index - b.index)
    .map((entry) => entry.agent);
}

function optionId(agent) {
  return `mention-option-${agent.name}`;
}

function update(input) {
  const mention = typedMention(input);
  const options = mention ? matching(mention.query) : [];
  if (!options.length) {
    close(input);
    return;
  }
  const previous = open?.options[open.active]?.name;
  const kept = options.findIndex((agent) => agent.name === previous);
  open = { start: mention.start, end: mention.end, options, active: Math.max(kept, 0) };
  render(input);
}

function render(input) {
  const list = dom.mentionList;
  list.replaceChildren(...open.options.map((agent, index) => {
    const option = el("li", "mention-option");
    option.id = optionId(agent);
    option.setAttribute("role", "option");
    option.setAttribute("aria-selected", String(index === open.active));
    option.setAttribute("data-testid", "mention-option");
    option.dataset.agent = agent.name;
    const head = el("span", "mention-option__head");
    head.append(el("span", "mention-option__name", `@${agent.name}`));
    if (agent.kind === "workflow") head.append(el("span", "mention-option__kind", "workflow"));
    option.append(head);
    if (agent.description) option.append(el("span", "mention-option__about", agent.description));
    return option;
  }));
  list.hidden = false;
  input.setAttribute("aria-expanded", "true");
  showActive(input);
}

function showActive(input) {
  const options = dom.mentionList.children;
  for (let index = 0; index < options.length; index += 1) {
    options[index].setAttribute("aria-selected", String(index === open.active));
  }
  const active = options[open.active];
  input.setAttribute("aria-activedescendant", active.id);
  active.scrollIntoView({ block: "nearest" });
}

function close(input) {
  if (!open && dom.mentionList.hidden) return;
  open = null;
  dom.mentionList.hidden = true;
  dom.mentionList.replaceChildren();
  input.setAttribute("aria-expanded", "false");
  input.removeAttribute("aria-activedescendant");
}

/** Write `@name ` over what was typed, and go on typing after it. */
function pick(input, agent) {
  const { start, end } = open;
  const after = input.value.slice(end);
  const inserted = `@${agent.name}${after.startsWith(" ") ? "" : " "}`;
  input.value = input.value.slice(0, start) + inserted + after;
  const caret = start + inserted.length + (after.startsWith(" ") ? 1 : 0);
  input.setSelectionRange(caret, caret);
  close(input);
  input.dispatchEvent(new Event("input", { bubbles: true })); // the composer grows, the picker follows
  input.focus();
}

function onKeydown(event) {
  const input = event.currentTarget;
  if (!open || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
  const count = open.options.length;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    open.active = (open.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
    showActive(input);
  } else if ((event.key === "Enter" || event.key === "Tab") && !event.shiftKey) {
    pick(input, open.options[open.active]);
  } else if (event.key === "Escape" && !event.shiftKey) {
    close(input); // and nothing else: not a Stop
  } else {
    return;
  }
  event.preventDefault();
}

export function wireMentions(input) {
  input.addEventListener("keydown", onKeydown);
  input.addEventListener("input", () => update(input));
  // The caret moved without typing: the list follows it (or closes).
  input.addEventListener("click", () => update(input));
  input.addEventListener("keyup", (event) => {
    if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) update(input);
  });
  input.addEventListener("blur", () => close(input));
  const list = dom.mentionList;
  // Pressing an option must not take focus from the textarea (which would close the list).
  list.addEventListener("mousedown", (event) => event.preventDefault());
  list.addEventListener("click", (event) => {
    const option = event.target.closest?.("[role=option]");
    const agent = open?.options.find((candidate) => candidate.name === option?.dataset.agent);
    if (agent) pick(input, agent);
  });
  list.addEventListener("mousemove", (event) => {
    const option = event.target.closest?.("[role=option]");
    const index = open ? open.options.findIndex((agent) => agent.name === option?.dataset.agent) : -1;
    if (index >= 0 && index !== open.active) {
      open.active = index;
      showActive(input);
    }
  });
}
