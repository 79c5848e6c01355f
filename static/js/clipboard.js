/** Copy text, with a fallback for plain http, where navigator.clipboard doesn't exist. */

const FEEDBACK_MS = 1_500;

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // Denied or unavailable: try the old way below.
  }
  const focused = document.activeElement;
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  focused?.focus?.({ preventScroll: true });
  return copied;
}

/** Copy, and say so on the button for a moment: its label, or its text when it has none. */
export async function copyFromButton(button, text) {
  const copied = await copyText(text);
  const label = button.querySelector(".label") ?? button;
  button.dataset.original ??= label.textContent;
  label.textContent = copied ? "Copied" : "Couldn't copy";
  button.dataset.copied = String(copied);
  clearTimeout(Number(button.dataset.timer));
  button.dataset.timer = String(setTimeout(() => {
    label.textContent = button.dataset.original;
    delete button.dataset.copied;
    delete button.dataset.original;
  }, FEEDBACK_MS));
}
