/**
 * Who messages can go to: GET /api/agents, the picker, and "@name" mentions.
 * The picker's "Auto" (ROUTED, an empty name) sends no agent: the router decides.
 * The picker follows the draft: while it mentions a known agent, it shows that
 * one (the message goes there), until the person picks another by hand.
 */

import { listAgents } from "./api.js";
import { dom, el } from "./dom.js";
import { DEFAULT_AGENT, scheduleRender, state } from "./state.js";

export const ROUTED = "";

const AGENTS_RETRY_MS = [2_000, 5_000, 15_000, 30_000];
let loading = null;
let retries = 0;
let pickerSignature = "";
let pickedOverMention = false; // the person chose in the picker while the draft mentioned someone

// As the server's router reads mentions (consumers/router.py `_MENTION`): `@name` at
// the start or after a space or punctuation, not inside an address (a@b.c).
const MENTION = /(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_-]{1,64})/g;

/** Fetch the agents. Resolves either way; a failure tries again later. */
export function loadAgents() {
  loading ??= (async () => {
    try {
      const agents = await listAgents();
      state.agents = Array.isArray(agents) ? agents.filter((agent) => agent?.name) : [];
      state.agentsLoaded = true;
    } catch {
      const delay = AGENTS_RETRY_MS[Math.min(retries, AGENTS_RETRY_MS.length - 1)];
      retries += 1;
      setTimeout(loadAgents, delay);
    } finally {
      loading = null;
    }
    renderAgentPicker();
    scheduleRender();
  })();
  return loading;
}

export function knownAgent(name) {
  return state.agents.some((agent) => agent.name === name);
}

/** The known agents `text` @mentions, in order, each once: whom the router would ask. */
export function mentionsIn(text) {
  const found = [];
  for (const [, name] of text.matchAll(MENTION)) {
    if (knownAgent(name) && !found.includes(name)) found.push(name);
  }
  return found;
}

/** The picker was changed by hand over the draft's mentions: the pick decides. */
export function pickOverridesMentions() {
  return pickedOverMention;
}

/** Agents a person may address: test-only workflows stay out of sight. */
export function pickableAgents() {
  return state.agents.filter((agent) => !agent.name.startsWith("test_"));
}

/** Chat agents and workflows, in two groups, each with its description. */
export function renderAgentPicker() {
  const listed = pickableAgents();
  const agents = listed.length
    ? listed
    : [{ name: DEFAULT_AGENT, kind: "chat", description: "" }];
  if (state.agent !== ROUTED && !agents.some((agent) => agent.name === state.agent)) {
    state.agent = agents.some((agent) => agent.name === DEFAULT_AGENT) ? DEFAULT_AGENT : agents[0].name;
  }
  const signature = JSON.stringify(agents.map((agent) => [agent.name, agent.kind, agent.description]));
  if (signature !== pickerSignature) {
    pickerSignature = signature;
    const groups = [["chat", "Chat"], ["workflow", "Workflows"]].map(([kind, label]) => {
      const group = document.createElement("optgroup");
      group.label = label;
      for (const agent of agents.filter((candidate) => (candidate.kind ?? "chat") === kind)) {
        group.append(agentOption(agent));
      }
      return group;
    });
    const auto = el("option", "", "Auto (router)");
    auto.value = ROUTED;
    auto.title = "The router picks the agent: a mention, a rule, or the default";
    // The select's own button (appearance: base-select; see index.html) stays first.
    const button = dom.agent.querySelector(":scope > button");
    dom.agent.replaceChildren(...(button ? [button] : []), auto, ...groups.filter((group) => group.children.length));
  }
  showPickedAgent(agents);
}

/**
 * An option shows the agent's name and, in the open list, its description. Browsers
 * that can style a select's list (appearance: base-select) show the closed picker
 * with the name alone; others show "name — description" as the option's text.
 */
function agentOption(agent) {
  const option = el("option", "agent-option");
  option.value = agent.name;
  option.title = agent.description ?? "";
  option.append(el("span", "agent-option__name", agent.name));
  if (agent.description) {
    option.append(el("span", "agent-option__sep", " — "), el("span", "agent-option__about", agent.description));
  }
  return option;
}

/** The picker shows whom the draft goes to: the first agent it mentions, else the pick. */
function showPickedAgent(agents) {
  const mentioned = mentionsIn(dom.input.value);
  if (!mentioned.length) pickedOverMention = false;
  const following = mentioned.length > 0 && !pickedOverMention;
  const shown = following ? mentioned[0] : state.agent;
  dom.agent.value = shown;
  dom.agent.dataset.mentioned = String(following);
  if (following && mentioned.length > 1) {
    dom.agent.title = `Goes to ${mentioned.join(", ")}: the message mentions them`;
  } else if (following) {
    dom.agent.title = `Goes to ${shown}: the message mentions it`;
  } else {
    dom.agent.title = shown === ROUTED
      ? "The router picks the agent"
      : agents.find((agent) => agent.name === shown)?.description ?? "";
  }
}

/** The draft changed: the picker follows its mentions. */
export function followDraft() {
  renderAgentPicker();
}

export function wireAgentPicker() {
  dom.agent.addEventListener("change", () => {
    state.agent = dom.agent.value;
    pickedOverMention = mentionsIn(dom.input.value).length > 0;
    renderAgentPicker();
  });
}
