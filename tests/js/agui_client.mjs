// Drives POST /api/ag-ui with AG-UI's own client (@ag-ui/client's HttpAgent, which
// checks every event against the protocol and its order), for tests/test_agui.py.
// Reads {url, threadId, steps} on stdin; each step is one run of the agent:
//   {"send": text, "id": message id, "agent": name?}  a new user message
//   {"resume": {"approved": bool}}                    answer every pending interrupt
//   {"resend": text, "id": message id, "agent": name?} a fresh client sending it again
// Prints one result per step: the events seen, the assistant text, the outcome.
import { HttpAgent } from "@ag-ui/client";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { url, threadId, steps, headers } = JSON.parse(input);

const fresh = () => new HttpAgent({ url, threadId, headers: headers ?? {} });
let agent = fresh();
const results = [];
for (const step of steps) {
  const events = [];
  const subscriber = { onEvent: ({ event }) => void events.push(event) };
  let params = {};
  if (step.resend !== undefined) {
    agent = fresh();
    agent.addMessage({ id: step.id, role: "user", content: step.resend });
    params = { forwardedProps: step.agent ? { agent: step.agent } : {} };
  } else if (step.send !== undefined) {
    agent.addMessage({ id: step.id, role: "user", content: step.send });
    params = { forwardedProps: step.agent ? { agent: step.agent } : {} };
  } else if (step.resume !== undefined) {
    params = {
      resume: agent.pendingInterrupts.map((i) => ({
        interruptId: i.id,
        status: "resolved",
        payload: step.resume,
      })),
    };
  }
  let error = null;
  let newMessages = [];
  try {
    ({ newMessages } = await agent.runAgent(params, subscriber));
  } catch (exc) {
    error = String(exc?.message ?? exc);
  }
  const text = newMessages
    .filter((m) => m.role === "assistant" && typeof m.content === "string")
    .map((m) => m.content)
    .join("");
  results.push({
    types: events.map((e) => e.type),
    events,
    text,
    error,
    pending: agent.pendingInterrupts,
    messages: agent.messages,
  });
}
process.stdout.write(JSON.stringify(results));
