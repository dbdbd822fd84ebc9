/**
 * A `Worker` terminated while a wait of its own is parked on the shared
 * poll, for `tests/poll_thread_test.ts`. Run as a script, it starts itself
 * as a worker, terminates it once it says `parked WHICH` (how its shared
 * poll runs), waits 800 ms (past the wait's 300 ms deadline) and prints
 * `survived`. As the worker, it parks the wait and posts that message.
 *
 * Usage: deno run --allow-ffi --allow-read --allow-env worker_ends_parked.ts
 */
import { sharedPollRunner } from "../../src/linux/poller.ts";
import { waitReady } from "../../src/linux/poll_wait.ts";
import { libc } from "../../ffi/linux.ts";
import { LINUX } from "../../src/linux/structs.ts";

if ("WorkerGlobalScope" in globalThis) {
  const fd = libc().eventfd(0, LINUX.EFD_CLOEXEC | LINUX.EFD_NONBLOCK);
  waitReady(fd, LINUX.POLLIN, -1, "wait", performance.now() + 300, undefined).catch(() => {});
  (self as unknown as { postMessage(message: string): void }).postMessage(sharedPollRunner());
} else {
  const worker = new Worker(import.meta.url, { type: "module" });
  const runner = await new Promise<string>((resolve) => {
    worker.onmessage = (event) => resolve(event.data);
  });
  worker.terminate();
  console.log(`parked ${runner}`);
  await new Promise((resolve) => setTimeout(resolve, 800));
  console.log("survived");
}
