// Folds event histories with the web chat's fold (static/js/fold.js), for the
// parity test in tests/test_client_fold.py. Reads JSON cases on stdin:
// [{"start": view, "events": [{"id", "event"}...]}...]; prints the views.
import { applyEvent, normaliseView } from "../../static/js/fold.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const cases = JSON.parse(input);
const views = cases.map(({ start, events }) => {
  const view = normaliseView(structuredClone(start));
  for (const { id, event } of events) applyEvent(view, id, event);
  return view;
});
process.stdout.write(JSON.stringify(views));
