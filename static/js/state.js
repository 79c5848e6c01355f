/**
 * The app's one state object, and the render loop every module schedules through.
 *
 * Modules change `state`, then call scheduleRender(): the many updates of a
 * token stream coalesce into one render per animation frame.
 */

export const DEFAULT_AGENT = "assistant";
export const RUN_ENDED = ["completed", "cancelled", "failed"];
export const RUN_RETRYABLE = ["failed", "cancelled"]; // what POST /api/runs/{id}/retry accepts

export const state = {
  threads: [], // unarchived summaries for the sidebar, newest activity first
  archivedThreads: null, // archived summaries, once the Archived list has been asked for
  showArchived: false, // the sidebar lists the archived threads instead
  threadsFailed: false,
  threadId: null, // the open thread, or null for a fresh conversation
  view: null, // its folded view; null until the snapshot arrives
  live: null, // its live socket
  missing: null, // why the open thread can't be shown, when it doesn't exist
  outbox: new Map(), // client_id → optimistic user message not yet seen in the stream
  stoppingRun: null, // run id whose cancel has been asked for, until the run ends
  retryingRuns: new Map(), // run id → the ended_at of the ending its retry was asked for
  regenerating: new Map(), // run id → its message's answer count when regeneration was asked for
  answerChoice: new Map(), // answer group (answers.js) → {runId, count}: the answer shown among several
  versionChoice: new Map(), // a message's parent ("" for the first) → the version of it shown
  editing: null, // the id of the user message being edited
  openDetails: new Set(), // ids of the answers whose details are shown
  signalling: new Map(), // run id → the wait (waitKey) a signal was sent to, while it stands
  search: { query: "", results: [], loading: false, error: null }, // the sidebar's search
  reveal: null, // {threadId, messageId}: scrolled to once shown (the message a search hit matched)
  revealPaged: false, // the thread was paged to show it (it was on another branch)
  agents: [], // from GET /api/agents: [{name, kind, description, signals}]
  agentsLoaded: false,
  agent: DEFAULT_AGENT, // the picker's choice
  inspectorOpen: false,
};

const renderers = [];
const HIDDEN_TAB_MS = 250; // hidden tabs get no animation frames: render on a timer there
let queued = false;
let frame = 0;
let timer = 0;

/** Add a step to every render, in the order they are added. */
export function onRender(renderer) {
  renderers.push(renderer);
}

/**
 * Render at the next animation frame. Tabs in the background get no frames,
 * so a timer stands in: every tab's page stays current (a Stop button shows
 * in every tab), at the rate the browser allows a hidden page.
 */
export function scheduleRender() {
  if (queued) return;
  queued = true;
  frame = requestAnimationFrame(renderNow);
  timer = setTimeout(renderNow, HIDDEN_TAB_MS);
}

export function renderNow() {
  if (!queued) return;
  queued = false;
  cancelAnimationFrame(frame);
  clearTimeout(timer);
  for (const renderer of renderers) renderer();
}
