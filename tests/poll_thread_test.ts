/**
 * The shared poll's thread (`ffi/runtime_deno_poll.ts`, used by
 * `src/linux/poller.ts`): a worker blocked in `poll` that calls back, so
 * that a parked wait's wake-up allocates nothing on the JavaScript heap.
 * What it must keep of the nonblocking call it replaced: a parked wait
 * keeps the process alive and an idle process exits; and when the thread
 * cannot run, the poll goes on as nonblocking calls.
 *
 * @module
 */

import assert from "node:assert/strict";
import { listen, Surface } from "../mod.ts";
import process from "node:process";
import { setPollThreadEnabled, sharedPollRunner } from "../src/linux/poller.ts";
import { waitReady } from "../src/linux/poll_wait.ts";
import { libc } from "../ffi/linux.ts";
import { LINUX } from "../src/linux/structs.ts";
import { Child, PEER_FLAGS, sleep, uniqueName } from "./helpers.ts";
import { perOperation } from "./sampled_allocation.ts";

const linux = Deno.build.os === "linux";
const RECEIVER = new URL("./peers/parked_receiver.ts", import.meta.url).pathname;
const BARE_POLL = new URL("./peers/bare_poll.ts", import.meta.url).pathname;
const peer = (file: string) => new URL(`./peers/${file}`, import.meta.url).pathname;

/**
 * A wait parked on the shared poll and woken, with the promise it
 * returns: measured 0.22-0.27 KB on the thread, all of it the promise
 * `waitReady` returns, its resolving functions and the loop's `await` of
 * it; as nonblocking calls 0.87-0.89 KB (the runtime's call, its promise
 * and our `then` on it, each round).
 */
const LIMIT_WAKE = 300;

/**
 * Spawns the parked receiver against a listener here, lets it park, and
 * checks that it is still alive after `parkMs`; then sends it a frame and
 * waits for it to exit by itself.
 */
async function parkedReceiver(
  library: string | undefined,
  parkMs: number,
  runner: "thread" | "calls",
  env?: Record<string, string>,
): Promise<string> {
  const name = uniqueName("park");
  using listener = listen(name);
  await using child = new Child(Deno.execPath(), [
    "run",
    ...PEER_FLAGS,
    RECEIVER,
    name,
    ...(library ? [library] : []),
  ], env);
  using channel = await listener.accept({ timeout: 10_000 });
  await child.line("connected");
  let exited = false;
  child.process.status.then(() => exited = true);
  await new Promise((resolve) => setTimeout(resolve, parkMs));
  assert.equal(
    exited,
    false,
    `the receiver exited while its receive was parked; stderr:\n${child.stderr}`,
  );
  using surface = Surface.create({ width: 16, height: 8 });
  await channel.send(surface, undefined, { timeout: 10_000 });
  await child.line(`received 16x8 (poll: ${runner})`, 10_000);
  const status = await child.exit(10_000); // a thread or callback left ref'd would hold it
  assert.equal(status.code, 0, `stderr:\n${child.stderr}`);
  return child.stderr;
}

Deno.test({
  name: "poll thread: a poll in flight keeps the process alive until it returns, " +
    "and the process then exits by itself",
  ignore: !linux,
  async fn() {
    await using child = new Child(Deno.execPath(), ["run", ...PEER_FLAGS, BARE_POLL, "800"]);
    const started = performance.now();
    await child.line("returned 0", 10_000);
    assert.ok(performance.now() - started >= 700, "the poll returned before its timeout");
    const status = await child.exit(10_000);
    assert.equal(status.code, 0, `stderr:\n${child.stderr}`);
  },
});

Deno.test({
  name: "poll thread: a receiver parked with nothing else to do gets its frame, and its " +
    "process then exits by itself (the thread does not hold it)",
  ignore: !linux,
  async fn() {
    const stderr = await parkedReceiver(undefined, 700, "thread");
    assert.doesNotMatch(stderr, /shared poll/, "the thread should not have failed");
  },
});

Deno.test({
  name: "poll thread: a `deno test` module that ends with a wait parked neither takes the " +
    "process down (a call back into its runtime, gone) nor leaves its thread in the poll",
  ignore: !linux,
  async fn() {
    // Without the thread's stop at `unload`, its callback ran on freed memory: SIGSEGV or SIGABRT.
    await using child = new Child(Deno.execPath(), [
      "test",
      ...PEER_FLAGS,
      peer("module_ends_parked.ts"),
      peer("module_runs_later.ts"),
    ], { NO_COLOR: "1" });
    const status = await child.exit(20_000);
    await new Promise((resolve) => setTimeout(resolve, 100)); // (its last lines)
    const output = `stdout:\n${child.unreadLines}\nstderr:\n${child.stderr}`;
    assert.equal(status.signal, null, `killed by ${status.signal}; ${output}`);
    assert.equal(status.code, 0, output);
    assert.match(child.unreadLines, /ok \| 2 passed \| 0 failed/, output);
  },
});

