// Drives Slipstream's /api/chat with the AI SDK's own client pieces (the `ai` package:
// DefaultChatTransport, readUIMessageStream), for tests/test_ai_sdk_chat.py. Every chunk
// is checked by the SDK's schema (the transport) and its order by the SDK's message
// builder (readUIMessageStream throws on a delta without its start, and so on).
// argv[2]: JSON {base, scenario, chatId, ...}; prints one JSON result on stdout.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const args = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({ api: `${args.base}/api/chat`, body: args.body ?? {} });

const userMessage = (id, text) => ({ id, role: "user", parts: [{ type: "text", text }] });

// Reads a chunk stream to its end: the chunks (as sent) and the UI message they build.
async function read(stream, { message, stopAfter } = {}) {
  const chunks = [];
  const errors = [];
  let cut = false;
  const recorded = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(chunk);
        controller.enqueue(chunk);
        if (stopAfter && stopAfter(chunks)) {
          cut = true;
          controller.terminate();
        }
      },
    }),
  );
  let last = message;
  for await (const snapshot of readUIMessageStream({
    message,
    stream: recorded,
    onError: (error) => errors.push(String(error.message ?? error)),
  })) {
    last = snapshot;
  }
  return { chunks, types: chunks.map((c) => c.type), message: last, errors, cut };
}

const textOf = (message) =>
  (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");

async function send(messages, extra = {}) {
  const stream = await transport.sendMessages({
    chatId: args.chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: extra.abortSignal,
    ...extra,
  });
  return stream;
}

const scenarios = {
  // One message and its answer, then the same message again (a resend).
  async answer() {
    const user = userMessage(args.messageId, args.text);
    const first = await read(await send([user]));
    const again = await read(await send([user]));
    return { first: summary(first), again: summary(again) };
  },

  // A message, then its answer again with trigger "regenerate-message".
  async regenerate() {
    const user = userMessage(args.messageId, args.text);
    const first = await read(await send([user]));
    const stream = await transport.sendMessages({
      chatId: args.chatId,
      messages: [user],
      trigger: "regenerate-message",
      messageId: first.message.id,
    });
    const second = await read(stream);
    return { first: summary(first), second: summary(second) };
  },

  async tool() {
    return summary(await read(await send([userMessage(args.messageId, args.text)])));
  },

  // An approval request, then the SDK's answer to it (addToolApprovalResponse's message).
  async approval() {
    const user = userMessage(args.messageId, args.text);
    const asked = await read(await send([user]));
    const answered = {
      ...asked.message,
      parts: asked.message.parts.map((part) =>
        part.state === "approval-requested"
          ? {
              ...part,
              state: "approval-responded",
              approval: { ...part.approval, approved: args.approved, reason: "not now" },
            }
          : part,
      ),
    };
    const stream = await transport.sendMessages({
      chatId: args.chatId,
      messages: [user, answered],
      trigger: "submit-message",
      messageId: answered.id,
    });
    const rest = await read(stream, { message: answered });
    return { asked: summary(asked), rest: summary(rest) };
  },

  // The client is cut off mid-answer, then resumes (what resumeStream() calls).
  async resume() {
    const cutOff = await read(await send([userMessage(args.messageId, args.text)]), {
      stopAfter: (chunks) => chunks.filter((c) => c.type === "text-delta").length >= 3,
    });
    const stream = await transport.reconnectToStream({ chatId: args.chatId });
    const resumed = await read(stream);
    return { cutOff: summary(cutOff), resumed: summary(resumed) };
  },

  // Stop: the chat's stop endpoint while the answer streams.
  async stop() {
    let stopped = null;
    const result = await read(await send([userMessage(args.messageId, args.text)]), {
      stopAfter: (chunks) => {
        if (!stopped && chunks.some((c) => c.type === "text-delta")) {
          stopped = fetch(`${args.base}/api/chat/${args.chatId}/stop`, { method: "POST" }).then(
            async (r) => ({ status: r.status, body: await r.json() }),
          );
        }
        return false;
      },
    });
    return { ...summary(result), stop: await stopped };
  },

  // Watch the chat's active answer from its first part (another client asked it).
  async watch() {
    const stream = await transport.reconnectToStream({ chatId: args.chatId });
    if (stream === null) return { stream: null };
    return summary(await read(stream));
  },

  // What the resume endpoint says when nothing runs.
  async idle() {
    const stream = await transport.reconnectToStream({ chatId: args.chatId });
    return { stream: stream === null ? null : "a stream" };
  },

  // A refused request: the transport throws with the server's detail.
  async refused() {
    try {
      await send(args.messages);
      return { threw: null };
    } catch (error) {
      return { threw: String(error.message) };
    }
  },
};

function summary(read) {
  return {
    types: read.types,
    chunks: read.chunks,
    id: read.message?.id,
    text: textOf(read.message),
    parts: read.message?.parts ?? [],
    metadata: read.message?.metadata ?? null,
    errors: read.errors,
    cut: read.cut,
  };
}

const result = await scenarios[args.scenario]();
process.stdout.write(JSON.stringify(result));
