/**
 * Why something failed, in a person's words. The server's reasons are written
 * for operators ("model error: could not reach the model provider (gave up
 * after 2 attempts)"); the page shows a short sentence and keeps the reason
 * behind a "Details" disclosure, word for word, for whoever has to dig.
 *
 * The shapes follow the reasons the worker writes (consumers/runner.py,
 * consumers/llm/anthropic.py's summaries, the agent loop's bounds, the
 * workflow engine); tests/test_failure_words.py checks them against those.
 */

import { el, setText } from "./dom.js";

const SHAPES = [
  // Whose failure first: a step's own error text can say anything ("timed out").
  [/^step |^workflow .* raised|nondeterminis/i, "A step of the workflow failed."],
  [/^internal error/i, "Something went wrong on the server."],
  [/could not reach the model|connection failed|ConnectError|connection to the model provider broke/i,
    "Couldn't reach the model."],
  [/rate.limit/i, "The model is getting too many requests. Try again in a minute."],
  [/overloaded|HTTP 529/i, "The model is overloaded right now. Try again in a minute."],
  [/credentials|HTTP 40[13]\b|authentication_error|permission_error/i,
    "The model provider refused the API key. An operator needs to check it."],
  [/timed out|timeout/i, "The model took too long to answer."],
  [/cut off/i, "The model's answer was cut off."],
  [/token budget/i, "This thread has used up its token budget."],
  [/asked for tools after/i, "The agent kept calling tools without finishing."],
  [/hand-offs|hand off to .* after/i, "The agents kept handing the question on without answering."],
  [/worker was lost|delivered \d+ times/i, "The worker answering this kept stopping."],
  [/redis|connection refused|store unavailable/i, "The server lost touch with its database."],
  [/cancel|stopped/i, "The answer was stopped before it finished."],
  [/tool .*(failed|error)|tool error/i, "A tool failed."],
  [/provider failed|HTTP 5\d\d/i, "The model provider had a problem."],
  [/provider refused the request|HTTP 4\d\d/i, "The model provider refused the request."],
  [/^model error/i, "The model returned an error."],
  [/gave up after \d+ attempts/i, "It failed every time it was tried, so it stopped."],
];

export const UNKNOWN_FAILURE = "Something went wrong.";

/**
 * {text, detail}: the sentence for `reason`, and the reason itself as the
 * detail. No reason: `fallback` alone, with nothing to disclose.
 */
export function explainFailure(reason, fallback = UNKNOWN_FAILURE) {
  const detail = String(reason ?? "").trim();
  if (!detail) return { text: fallback, detail: "" };
  const shape = SHAPES.find(([pattern]) => pattern.test(detail));
  return { text: shape ? shape[1] : fallback, detail };
}

/**
 * Show `{text, detail}` in `element`: the sentence, then a closed <details>
 * holding the detail. Updated in place, so an opened disclosure stays open
 * through the stream's renders.
 */
export function showExplained(element, { text, detail = "" }) {
  let parts = explained.get(element);
  if (!parts) {
    const sentence = el("span", "failure__text");
    const more = el("details", "failure__details");
    const summary = el("summary", "failure__summary", "Details");
    const code = el("code", "failure__detail");
    more.append(summary, code);
    element.replaceChildren(sentence, more);
    parts = { sentence, more, code };
    explained.set(element, parts);
  }
  setText(parts.sentence, text);
  parts.more.hidden = !detail;
  if (parts.code.textContent !== detail) {
    parts.code.textContent = detail;
    parts.more.open = false; // a new detail starts closed
  }
}

const explained = new WeakMap(); // element → its sentence and disclosure
