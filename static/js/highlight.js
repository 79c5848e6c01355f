/**
 * Code highlighting for markdown.js: highlight.js's core and the languages
 * people paste most, served from static/vendor/highlight/ (make copies them
 * from node_modules). Registered by hand rather than the package's "common"
 * bundle, so the page loads 17 small grammars, not 40.
 *
 * highlight.js escapes the code and only adds <span class="hljs-…">; its
 * output still goes through DOMPurify with the rest of the answer. Colours
 * are style.css's, from the page's theme variables.
 *
 * Only fences with a language get colours: guessing one (highlightAuto) runs
 * every grammar over the block, too slow for text that re-renders per frame.
 */

const LANGUAGES = [
  "python", "javascript", "typescript", "json", "bash", "shell", "sql", "xml", "css", "go",
  "rust", "java", "c", "cpp", "yaml", "markdown", "diff",
];
const CACHE_SIZE = 200; // highlighted blocks kept: a stream re-renders its closed blocks every frame

let hljs = null;
const cache = new Map(); // language + "\0" + code → highlighted HTML, oldest first

async function load() {
  const core = (await import("../vendor/highlight/core.js")).default;
  const grammars = await Promise.all(
    LANGUAGES.map((name) => import(`../vendor/highlight/languages/${name}.js`)),
  );
  LANGUAGES.forEach((name, i) => core.registerLanguage(name, grammars[i].default));
  hljs = core;
}

/** Settles (never rejects) once highlighting is there, or known to be missing. */
export const highlightReady = load().catch((error) => {
  console.warn("Code shows without colours: static/vendor/highlight/ is missing (run make).", error);
});

/** Changes when highlighting becomes available, so code rendered before it re-renders. */
export function highlightVersion() {
  return hljs ? 1 : 0;
}

/** A fence's language, lower-cased, if a grammar here knows it (aliases too: py, sh, yml), else null. */
export function knownLanguage(language) {
  if (!hljs || !language) return null;
  return hljs.getLanguage(language) ? language.toLowerCase() : null;
}

/** `code` as highlighted HTML (escaped, spans only), or null when `language` isn't known. */
export function highlightCode(code, language) {
  const name = knownLanguage(language);
  if (!name) return null;
  const key = `${name}\0${code}`;
  let html = cache.get(key);
  if (html === undefined) {
    html = hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value);
  } else {
    cache.delete(key); // to the newest end
  }
  cache.set(key, html);
  return html;
}
