/**
 * An empty thread offers each agent's example prompts (`examples` in GET
 * /api/agents, from the agents file and the workflows) as buttons: one fills the
 * composer and picks its agent, and the person sends it, or changes it first.
 */

import { pickableAgents, renderAgentPicker } from "./agents.js";
import { fillComposer } from "./composer.js";
import { dom, el } from "./dom.js";
import { state } from "./state.js";

// `[[tool …]]` and `[[handoff …]]` tell the offline model what to do: the button's
// label leaves them out (the text it fills keeps them, so the demo does it).
const DIRECTIVE = /\s*\[\[(?:tool|handoff)\s[\s\S]*?\]\]/g;

let signature = "";

export function renderSuggestions() {
  const offered = pickableAgents().filter((agent) => agent.examples?.length);
  const empty = !state.missing && (!state.threadId || state.view) && !dom.messageList.firstChild;
  dom.suggestions.hidden = !empty || !offered.length;
  if (dom.suggestions.hidden) return;
  const now = JSON.stringify(offered.map((agent) => [agent.name, agent.description, agent.examples]));
  if (now === signature) return;
  signature = now;
  const list = el("ul", "suggestions__list");
  for (const agent of offered) {
    for (const example of agent.examples) {
      const item = el("li");
      item.append(button(agent, example));
      list.append(item);
    }
  }
  dom.suggestions.replaceChildren(el("p", "suggestions__title", "Try one of these"), list);
}

function button(agent, example) {
  const made = el("button", "suggestion");
  made.type = "button";
  made.setAttribute("data-testid", "suggestion");
  made.dataset.agent = agent.name;
  made.dataset.example = example;
  made.title = example;
  const name = el("span", "suggestion__agent", agent.name);
  name.title = agent.description ?? "";
  made.append(name, el("span", "suggestion__text", example.replace(DIRECTIVE, "").trim() || example));
  return made;
}

export function wireSuggestions() {
  dom.suggestions.addEventListener("click", (event) => {
    const chosen = event.target.closest?.("[data-testid=suggestion]");
    if (!chosen) return;
    state.agent = chosen.dataset.agent;
    renderAgentPicker();
    fillComposer(chosen.dataset.example);
  });
}
