/**
 * Model output as markdown: parsed by marked, sanitised by DOMPurify, both
 * served from static/vendor/ (make copies them there from node_modules; never
 * from a CDN).
 *
 * Nothing in the output can run. Raw HTML is shown as the text it is, never
 * parsed, and whatever marked makes still goes through DOMPurify, which drops
 * event handlers, scripts and javascript: URLs. Links open in a new tab with
 * rel="noopener noreferrer". Images become links: an image that loads by
 * itself could carry data out to any address a prompt injection chose.
 *
 * The libraries are imported dynamically: if static/vendor/ is missing, answers
 * show as plain text instead of the whole page failing to load.
 *
 * Fenced code with a language is highlighted (highlight.js) inside marked's
 * renderer, so DOMPurify still sees, and cleans, everything. A fence still
 * being written is left plain until it closes: a stream re-renders every frame.
 */

import { el } from "./dom.js";
import { highlightCode, highlightReady, highlightVersion } from "./highlight.js";

const PURIFY_CONFIG = {
  FORBID_TAGS: ["style", "form", "button", "textarea", "select", "option"],
  FORBID_ATTR: ["style", "id", "name"], // ids and names could clobber the page's own
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

let engine = null; // {marked, purify} once both have loaded

const libraries = Promise.all([
  import("../vendor/marked.esm.js"),
  import("../vendor/purify.es.mjs"),
]).then(([markedModule, purifyModule]) => {
  engine = setUp(markedModule.Marked, purifyModule.default);
}).catch((error) => {
  console.warn("Answers show as plain text: static/vendor/ lacks marked or DOMPurify (run make).", error);
});

export const markdownReady = Promise.all([libraries, highlightReady]);

/** Changes when rendering does, so messages rendered before the libraries arrived re-render. */
export function markdownVersion() {
  return (engine ? 1 : 0) + 2 * highlightVersion();
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (char) => ESCAPES[char]);
}

function setUp(Marked, purify) {
  const marked = new Marked({ gfm: true, breaks: true, async: false });
  marked.use({
    renderer: {
      html({ text, block }) {
        const shown = escapeHtml(text);
        return block ? `<p>${shown}</p>\n` : shown;
      },
      image({ href, text }) {
        return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
      },
      code({ text, lang, raw }) {
        const language = /^\S*/.exec(lang ?? "")[0];
        const code = String(text ?? "").replace(/\n$/, "");
        const html = language && fenceClosed(raw) ? highlightCode(code, language) : null;
        if (html === null) return false; // marked's own: plain, escaped
        return `<pre><code class="hljs language-${escapeHtml(language)}">${html}\n</code></pre>\n`;
      },
    },
  });
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
  return { marked, purify };
}

/** A fenced block whose closing fence has arrived (marked also ends an open one at the text's end). */
function fenceClosed(raw) {
  const lines = String(raw ?? "").trimEnd().split("\n");
  const opening = /^ {0,3}(`{3,}|~{3,})/.exec(lines[0])?.[1];
  if (!opening || lines.length < 2) return false;
  const closing = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines.at(-1))?.[1];
  return Boolean(closing) && closing[0] === opening[0] && closing.length >= opening.length;
}

/**
 * Render `text` into `element`: markdown when the libraries are there, else
 * plain text. `streaming` adds a caret after the last word.
 */
export function renderMarkdown(element, text, { streaming = false } = {}) {
  element.classList.toggle("content--plain", !engine);
  if (!engine) {
    element.textContent = text;
    if (streaming && text) element.append(caret());
    return;
  }
  const fragment = engine.purify.sanitize(engine.marked.parse(text), PURIFY_CONFIG);
  decorate(fragment);
  if (streaming && text) caretHost(fragment).append(caret());
  element.replaceChildren(fragment);
}

function caret() {
  const node = el("span", "caret");
  node.setAttribute("aria-hidden", "true");
  return node;
}

/** Where the caret goes: the end of the last line of text, inside lists, quotes and code. */
function caretHost(root) {
  let node = root;
  while (node.lastElementChild) {
    const last = node.lastElementChild;
    if (last.matches(".codeblock")) return last.querySelector("code") ?? last;
    if (!last.matches("ul, ol, li, blockquote, div, table, thead, tbody, tr, td, th, p, h1, h2, h3, h4, h5, h6")) {
      break;
    }
    node = last;
  }
  return node;
}

/** Code blocks get a bar with their language and a Copy button; tables scroll on their own. */
function decorate(root) {
  for (const pre of root.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const language = /language-([\w+#.-]+)/.exec(code?.className ?? "")?.[1] ?? "";
    const block = el("div", "codeblock");
    const bar = el("div", "codeblock__bar");
    const copy = el("button", "codeblock__copy", "Copy");
    copy.type = "button";
    copy.dataset.action = "copy-code";
    copy.setAttribute("aria-label", language ? `Copy ${language} code` : "Copy code");
    bar.append(el("span", "codeblock__language", language || "code"), copy);
    pre.replaceWith(block);
    block.append(bar, pre);
  }
  for (const table of root.querySelectorAll("table")) {
    const scroller = el("div", "table-scroll");
    table.replaceWith(scroller);
    scroller.append(table);
  }
}
