/** Dates, durations and counts, in the reader's locale. */

export const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
export const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Short "when" for the thread list: "now", a time today, or a date. */
export function formatWhen(ms, now = Date.now()) {
  if (!ms) return "";
  if (now - ms < 60_000) return "now";
  const date = new Date(ms);
  return date.toDateString() === new Date(now).toDateString()
    ? timeFormat.format(date)
    : dayFormat.format(date);
}

/** A moment in local time: the time alone today, with the date otherwise. */
export function formatMoment(ms) {
  const date = new Date(ms);
  return date.toDateString() === new Date().toDateString()
    ? timeFormat.format(date)
    : fullFormat.format(date);
}

export function formatDuration(ms) {
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 60) return `${minutes} min ${Math.round((ms % 60_000) / 1_000)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}
