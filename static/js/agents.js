/**
 * Who messages can go to: GET /api/agents, the picker, and "@name" mentions.
 * The picker's "Auto" (ROUTED, an empty name) sends no agent: the router decides.
 */

import { listAgents } from "./api.js";
import { dom, el } from "./dom.js";
import { DEFAULT_AGENT, scheduleRender, state } from "./state.js";

export const ROUTED = "";

const AGENTS_RETRY_MS = [2_000, 5_000, 15_000, 30_000];
let loading = null;
let retries = 0;
let pickerSignature = "";

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

/** Chat agents and workflows, in two groups; test-only workflows stay out of it. */
export function renderAgentPicker() {
  const listed = state.agents.filter((agent) => !agent.name.startsWith("test_"));
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
        const option = el("option", "", agent.name);
        option.value = agent.name;
        option.title = agent.description ?? "";
        group.append(option);
      }
      return group;
    });
    const auto = el("option", "", "Auto (router)");
    auto.value = ROUTED;
    auto.title = "The router picks the agent: a mention, a rule, or the default";
    dom.agent.replaceChildren(auto, ...groups.filter((group) => group.children.length));
  }
  dom.agent.value = state.agent;
  dom.agent.title = state.agent === ROUTED
    ? "The router picks the agent"
    : agents.find((agent) => agent.name === state.agent)?.description ?? "";
}

export function wireAgentPicker() {
  dom.agent.addEventListener("change", () => {
    state.agent = dom.agent.value;
    renderAgentPicker();
  });
}
