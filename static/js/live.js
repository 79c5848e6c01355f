/**
 * Websockets that stay up: reconnect with back-off and jitter, notice a socket
 * that went quiet, and give up on the network while the browser is offline.
 *
 * liveThread(): one thread's events. After a drop it reconnects with
 * `?after=<cursor>`, so the events resume exactly where the view stands.
 * liveThreads(): the thread list, a full list first, then one summary per change.
 */

import { parseJson, signedOut } from "./api.js";

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const SILENCE_LIMIT_MS = 35_000; // the server pings every ~15 s: two missed pings and a margin
const CLOSE_TOO_SLOW = 4008;
const CLOSE_NOT_FOUND = 4404;
const CLOSE_UNAUTHENTICATED = 4401;

function wsUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(params)) {
    if (value != null) url.searchParams.set(name, value);
  }
  return url.href;
}

/**
 * A websocket kept alive until stop(). `url()` is asked anew for every
 * connection. `on` supplies: status(text) with text one of connecting, live,
 * reconnecting, offline; frame(frame) for every frame but ping, pong and error;
 * closed(code, refusal) → true to give up for good.
 */
export class LiveSocket {
  #url;
  #on;
  #socket = null;
  #retries = 0;
  #reconnectTimer = null;
  #silenceTimer = null;
  #everOpen = false;
  #refusal = null; // the detail of the last "error" frame, which comes before a refusal
  #stopped = false;
  #live = false;

  constructor(url, on) {
    this.#url = url;
    this.#on = on;
  }

  get live() {
    return this.#live;
  }

  start() {
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    this.#abandon();
  }

  /** The network is back: skip whatever is left of the back-off. */
  wake() {
    if (this.#stopped || this.#socket) return;
    clearTimeout(this.#reconnectTimer);
    this.#retries = 0;
    this.#connect();
  }

  /** The browser lost the network: the socket is as good as dead, and retrying is pointless. */
  pause() {
    if (this.#stopped) return;
    clearTimeout(this.#reconnectTimer);
    this.#abandon();
    this.#status("offline");
  }

  #status(text) {
    this.#live = text === "live";
    this.#on.status(text);
  }

  #connect() {
    if (!navigator.onLine) {
      this.#status("offline"); // wake() carries on once the browser is online again
      return;
    }
    this.#status(this.#everOpen ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.#url());
    this.#socket = socket;
    this.#refusal = null;
    this.#armSilenceTimer(); // also catches a connection attempt that hangs
    // Every handler checks it still belongs to the current socket: abandoned
    // sockets can deliver late frames or closes, which must be ignored.
    const current = () => socket === this.#socket;
    socket.onopen = () => {
      if (!current()) return;
      this.#everOpen = true;
      this.#status("live");
    };
    socket.onmessage = (message) => current() && this.#receive(message.data);
    socket.onclose = (event) => current() && this.#closed(event.code);
  }

  #receive(data) {
    this.#armSilenceTimer();
    const frame = parseJson(data);
    if (!frame || typeof frame !== "object") {
      // Skipping a frame could leave a gap: reconnect instead.
      this.#dropAndRetry();
      return;
    }
    this.#retries = 0; // the server is serving us, so the next drop backs off from the start
    if (frame.type === "error") this.#refusal = frame.detail ?? null;
    else if (frame.type !== "ping" && frame.type !== "pong") this.#on.frame(frame);
  }

  #closed(code) {
    this.#socket = null;
    clearTimeout(this.#silenceTimer);
    if (code === CLOSE_UNAUTHENTICATED) signedOut(this.#refusal); // retrying cannot help
    if (code === CLOSE_UNAUTHENTICATED || this.#on.closed?.(code, this.#refusal)) {
      this.#stopped = true;
      this.#live = false;
      return;
    }
    this.#retryLater();
  }

  #armSilenceTimer() {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = setTimeout(() => this.#dropAndRetry(), SILENCE_LIMIT_MS);
  }

  /** Give up on a socket that went quiet or garbled, even if the browser hasn't noticed. */
  #dropAndRetry() {
    this.#abandon();
    this.#retryLater();
  }

  #retryLater() {
    if (this.#stopped) return;
    this.#status(this.#everOpen ? "reconnecting" : "connecting");
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#connect(), this.#nextDelay());
  }

  /** Exponential back-off with jitter, so clients dropped together don't return together. */
  #nextDelay() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.#retries);
    this.#retries = Math.min(this.#retries + 1, 16);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #abandon() {
    const socket = this.#socket;
    this.#socket = null;
    this.#live = false;
    clearTimeout(this.#silenceTimer);
    try {
      socket?.close();
    } catch {
      // Closing a socket that never opened can throw in old browsers; it is gone either way.
    }
  }
}

/**
 * One thread's events. `on` supplies: cursor() → last applied event id or null;
 * status(text); snapshot(frame); event(id, event); refused(detail); fatal(detail).
 */
export function liveThread(threadId, on) {
  let resume = true; // false after a refusal we don't understand: start over from a snapshot
  const path = `/api/threads/${encodeURIComponent(threadId)}/live`;
  return new LiveSocket(() => wsUrl(path, { after: resume ? on.cursor() : null }), {
    status: on.status,
    frame(frame) {
      if (frame.type === "snapshot") {
        resume = true;
        on.snapshot(frame);
      } else if (frame.type === "event") {
        on.event(frame.id, frame.event);
      }
    },
    closed(code, refusal) {
      if (code === CLOSE_NOT_FOUND) {
        on.status("offline");
        on.fatal(refusal ?? "This thread doesn't exist.");
        return true;
      }
      if (code >= 4000 && code < 5000 && code !== CLOSE_TOO_SLOW) {
        // Perhaps our cursor is no longer valid: a fresh snapshot can't leave a gap.
        resume = false;
        if (refusal) on.refused(refusal);
      }
      // CLOSE_TOO_SLOW means we fell behind: resuming from the cursor is all it takes.
      return false;
    },
  });
}

/** The thread list. `on` supplies: status(text); threads(summaries); thread(summary). */
export function liveThreads(on) {
  return new LiveSocket(() => wsUrl("/api/live/threads"), {
    status: on.status,
    frame(frame) {
      if (frame.type === "threads" && Array.isArray(frame.threads)) on.threads(frame.threads);
      else if (frame.type === "thread" && frame.summary?.id) on.thread(frame.summary);
    },
  });
}
