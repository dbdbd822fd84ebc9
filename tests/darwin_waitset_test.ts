/**
 * The macOS backend's shared port-set wait, through the public API over the
 * in-memory TEST DOUBLE (`tests/fakes/fake_darwin.ts`), whose
 * `mach_msg_wait` runs on a modelled 32-thread blocking pool like Deno's.
 *
 * A `mach_msg` per parked receive let 32 idle channels occupy every thread
 * of that pool. These tests park 40 idle receives (plus an accept) and show
 * that one worker call serves them all, that a busy channel among them is
 * served at once, that timeouts, aborts and closes still end parked
 * receives promptly, and that nothing — no port set, no control port, no
 * worker call — outlives the last parked receive.
 */

import assert from "node:assert/strict";
import {
  type Channel,
  ClosedError,
  connect,
  listen,
  type Listener,
  Surface,
  TimeoutError,
} from "../mod.ts";
import { darwinNativeOf } from "../src/darwin/native.ts";
import { MAX_PARK_MS, portWaitSet } from "../src/darwin/poller.ts";
import { BLOCKING_THREADS } from "./fakes/fake_darwin.ts";
import { world } from "./fakes/world.ts";

/** B listens; A opens `count` channels; returns A's and B's ends, in the same order. */
async function channels(w: ReturnType<typeof world>, name: string, count: number) {
  const listener: Listener = w.as(w.B, () => listen(name));
  const producers: Channel[] = [];
  const consumers: Channel[] = [];
  for (let i = 0; i < count; i++) {
    const accepted = listener.accept({ timeout: 2000 });
    producers.push(await w.as(w.A, () => connect(name, { timeout: 2000 })));
    consumers.push(await accepted);
  }
  return { listener, producers, consumers };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * "At once" for a parked receive: well before the shared wait ends by itself
 * (MAX_PARK_MS), which is what a wake-up that failed waits for. A bound of a
 * few tens of ms failed under load on a 2-core machine.
 */
const AT_ONCE_MS = MAX_PARK_MS / 2;

Deno.test("darwin/waitset: 40 idle channels and an accept park in one worker call; a busy channel is served at once", async () => {
  using w = world();
  const IDLE = 40;
  assert.ok(IDLE > BLOCKING_THREADS);
  const { listener, producers, consumers } = await channels(w, "many", IDLE + 1);
  const busyProducer = producers[IDLE], busyConsumer = consumers[IDLE];

  // 40 receives that will never get a frame, and an accept nobody answers yet.
  const idle = consumers.slice(0, IDLE).map((c) => c.receive().catch((e) => e));
  const pendingAccept = listener.accept();
  await tick();
  const waits = portWaitSet(darwinNativeOf(w.B)!);
  assert.equal(waits.size, IDLE + 1, "every idle receive and the accept are parked");
  assert.equal(w.b.workerCalls, 1, "one worker call waits for all of them");
  w.b.peakWorkerCalls = w.b.workerCalls;

  using surface = Surface.create({ width: 16, height: 16 });
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    const received = busyConsumer.receive({ timeout: 1000 }); // parks too: nothing queued yet
    await tick();
    await busyProducer.send(surface, i);
    const frame = await received;
    assert.equal(frame.meta, i);
    frame.close();
    assert.ok(
      performance.now() - started < AT_ONCE_MS,
      `frame ${i} took ${performance.now() - started} ms`,
    );
  }
  // A new client is accepted while the 40 stay parked.
  const late = await w.as(w.A, () => connect("many", { timeout: 1000 }));
  const lateConsumer = await pendingAccept;
  await late.send(surface, "late");
  const lateFrame = await lateConsumer.receive({ timeout: 1000 });
  assert.equal(lateFrame.meta, "late");
  lateFrame.close();
  assert.ok(
    w.b.peakWorkerCalls <= 2,
    `at most one shared wait (and one ending) at a time, saw ${w.b.peakWorkerCalls}`,
  );

  // Closing every idle channel ends its receive with ClosedError and unparks it at once.
  for (const c of consumers.slice(0, IDLE)) c.close();
  for (const outcome of await Promise.all(idle)) assert.ok(outcome instanceof ClosedError);
  assert.equal(waits.size, 0);
  assert.equal(waits.setName, 0, "the port set and control port are gone with the last wait");
  await tick();
  assert.equal(w.b.workerCalls, 0, "no worker call outlives the last parked receive");

  for (const p of [...producers, late]) p.close();
  busyConsumer.close();
  lateConsumer.close();
  listener.close();
  surface.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/waitset: a waiting message takes no thread; timeouts, aborts and closes end parked receives", async () => {
  using w = world();
  const { listener, producers, consumers } = await channels(w, "timing", 3);
  using surface = Surface.create({ width: 8, height: 8 });

  // Fast path: a frame already queued is received on the JS thread.
  const before = w.b.totalWorkerCalls;
  await producers[0].send(surface, "queued");
  const frame = await consumers[0].receive({ timeout: 1000 });
  assert.equal(frame.meta, "queued");
  frame.close();
  assert.equal(w.b.totalWorkerCalls, before, "no worker call for a waiting message");

  // A receive with no deadline parks first (the shared wait sleeps up to 1 s); a nearer deadline
  // joining it must interrupt that wait, not wait for it.
  const forever = consumers[0].receive().catch((e) => e);
  await tick();
  let started = performance.now();
  await assert.rejects(consumers[1].receive({ timeout: 30 }), TimeoutError);
  const late = performance.now() - started;
  assert.ok(late < AT_ONCE_MS, `a 30 ms timeout fired after ${late} ms`);

  // Abort.
  const controller = new AbortController();
  const aborted = consumers[2].receive({ signal: controller.signal }).catch((e) => e);
  await tick();
  started = performance.now();
  controller.abort(new Error("stop"));
  assert.equal((await aborted).message, "stop");
  const abortTook = performance.now() - started;
  assert.ok(abortTook < AT_ONCE_MS, `the abort ended the receive after ${abortTook} ms`);

  // The parked one still works, then close ends it.
  await producers[0].send(surface, "after");
  assert.equal(((await forever) as { meta: unknown }).meta, "after");
  ((await forever) as { close(): void }).close();
  const closing = consumers[0].receive().catch((e) => e);
  await tick();
  consumers[0].close();
  assert.ok((await closing) instanceof ClosedError);
  await tick();
  assert.equal(portWaitSet(darwinNativeOf(w.B)!).setName, 0);
  assert.equal(w.b.workerCalls, 0);

  for (const c of [...producers, ...consumers]) c.close();
  listener.close();
  surface.close();
  w.kernel.assertNoLeaks();
});
