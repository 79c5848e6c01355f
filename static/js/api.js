/** The JSON API: one fetch wrapper, its error type, and a function per endpoint. */

const SEND_RETRY_DELAYS_MS = [500, 1_000, 2_000, 4_000];

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status; // 0 when the server was never reached
  }

  /** Worth trying again: the request may never have arrived, or the server hiccupped. */
  get retryable() {
    return this.status === 0 || this.status >= 500;
  }
}

/** The event a 401 (or a socket closed 4401) sends the page: sign in again. */
export const SIGNED_OUT = "slipstream:signed-out";

export function signedOut(detail) {
  window.dispatchEvent(new CustomEvent(SIGNED_OUT, { detail }));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A v4 UUID, the client id that makes a resent request harmless. crypto.randomUUID
 * only exists in secure contexts, and plain http on a LAN is not one.
 */
export function newClientId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)]
    .join("-");
}

/** Call the JSON API. Resolves with the parsed body (null if empty); rejects with an ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch {
    throw new ApiError("Can't reach the server. Check your connection.", 0);
  }
  const payload = parseJson(text);
  // Asking who we are, or signing in, expects a 401: only other calls mean "signed out".
  if (response.status === 401 && path !== "/api/session") signedOut(errorDetail(payload, response));
  if (!response.ok) throw new ApiError(errorDetail(payload, response), response.status);
  return payload;
}

export function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The server's `detail`, which FastAPI makes a list of problems for validation errors. */
function errorDetail(payload, response) {
  const detail = payload?.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((item) => item?.msg ?? JSON.stringify(item)).join("; ");
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

/** Retry a request that may never have arrived; only safe for idempotent ones. */
export async function withRetries(request) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await request();
    } catch (error) {
      const delay = SEND_RETRY_DELAYS_MS[attempt];
      if (!(error instanceof ApiError) || !error.retryable || delay === undefined) throw error;
      await sleep(delay);
    }
  }
}

const thread = (id) => `/api/threads/${encodeURIComponent(id)}`;
const run = (id) => `/api/runs/${encodeURIComponent(id)}`;

export const listThreads = (archived = false) =>
  api("GET", archived ? "/api/threads?archived=true" : "/api/threads");
export const createThread = () => api("POST", "/api/threads", {});
/** The caller's threads matching `query` (titles and message text), best match first. */
export const searchThreads = (query) =>
  api("GET", `/api/threads?${new URLSearchParams({ q: query })}`);
export const deleteThread = (id) => api("DELETE", thread(id));
/** `patch`: {title} to rename, {archived: true|false} to archive or bring back. */
export const updateThread = (id, patch) => api("PATCH", thread(id), patch);
export const sendMessage = (threadId, body) => api("POST", `${thread(threadId)}/messages`, body);
export function threadEvents(threadId, { after = null, limit = 1000 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (after) query.set("after", after);
  return api("GET", `${thread(threadId)}/events?${query}`);
}
// Commands on runs carry a client id: a resend of one (withRetries) answers what the
// first answered and writes nothing, so a lost 202 is safe to ask again.
export const cancelRun = (id, clientId) => api("POST", `${run(id)}/cancel`, { client_id: clientId });
export const retryRun = (id, clientId) => api("POST", `${run(id)}/retry`, { client_id: clientId });
export const regenerateRun = (id, clientId) =>
  api("POST", `${run(id)}/regenerate`, { client_id: clientId });
export const signalRun = (id, name, payload, clientId) =>
  api("POST", `${run(id)}/signal`, { name, payload, client_id: clientId });
export const listAgents = () => api("GET", "/api/agents");
export const getAbout = () => api("GET", "/api/about");
