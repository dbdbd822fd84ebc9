/**
 * The macOS backend over the fake kernel (`tests/fakes/`), on every runtime:
 * the same code as on a Mac from the channel down to the FFI tables, with
 * the frameworks and Mach served by the symbol-level fake. Written against
 * `node:test` only (see `api_test.ts`); the full macOS fake suite is
 * `tests/darwin_*_test.ts` (Deno).
 *
 * @module
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, listen, publish, subscribe, Surface, SurfacePool } from "../../mod.ts";
import { runtime } from "../../ffi/runtime.ts";
import { world } from "../fakes/world.ts";

/** B listens, A connects; returns both channel ends. */
async function pair(w: ReturnType<typeof world>, name: string) {
  const listener = w.as(w.B, () => listen(name));
  const accepted = listener.accept({ timeout: 2000 });
  const producer = await w.as(w.A, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  return { listener, producer, consumer };
}

test(`${runtime.name}: darwin over the fake: a surface crosses tasks byte for byte, and a pool waits for its release`, async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w, "cam");
  const surface = Surface.create({ width: 64, height: 32, format: "420v" });
  for (let p = 0; p < 2; p++) {
    const bytes = surface.bytes(p);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 3 + p) & 0xff;
  }
  await producer.send(surface, { pts: 42 });
  const frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.surface.id, surface.id);
  assert.deepEqual(frame.meta, { pts: 42 });
  for (let p = 0; p < 2; p++) assert.deepEqual(frame.surface.bytes(p), surface.bytes(p));
  frame.close();
  surface.close();

  const pool = new SurfacePool({ width: 16, height: 16, maxSurfaces: 1 });
  const first = pool.tryAcquire()!;
  await producer.send(first);
  first.close();
  const held = await consumer.receive({ timeout: 1000 });
  assert.equal(pool.tryAcquire(), undefined, "the other task holds it");
  held.close();
  const again = pool.tryAcquire()!;
  assert.equal(again.id, held.surface.id);
  again.close();
  pool.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

test(`${runtime.name}: darwin over the fake: publish / subscribe across tasks, a parked receive woken by the port set`, async () => {
  using w = world();
  const publisher = w.as(w.B, () => publish("fake-pub"));
  const subscription = await w.as(w.A, () => subscribe("fake-pub", { timeout: 2000 }));
  const deadline = Date.now() + 2000;
  while (publisher.subscribers.length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const receiving = subscription.receive({ timeout: 2000 }); // parks: nothing sent yet
  const surface = w.as(w.B, () => Surface.create({ width: 8, height: 8 }));
  surface.bytes().fill(0x5a);
  await w.as(w.B, () => publisher.send(surface, { n: 1 }));
  const frame = await receiving;
  assert.deepEqual(frame.meta, { n: 1 });
  assert.ok(frame.surface.bytes().every((v) => v === 0x5a));
  frame.close();
  surface.close();
  subscription.close();
  publisher.close();
  await new Promise((r) => setTimeout(r, 50));
  w.kernel.assertNoLeaks();
});