Deno.test({
  name: "poll thread: a Worker terminated while its wait is parked does not take the process " +
    "down (a worker's shared poll runs as nonblocking calls)",
  ignore: !linux,
  async fn() {
    await using child = new Child(Deno.execPath(), [
      "run",
      ...PEER_FLAGS,
      peer("worker_ends_parked.ts"),
    ]);
    await child.line("parked calls", 10_000);
    await child.line("survived", 10_000);
    const status = await child.exit(10_000);
    assert.equal(status.signal, null, `killed by ${status.signal}; stderr:\n${child.stderr}`);
    assert.equal(status.code, 0, `stderr:\n${child.stderr}`);
  },
});

Deno.test({
  name: "poll thread: a wait parked for 1 s, then the thread idle for 1 s, cost the process at " +
    "most 20 ms of CPU per second each (the worker sleeps in poll, then in Atomics.wait)",
  ignore: !linux,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fd = libc().eventfd(0, LINUX.EFD_CLOEXEC | LINUX.EFD_NONBLOCK);
    const cpuPerSecond = async (body: () => Promise<unknown>) => {
      const cpu = process.cpuUsage();
      const started = performance.now();
      const outcome = await body();
      const used = process.cpuUsage(cpu);
      return { outcome, ms: (used.user + used.system) / (performance.now() - started) };
    };
    try {
      // (the first parked wait of the process starts the worker: ~40 ms of CPU, not measured)
      await waitReady(fd, LINUX.POLLIN, -1, "wait", performance.now() + 10, undefined)
        .catch(() => {});
      const parked = await cpuPerSecond(() =>
        waitReady(fd, LINUX.POLLIN, -1, "wait", performance.now() + 1000, undefined)
          .catch((error) => error)
      );
      assert.equal(sharedPollRunner(), "thread");
      assert.equal((parked.outcome as Error).name, "TimeoutError");
      const idle = await cpuPerSecond(() => sleep(1000));
      console.log(`  ${parked.ms.toFixed(2)} ms/s parked, ${idle.ms.toFixed(2)} ms/s idle`);
      // A worker that spins costs ~1000 ms/s; so do rounds that never block (timeout 0).
      assert.ok(parked.ms <= 20, `${parked.ms.toFixed(2)} ms/s of CPU while a wait was parked`);
      assert.ok(idle.ms <= 20, `${idle.ms.toFixed(2)} ms/s of CPU with nothing parked`);
    } finally {
      libc().close(fd);
    }
  },
});

Deno.test({
  name: "poll thread: when the thread cannot load its library, the parked receive is " +
    "served by nonblocking calls, with one warning",
  ignore: !linux,
  async fn() {
    const stderr = await parkedReceiver("/nonexistent/surfaceport-libc.so.6", 300, "calls");
    const warnings = stderr.match(/the shared poll goes on with a nonblocking call/g) ?? [];
    assert.equal(warnings.length, 1, `stderr:\n${stderr}`);
    assert.match(stderr, /surfaceport-libc\.so\.6/);
  },
});

Deno.test({
  name: "poll thread: SURFACEPORT_POLL_THREAD=0 keeps the shared poll as nonblocking calls",
  ignore: !linux,
  async fn() {
    // (added to this process's environment: Deno.Command keeps it)
    const stderr = await parkedReceiver(undefined, 300, "calls", { SURFACEPORT_POLL_THREAD: "0" });
    assert.doesNotMatch(stderr, /shared poll/);
  },
});

Deno.test({
  name: `poll thread: a wait parked on the shared poll and woken allocates < ${LIMIT_WAKE} B ` +
    "(its promise), where nonblocking calls add the runtime's call per round",
  ignore: !linux,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fd = libc().eventfd(0, LINUX.EFD_CLOEXEC | LINUX.EFD_NONBLOCK);
    const one = new Uint8Array(new BigUint64Array([1n]).buffer);
    const eight = new Uint8Array(8);
    const run = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const woken = waitReady(fd, LINUX.POLLIN, -1, "wait", Infinity, undefined);
        libc().write(fd, one, 8n);
        await woken;
        libc().read(fd, eight, 8n);
      }
    };
    try {
      const measure = async (thread: boolean) => {
        setPollThreadEnabled(thread);
        return (await perOperation(run, 20_000, 10_000)).bytes;
      };
      // Interleaved, each twice: the lesser of each pair (V8 may still be optimizing the first).
      const thread = [await measure(true)];
      const calls = [await measure(false)];
      thread.push(await measure(true));
      calls.push(await measure(false));
      const onThread = Math.min(...thread);
      const asCalls = Math.min(...calls);
      console.log(
        `  a parked wait woken: ${thread.map((b) => b.toFixed(0)).join(", ")} B on the thread, ` +
          `${calls.map((b) => b.toFixed(0)).join(", ")} B as nonblocking calls`,
      );
      assert.ok(onThread < LIMIT_WAKE, `${onThread.toFixed(0)} B per wait on the thread`);
      assert.ok(
        asCalls > onThread + 150,
        `nonblocking calls (${asCalls.toFixed(0)} B) should cost the runtime's call more`,
      );
    } finally {
      setPollThreadEnabled(true);
      libc().close(fd);
    }
  },
});
