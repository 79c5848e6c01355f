/**
 * Deleting a thread: a confirmation dialog, then DELETE /api/threads/{id}, which
 * removes every key of the thread on the server. There is no undo, so the dialog
 * says so and its default button is Cancel.
 */

import * as http from "./api.js";
import { navigate } from "./conversation.js";
import { dom, setText } from "./dom.js";
import { showError, showToast } from "./notices.js";
import { scheduleRender, state } from "./state.js";
import { forgetThread } from "./threads.js";

let asking = null; // the thread the open dialog asks about

export function askToDelete(threadId, title) {
  if (!threadId || dom.deleteDialog.open) return;
  asking = threadId;
  setText(dom.deleteDialogName, title || "Untitled thread");
  dom.deleteDialog.returnValue = "";
  dom.deleteDialog.showModal();
}

async function deleteThread(threadId) {
  try {
    await http.deleteThread(threadId);
  } catch (error) {
    // 404: it was deleted already (another tab): what the person wanted.
    if (error.status !== 404) {
      showError(`Couldn't delete the thread: ${error.message}`);
      return;
    }
  }
  forgetThread(threadId);
  if (state.threadId === threadId) {
    navigate(null);
    dom.input.focus();
  }
  showToast("Thread deleted.");
  scheduleRender();
}

export function wireDeletion() {
  dom.deleteThread.addEventListener("click", () => {
    if (state.threadId && state.view) askToDelete(state.threadId, state.view.title);
  });
  dom.deleteDialog.addEventListener("close", () => {
    const threadId = asking;
    asking = null;
    if (dom.deleteDialog.returnValue === "delete" && threadId) deleteThread(threadId);
  });
}
