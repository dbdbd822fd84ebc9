/**
 * The macOS backend's surfaces, pools and PixelBuffers, run on any platform
 * through the PUBLIC API (Surface, SurfacePool, listen/connect, Channel,
 * PixelBuffer, sendPortRight/receivePortRight) over `darwinBackend` + the
 * in-memory TEST DOUBLE in `tests/fakes/fake_darwin.ts`: frames arrive byte
 * for byte, a pool never reuses a surface in use, a PixelBuffer keeps its
 * surface in use, and the port primitives move a surface between tasks. Two
 * "processes" are two fake tasks in this one Deno process. Every test ends
 * with `assertNoLeaks()`: no right, CF reference or use count may be left
 * behind.
 *
 * This proves the TypeScript's right bookkeeping and protocol against the
 * fake's model of Mach; it does not prove that model matches the kernel —
 * `tests/darwin_e2e_test.ts` does that, on a macOS runner only.
 */

import assert from "node:assert/strict";
import {
  ClosedError,
  PixelBuffer,
  receivePortRight,
  sendPortRight,
  Surface,
  SurfacePool,
  TimeoutError,
  UnsupportedError,
} from "../mod.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { setBackendForTesting } from "../src/platform.ts";
import { backingOf } from "../src/surface/surface.ts";
import { pair, world } from "./fakes/world.ts";

