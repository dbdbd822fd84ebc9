/**
 * The macOS backend's channel lifecycle, run on any platform through the
 * PUBLIC API (listen/connect, Channel) over `darwinBackend` + the in-memory
 * TEST DOUBLE in `tests/fakes/fake_darwin.ts`: the other task dying, frames
 * queued before a close, receive's timeout, abort and close, a full queue
 * making send wait, and names. Two "processes" are two fake tasks in this
 * one Deno process. Every test ends with `assertNoLeaks()`: no right, CF
 * reference or use count may be left behind.
 *
 * This proves the TypeScript's right bookkeeping and protocol against the
 * fake's model of Mach; it does not prove that model matches the kernel —
 * `tests/darwin_e2e_test.ts` does that, on a macOS runner only.
 */

import assert from "node:assert/strict";
import {
  ClosedError,
  connect,
  listen,
  MachError,
  PeerClosedError,
  Surface,
  SurfacePool,
  TimeoutError,
} from "../mod.ts";
import { INBOX_QUEUE_LIMIT } from "../src/darwin/mach.ts";
import { pair, world } from "./fakes/world.ts";

Deno.test("darwin/fake: the other task dying releases its uses; both directions see the peer gone", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const pool = new SurfacePool({ width: 16, height: 16, maxSurfaces: 1 });
  const surface = pool.tryAcquire()!;
  await producer.send(surface);
  surface.close();
  const frame = await consumer.receive({ timeout: 1000 });
  assert.ok(frame.surface.inUse);
  assert.equal(pool.tryAcquire(), undefined);
  w.kernel.kill(w.b); // B "crashes" holding the frame
  const reused = pool.tryAcquire();
  assert.ok(reused, "the kernel reclaimed B's right, so the use is gone");
  await assert.rejects(producer.receive({ timeout: 1000 }), PeerClosedError);
  await assert.rejects(producer.send(reused), PeerClosedError);
  assert.equal(reused.inUse, false, "the port of the failed send was released");
  reused.close();
  pool.close();
  producer.close();
  void listener;
  void consumer;
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: frames queued before a close arrive, then PeerClosedError; send to a closed peer fails typed", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 8, height: 8 });
  await producer.send(surface, 1);
  await producer.send(surface, 2);
  producer.close();
  const one = await consumer.receive({ timeout: 1000 });
  const two = await consumer.receive({ timeout: 1000 });
  assert.deepEqual([one.meta, two.meta], [1, 2]);
  await assert.rejects(consumer.receive({ timeout: 1000 }), PeerClosedError);
  await assert.rejects(consumer.receive({ timeout: 1000 }), PeerClosedError);
  const theirs = w.as(w.B, () => Surface.create({ width: 8, height: 8 }));
  await assert.rejects(consumer.send(theirs), PeerClosedError);
  assert.equal(theirs.inUse, false);
  await assert.rejects(producer.send(surface), ClosedError);
  theirs.close();
  one.close();
  two.close();
  surface.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: receive honours timeout, abort and close; waits settle so the process can exit", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const started = performance.now();
  await assert.rejects(consumer.receive({ timeout: 120 }), TimeoutError);
  assert.ok(performance.now() - started >= 110);
  const controller = new AbortController();
  const aborted = consumer.receive({ signal: controller.signal });
  setTimeout(() => controller.abort(new Error("stop")), 30);
  await assert.rejects(aborted, /stop/);
  const pending = consumer.receive();
  setTimeout(() => consumer.close(), 30);
  await assert.rejects(pending, ClosedError);
  await assert.rejects(producer.receive({ timeout: 1000 }), PeerClosedError);
  producer.close();
  const pendingAccept = listener.accept();
  setTimeout(() => listener.close(), 30);
  await assert.rejects(pendingAccept, ClosedError);
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: a full queue makes send wait (rights handed back and re-sent), bounded by timeout", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 8, height: 8 });
  const limit = INBOX_QUEUE_LIMIT; // the inbox's queue limit (not XNU's default of 5)
  for (let i = 0; i < limit; i++) await producer.send(surface, i);
  await assert.rejects(producer.send(surface, "late", { timeout: 40 }), TimeoutError);
  const waiting = producer.send(surface, limit);
  (await consumer.receive({ timeout: 1000 })).close();
  await waiting;
  const metas = [];
  for (let i = 0; i < limit; i++) {
    const frame = await consumer.receive({ timeout: 1000 });
    metas.push(frame.meta);
    frame.close();
  }
  assert.deepEqual(metas, Array.from({ length: limit }, (_, i) => i + 1));
  assert.equal(surface.inUse, false);
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: names are checked; a taken name and a missing listener are MachErrors", async () => {
  using w = world();
  const listener = listen("taken");
  // launchd answers another process NOT_PRIVILEGED, this one SERVICE_ACTIVE (each after retrying).
  assert.throws(
    () => w.as(w.B, () => listen("taken")),
    (e) => e instanceof MachError && e.kernReturnName === "BOOTSTRAP_NOT_PRIVILEGED",
  );
  assert.throws(
    () => listen("taken"),
    (e) => e instanceof MachError && e.kernReturnName === "BOOTSTRAP_SERVICE_ACTIVE",
  );
  await assert.rejects(
    connect("nobody"),
    (e) => e instanceof MachError && e.kernReturnName === "BOOTSTRAP_UNKNOWN_SERVICE",
  );
  // With a timeout, connect waits for the name to appear, then names what it last saw.
  await assert.rejects(
    connect("nobody", { timeout: 100 }),
    (e) =>
      e instanceof TimeoutError && e.cause instanceof MachError &&
      e.cause.kernReturnName === "BOOTSTRAP_UNKNOWN_SERVICE",
  );
  assert.throws(() => listen(""), TypeError);
  assert.throws(() => listen("x".repeat(200)), RangeError);
  listener.close();
  const again = listen("taken"); // a closed listener's name is free again
  again.close();
  w.kernel.assertNoLeaks();
});
