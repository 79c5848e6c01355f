/** The page's fixed elements, and small helpers to make new ones. */

const IDS = {
  sidebar: "sidebar",
  threadList: "thread-list",
  threadListEmpty: "thread-list-empty",
  threadListHeading: "thread-list-heading",
  newThread: "new-thread",
  archivedToggle: "archived-toggle",
  title: "thread-title",
  titleForm: "title-form",
  titleInput: "title-input",
  archivedBadge: "archived-badge",
  rename: "rename-thread",
  archive: "archive-thread",
  deleteThread: "delete-thread",
  deleteDialog: "delete-dialog",
  deleteDialogName: "delete-dialog-name",
  threadSearch: "thread-search",
  threadSearchStatus: "thread-search-status",
  inspectorToggle: "inspector-toggle",
  connection: "connection-status",
  modelBadge: "model-badge",
  modelHint: "model-hint",
  threadUsage: "thread-usage",
  errorBanner: "error-banner",
  errorText: "error-text",
  errorDismiss: "error-dismiss",
  toast: "toast",
  toastText: "toast-text",
  toastAction: "toast-action",
  scroller: "messages",
  empty: "empty-state",
  emptyTitle: "empty-title",
  emptyBody: "empty-body",
  suggestions: "suggestions",
  messageList: "message-list",
  jump: "jump-to-latest",
  composer: "composer",
  input: "message-input",
  mentionList: "mention-list",
  agent: "agent-select",
  send: "send-button",
  stop: "stop-button",
  stopLabel: "stop-label",
  announcer: "announcer",
  inspector: "inspector",
  inspectorKey: "inspector-key",
  inspectorCount: "inspector-count",
  inspectorRows: "inspector-rows",
  inspectorClose: "inspector-close",
  skipLink: "skip-link",
  menu: "menu-button",
  drawerBackdrop: "drawer-backdrop",
  conversation: "conversation",
  shortcutsDialog: "shortcuts-dialog",
  shortcutsList: "shortcuts-list",
};

/** Filled in by collectDom() once the page is there. */
export const dom = {};

export function collectDom() {
  for (const [name, id] of Object.entries(IDS)) {
    const element = document.getElementById(id);
    if (!element) throw new Error(`index.html lacks #${id}`);
    dom[name] = element;
  }
}

/** Create an element with a class and, optionally, text. */
export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text) element.textContent = text;
  return element;
}

export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

const PATHS = {
  copy: "M7 7V4.5A1.5 1.5 0 0 1 8.5 3h7A1.5 1.5 0 0 1 17 4.5v7a1.5 1.5 0 0 1-1.5 1.5H13M4.5 7h7A1.5 1.5 0 0 1 13 8.5v7a1.5 1.5 0 0 1-1.5 1.5h-7A1.5 1.5 0 0 1 3 15.5v-7A1.5 1.5 0 0 1 4.5 7z",
  check: "M4 10.5l4 4 8-9",
  regenerate: "M16 10a6 6 0 1 1-1.76-4.24M16 3.5V6h-2.5",
  retry: "M16 10a6 6 0 1 1-1.76-4.24M16 3.5V6h-2.5",
  previous: "M12 5l-5 5 5 5",
  next: "M8 5l5 5-5 5",
  unarchive: "M3 5h14v3H3zM4.5 8v7.5h11V8M10 15v-5M7.5 12.5L10 10l2.5 2.5",
  edit: "M13.5 3.5l3 3L7 16H4v-3zM11.5 5.5l3 3",
  info: "M10 17a7 7 0 1 0 0-14 7 7 0 0 0 0 14zM10 9v5M10 6.5v.5",
  trash: "M4 6h12M8 6V4h4v2M5.5 6l1 10.5h7l1-10.5M8.5 9v5M11.5 9v5",
  search: "M8.5 14a5.5 5.5 0 1 0 0-11 5.5 5.5 0 0 0 0 11zM12.5 12.5L17 17",
};

/** An inline SVG icon, hidden from assistive tech: the button around it carries the name. */
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("viewBox", "0 0 20 20");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", PATHS[name] ?? "");
  svg.append(path);
  return svg;
}