Deno.test("darwin/fake: round trip of a BGRA surface, byte for byte, with JSON metadata", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  assert.equal(consumer.peer.pid, 101);
  assert.equal(consumer.peer.uid, 501);
  assert.equal(producer.peer.pid, 202);
  const surface = Surface.create({ width: 64, height: 32 });
  const bytes = surface.bytes();
  for (let i = 0; i < bytes.length; i++) bytes[i] = i & 0xff;
  await producer.send(surface, { pts: 42, tag: "first" });
  const frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.surface.id, surface.id);
  assert.deepEqual(frame.meta, { pts: 42, tag: "first" });
  assert.equal(frame.sequence, 0);
  assert.deepEqual(frame.surface.geometry, surface.geometry);
  assert.deepEqual(frame.surface.bytes(), bytes);
  frame.surface.bytes()[0] = 0xee; // the very same memory
  assert.equal(bytes[0], 0xee);
  frame.surface.lock({ readOnly: true });
  frame.surface.unlock({ readOnly: true });
  frame.close();
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: 4:2:0 planes and byte metadata arrive intact; both directions work", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 32, height: 16, format: "420v" });
  surface.bytes(0).fill(0x10);
  surface.bytes(1).fill(0x80);
  await producer.send(surface, new Uint8Array([1, 2, 3]));
  using frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.surface.planes.length, 2);
  assert.ok(frame.surface.bytes(1).every((v) => v === 0x80));
  assert.deepEqual(frame.meta, new Uint8Array([1, 2, 3]));
  // B answers on the same channel.
  const reply = w.as(w.B, () => Surface.create({ width: 8, height: 8, format: "L008" }));
  await consumer.send(reply);
  using back = await producer.receive({ timeout: 1000 });
  assert.equal(back.surface.id, reply.id);
  assert.equal(back.meta, undefined);
  reply.close();
  back.close();
  frame.close();
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: a pool never reuses a surface the other task holds or that is queued to it", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const pool = new SurfacePool({ width: 16, height: 16, maxSurfaces: 2 });
  const first = pool.tryAcquire()!;
  const firstId = first.id;
  await producer.send(first);
  first.close(); // back to the pool, but the message (and its port) is still queued to B
  assert.equal(w.kernel.queuedMessages(), 1);
  const second = pool.tryAcquire()!;
  assert.notEqual(second.id, firstId);
  assert.equal(pool.tryAcquire(), undefined);
  assert.equal(pool.stats.inUseElsewhere, 1);
  const frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.surface.id, firstId);
  assert.equal(pool.tryAcquire(), undefined, "B holds it now");
  frame.close(); // B deallocates the send right: the use ends
  const again = pool.tryAcquire()!;
  assert.equal(again.id, firstId);
  again.close();
  second.close();
  pool.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: lends of one IOSurface share one buffer, detached when the pool lets go", () => {
  using w = world();
  const pool = new SurfacePool({ width: 16, height: 16, maxSurfaces: 1 });
  const first = pool.tryAcquire()!;
  const view = first.bytes();
  view[0] = 7;
  first.close();
  const again = pool.tryAcquire()!;
  assert.equal(again.bytes().buffer, view.buffer, "one buffer per IOSurface, not per lend");
  assert.equal(again.bytes()[0], 7);
  again.close();
  pool.close(); // releases the IOSurface: its buffer is detached first
  assert.equal(view.length, 0, "no view outlives the IOSurface reference");
  using created = Surface.create({ width: 8, height: 8 });
  const own = created.bytes();
  created.close();
  assert.equal(own.length, 0, "closing a created surface releases it: views detached");
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: PixelBuffer keeps its surface in use; fromPixelBuffer surfaces travel", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const pool = new SurfacePool({ width: 16, height: 16, maxSurfaces: 1 });
  const surface = pool.tryAcquire()!;
  const pixelBuffer = surface.pixelBuffer();
  assert.equal(pixelBuffer.width, 16);
  assert.equal(pixelBuffer.pixelFormatType, 0x42475241);
  pixelBuffer.lock({ readOnly: true });
  pixelBuffer.unlock({ readOnly: true });
  surface.close();
  assert.equal(pool.tryAcquire(), undefined, "the pixel buffer holds a use");
  pixelBuffer.close();
  pixelBuffer.close();
  const back = pool.tryAcquire()!;
  back.close();
  pool.close();

  const made = PixelBuffer.create({ width: 32, height: 16, format: "420f" });
  const fromPb = Surface.fromPixelBuffer(made);
  assert.equal(fromPb.format, "420f");
  assert.equal(fromPb.planes.length, 2);
  made.lock();
  made.close(); // unlocks and releases; the surface keeps its own reference
  fromPb.bytes(1).fill(7);
  await producer.send(fromPb, "pb");
  const frame = await consumer.receive({ timeout: 1000 });
  assert.ok(frame.surface.bytes(1).every((v) => v === 7));
  const theirs = frame.surface.pixelBuffer();
  frame.close();
  assert.ok(fromPb.inUse, "B's pixel buffer keeps it in use after the frame closed");
  theirs.close();
  assert.ok(fromPb.inUse, "a fromPixelBuffer surface holds a use of its own while open");
  assert.throws(() => theirs.pointer, ClosedError);
  assert.throws(() => Surface.fromPixelBuffer({} as PixelBuffer), TypeError);
  fromPb.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: sendPortRight/receivePortRight move a surface port between tasks with its sender", async () => {
  using w = world();
  const B = w.B;
  // B owns a port registered as "rendezvous"; A looks it up.
  const service = new TextEncoder().encode("rendezvous\0");
  const out = new Uint8Array(4);
  assert.equal(w.b.bootstrap_check_in(w.b.bootstrapPort, service, out), 0);
  const port = new DataView(out.buffer).getUint32(0, true);
  assert.equal(w.a.bootstrap_look_up(w.a.bootstrapPort, service, out), 0);
  const toB = new DataView(out.buffer).getUint32(0, true);
  using surface = Surface.create({ width: 8, height: 8 });
  const right = backingOf(surface, "test").exportHandle();
  await sendPortRight(toB, right, { disposition: "move" });
  assert.ok(surface.inUse, "the queued port counts as a use");
  const received = await w.as(B, () => receivePortRight(port, { timeout: 500 }));
  assert.equal(received.sender.pid, 101);
  assert.equal(received.sender.uid, 501);
  const looked = w.b.IOSurfaceLookupFromMachPort(received.right)!;
  assert.equal(w.b.IOSurfaceGetID(looked), surface.id);
  w.b.CFRelease(looked);
  w.b.mach_port_deallocate(w.b.taskSelf, received.right);
  assert.equal(surface.inUse, false);
  await assert.rejects(w.as(B, () => receivePortRight(port, { timeout: 60 })), TimeoutError);
  w.a.mach_port_deallocate(w.a.taskSelf, toB);
  w.b.mach_port_mod_refs(w.b.taskSelf, port, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);
  surface.close();
  w.kernel.assertNoLeaks();
});

Deno.test({
  name:
    "darwin/fake: PixelBuffer and the port primitives are UnsupportedError on the Linux backend" +
    (Deno.build.os === "linux" ? "" : " (skipped: this is not Linux)"),
  ignore: Deno.build.os !== "linux",
}, async () => {
  setBackendForTesting(undefined);
  assert.throws(() => PixelBuffer.create({ width: 2, height: 2 }), UnsupportedError);
  await assert.rejects(receivePortRight(0x103), UnsupportedError);
  await assert.rejects(sendPortRight(0x103, 0x203), UnsupportedError);
  using surface = Surface.create({ width: 2, height: 2 });
  assert.throws(() => surface.pixelBuffer(), UnsupportedError);
});
