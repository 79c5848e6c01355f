// BullMQ as a peer of bench.versus: one worker process, a processor that does
// nothing, 50 jobs at once.
//
//     node worker.mjs REDIS_URL
//
// Reports on stdout, at most every 10 ms and only when it changed, one JSON
// line: {"done": jobs completed so far, "first": when the first completed,
// "last": when the latest completed}, in seconds on CLOCK_MONOTONIC (Node's
// process.hrtime is the clock Python's time.monotonic reads). A job counts on
// the worker's "completed" event, once it is moved to the completed set.
// Nothing of this touches Redis, so the command counts are BullMQ's own.
import { Worker } from "bullmq";
import { Redis } from "ioredis";

const [url] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e9;

// BullMQ wants no retry limit on its connections' requests.
const connection = new Redis(url, { maxRetriesPerRequest: null });
const worker = new Worker("bench", async () => {}, { connection, concurrency: 50 });

let done = 0;
let first = null;
let last = null;
worker.on("completed", () => {
  last = now();
  first ??= last;
  done += 1;
});

let reported = 0;
setInterval(() => {
  if (done !== reported) {
    reported = done;
    process.stdout.write(`${JSON.stringify({ done, first, last })}\n`);
  }
}, 10);

process.on("SIGTERM", async () => {
  await worker.close();
  await connection.quit();
  process.exit(0);
});
