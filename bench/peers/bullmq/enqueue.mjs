// BullMQ's side of bench.versus's queueing: JOBS no-op jobs added with addBulk.
//
//     node enqueue.mjs REDIS_URL JOBS
import { Queue } from "bullmq";
import { Redis } from "ioredis";

const [url, jobs] = process.argv.slice(2);
const connection = new Redis(url, { maxRetriesPerRequest: null });
const queue = new Queue("bench", { connection });
const BULK = 1000; // jobs per addBulk call
for (let start = 0; start < Number(jobs); start += BULK) {
  const size = Math.min(BULK, Number(jobs) - start);
  await queue.addBulk(Array.from({ length: size }, () => ({ name: "noop", data: {} })));
}
await queue.close();
await connection.quit();
