/**
 * Signing in. With SLIPSTREAM_AUTH=tokens the page asks for a token once and the
 * server answers with an HttpOnly session cookie, which every later request and
 * socket carries by itself; the token is never kept by the page. A 401 later on
 * (signed out in another tab, the user revoked, the session expired) brings the
 * sign-in back.
 */

import { api, ApiError, SIGNED_OUT } from "./api.js";

const $ = (id) => document.getElementById(id);

/** Who the server takes this page for: {user, auth, via}, or null when nobody. */
export async function whoAmI() {
  try {
    return await api("GET", "/api/session");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

let pending = null; // one sign-in at a time, whoever asks for it

/** Show the sign-in page; resolves once the server accepted a token. */
export function signIn(reason = "") {
  if (!pending) pending = askForToken(reason).finally(() => { pending = null; });
  return pending;
}

function askForToken(reason) {
  const page = $("sign-in");
  const form = $("sign-in-form");
  const input = $("sign-in-token");
  const error = $("sign-in-error");
  showError(error, reason);
  const app = document.querySelector(".app");
  app.inert = true; // nothing behind the sign-in page takes focus or clicks
  page.hidden = false;
  input.value = "";
  input.focus();
  return new Promise((resolve) => {
    const submit = async (event) => {
      event.preventDefault();
      const submitButton = $("sign-in-submit");
      submitButton.disabled = true;
      try {
        const session = await api("POST", "/api/session", { token: input.value.trim() });
        form.removeEventListener("submit", submit);
        input.value = "";
        page.hidden = true;
        app.inert = false;
        resolve(session);
      } catch (failure) {
        showError(error, failure instanceof ApiError && failure.status === 401
          ? "That token is not valid. Check it, or ask for a new one."
          : failure.message);
        input.select();
      } finally {
        submitButton.disabled = false;
      }
    };
    form.addEventListener("submit", submit);
  });
}

function showError(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

/** The user's name and Sign out in the sidebar, when there is more than the local user. */
export function showSession(session) {
  const box = $("signed-in");
  box.hidden = session.auth === "none";
  $("signed-in-name").textContent = `Signed in as ${session.user}`;
  $("sign-out").hidden = session.via !== "session";
}

export function wireSession() {
  $("sign-out").addEventListener("click", async () => {
    try {
      await api("DELETE", "/api/session");
    } finally {
      location.reload();
    }
  });
  // A page that was signed in and no longer is: sign in again, then start afresh.
  let asking = false;
  window.addEventListener(SIGNED_OUT, async (event) => {
    if (asking) return;
    asking = true;
    await signIn(event.detail || "Your session has ended. Sign in again.");
    location.reload();
  });
}
