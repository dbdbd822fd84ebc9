/**
 * The defects an independent review of the macOS backend against XNU,
 * launchd and the SDK found (issue 11), each shown over the TEST DOUBLE
 * (`tests/fakes/`), which is now as strict as the kernel in those places.
 * Every test here failed on the code before the fix; each ends with
 * `assertNoLeaks()` (rights, regions, use counts, guard exceptions).
 */

import assert from "node:assert/strict";
import {
  ClosedError,
  connect,
  listen,
  MachError,
  PeerClosedError,
  PixelBuffer,
  ProtocolError,
  receivePortRight,
  Surface,
  SurfacePool,
} from "../mod.ts";
import { messageReturned } from "../src/darwin/mach.ts";
import { receiveOnPort } from "../src/darwin/poller.ts";
import { MSG_ID_SURFACE, receiveBufferSize } from "../src/darwin/messages.ts";
import { DARWIN, encodeMachMsgHeader, machMsghBits } from "../src/darwin/structs.ts";
import { backingOf } from "../src/surface/surface.ts";
import { HEADER_SIZE } from "../src/wire/wire.ts";
import type { FakeTask } from "./fakes/fake_darwin.ts";
import { world } from "./fakes/world.ts";

const D = DARWIN;

/** B listens, A connects; returns both channel ends. */
async function pair(w: ReturnType<typeof world>, name = "review") {
  const listener = w.as(w.B, () => listen(name));
  const accepted = listener.accept({ timeout: 2000 });
  const producer = await w.as(w.A, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  return { listener, producer, consumer };
}

/** `from`'s send right to a receive right `to` holds, and `to`'s name for that port. */
function inboxNames(from: FakeTask, to: FakeTask): { send: number; receive: number } {
  for (const [name, entry] of from.names) {
    if (entry.port.receiver === to && entry.send > 0) {
      return { send: name, receive: to.nameOf.get(entry.port)! };
    }
  }
  throw new Error("no send right to the peer's inbox");
}

Deno.test("review 2: IOSurface realigns rows and planes; Surface.create, the pool and the wire use the real layout", async () => {
  using w = world();
  w.kernel.surfaceAlignment = 256; // a 1920-byte luma row becomes 2048 bytes
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 1920, height: 1080, format: "420v" });
  assert.equal(surface.planes[0].bytesPerRow, 2048);
  assert.equal(surface.planes[1].offset % 256, 0);
  assert.ok(surface.planes[1].offset >= 2048 * 1080, "the chroma plane moved past the wider luma");
  assert.equal(surface.allocSize % 16384, 0, "IOSurface rounds the allocation to 16 KiB");
  surface.bytes(1).fill(0x80);
  surface.bytes(0).fill(0x10);
  await producer.send(surface, "aligned");
  using frame = await consumer.receive({ timeout: 1000 });
  assert.deepEqual(frame.surface.geometry, surface.geometry, "the header carries the real layout");
  assert.ok(frame.surface.bytes(1).every((v) => v === 0x80));
  assert.ok(frame.surface.bytes(0).every((v) => v === 0x10));
  frame.close();
  using pool = new SurfacePool({ width: 1280, height: 720, format: "420f", maxSurfaces: 2 });
  const lent = pool.tryAcquire()!;
  assert.equal(lent.planes[0].bytesPerRow, 1280);
  lent.close();
  pool.close();
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 3: a name is listened on again at once after close, in this task or another", async () => {
  using w = world();
  w.kernel.bootstrapRemovalDelayMs = 30; // launchd handles the dead-name notification later
  const first = listen("again");
  first.close();
  // launchd still holds the name: a look-up meanwhile is an unknown service, not a dead right
  // (without a timeout: with one, connect would wait for the name to come back).
  await assert.rejects(
    w.as(w.B, () => connect("again")),
    (e) => e instanceof MachError && e.kernReturnName === "BOOTSTRAP_UNKNOWN_SERVICE",
  );
  const second = listen("again"); // SERVICE_ACTIVE meanwhile: retried
  second.close();
  const third = w.as(w.B, () => listen("again")); // NOT_PRIVILEGED for another task: retried
  const accepted = third.accept({ timeout: 1000 });
  const client = await connect("again", { timeout: 1000 });
  const server = await accepted;
  client.close();
  server.close();
  third.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 4: out-of-line memory XNU copies out without `deallocate` (PHYSICAL_COPY, VOLATILE) is freed", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const { send: inbox } = inboxNames(w.a, w.b);
  for (
    const [type, copy] of [[D.MACH_MSG_OOL_DESCRIPTOR, D.MACH_MSG_PHYSICAL_COPY], [
      D.MACH_MSG_OOL_VOLATILE_DESCRIPTOR,
      D.MACH_MSG_VIRTUAL_COPY,
    ]]
  ) {
    const bytes = new Uint8Array(256);
    const view = new DataView(bytes.buffer);
    encodeMachMsgHeader(view, 0, {
      bits: (machMsghBits(D.MACH_MSG_TYPE_COPY_SEND, 0) | D.MACH_MSGH_BITS_COMPLEX) >>> 0,
      size: 28 + 16 + HEADER_SIZE,
      remotePort: inbox,
      localPort: 0,
      voucherPort: 0,
      id: MSG_ID_SURFACE,
    });
    view.setUint32(24, 1, true);
    view.setBigUint64(28, 0x10000n, true);
    view.setUint8(36, 1); // the sender asks for deallocate: XNU ignores it for PHYSICAL_COPY
    view.setUint8(37, copy);
    view.setUint8(39, type);
    view.setUint32(40, 64 << 20, true);
    assert.equal(
      w.a.mach_msg(bytes, D.MACH_SEND_MSG | D.MACH_SEND_TIMEOUT, 28 + 16 + HEADER_SIZE, 0, 0, 0, 0),
      0,
    );
    // Refused for what it is (no IOSurface port), not a timeout of a message never read.
    await assert.rejects(
      consumer.receive({ timeout: 1000 }),
      (e) => e instanceof ProtocolError && e.reason === "NO_HANDLE",
    );
    assert.equal(w.b.regions.size, 0, `type ${type}, copy ${copy}: the region was freed`);
  }
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 5: Surface.fromPixelBuffer holds a use, so a pool cannot recycle the surface under it", () => {
  using w = world();
  const made = PixelBuffer.create({ width: 64, height: 32 }); // as if from a CVPixelBufferPool
  const surface = Surface.fromPixelBuffer(made);
  made.close(); // CoreVideo's own use ends with the buffer
  assert.ok(surface.inUse, "the surface still counts as used: no pool may hand it out again");
  surface.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 6: a send the kernel hands back with any code is reclaimed (rights, the destination's extra reference)", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 16, height: 16 });
  w.a.nextSendFailure = (D.MACH_SEND_NO_BUFFER | D.MACH_MSG_IPC_SPACE) >>> 0;
  await assert.rejects(
    producer.send(surface),
    (e) => e instanceof MachError && e.kernReturnName !== undefined,
  );
  assert.equal(surface.inUse, false, "the surface's right came back and was released");
  producer.close();
  // Without the destination's extra reference dropped, B would never see A's side close.
  await assert.rejects(consumer.receive({ timeout: 1000 }), PeerClosedError);
  consumer.close();
  // The same for the handshake.
  w.a.nextSendFailure = (D.MACH_SEND_INVALID_OPTIONS | D.MACH_MSG_IPC_SPACE) >>> 0;
  await assert.rejects(connect("review", { timeout: 500 }), MachError);
  listener.close();
  surface.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 7: a body error received by a closed owner is destroyed, its rights and memory freed", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 8, height: 8 });
  const { send: inbox, receive: inboxInB } = inboxNames(w.a, w.b);
  w.kernel.vmSpaceLimit = 1 << 20;
  const bytes = new Uint8Array(256);
  const view = new DataView(bytes.buffer);
  encodeMachMsgHeader(view, 0, {
    bits: (machMsghBits(D.MACH_MSG_TYPE_COPY_SEND, 0) | D.MACH_MSGH_BITS_COMPLEX) >>> 0,
    size: 28 + 12 + 16 + 8,
    remotePort: inbox,
    localPort: 0,
    voucherPort: 0,
    id: MSG_ID_SURFACE,
  });
  view.setUint32(24, 2, true);
  view.setUint32(28, backingOf(surface, "test").exportHandle(), true);
  view.setUint8(38, D.MACH_MSG_TYPE_MOVE_SEND);
  view.setUint8(39, D.MACH_MSG_PORT_DESCRIPTOR);
  view.setUint8(49, D.MACH_MSG_VIRTUAL_COPY);
  view.setUint8(51, D.MACH_MSG_OOL_DESCRIPTOR);
  view.setUint32(52, 4 << 20, true); // more than B can map: MACH_RCV_BODY_ERROR
  assert.equal(w.a.mach_msg(bytes, D.MACH_SEND_MSG | D.MACH_SEND_TIMEOUT, 64, 0, 0, 0, 0), 0);
  const closed = { closed: true, what: "channel", enterWait() {}, leaveWait() {} };
  const buffer = new Uint8Array(receiveBufferSize(HEADER_SIZE, 1024));
  await assert.rejects(
    receiveOnPort(w.b, buffer, inboxInB, "receive", Infinity, undefined, closed),
    ClosedError,
  );
  assert.equal(surface.inUse, false, "the port that did arrive was destroyed");
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 8: a non-ASCII channel name is measured in bytes, not UTF-16 units", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w, "café");
  assert.equal(listener.address, "surfaceport.café");
  assert.ok(w.kernel.registry.has("surfaceport.café"));
  assert.throws(() => listen("é".repeat(60)), RangeError); // 12 + 120 bytes > 127
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 9: destroying a port set under a pending receive ends it with MACH_RCV_PORT_CHANGED", async () => {
  using w = world();
  const out = new Uint8Array(4);
  assert.equal(w.a.mach_port_allocate(w.a.taskSelf, D.MACH_PORT_RIGHT_PORT_SET, out), 0);
  const set = new DataView(out.buffer).getUint32(0, true);
  const pending = w.a.mach_msg_wait(
    new Uint8Array(24),
    (D.MACH_RCV_MSG | D.MACH_RCV_LARGE | D.MACH_RCV_TIMEOUT) >>> 0,
    0,
    24,
    set,
    5000,
    0,
  );
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(w.a.mach_port_mod_refs(w.a.taskSelf, set, D.MACH_PORT_RIGHT_PORT_SET, -1), 0);
  assert.equal(await pending, D.MACH_RCV_PORT_CHANGED);
  w.kernel.assertNoLeaks();
});

Deno.test("review 10: receivePortRight refuses a name that is not a receive right instead of raising a guard exception", async () => {
  using w = world();
  using surface = Surface.create({ width: 8, height: 8 });
  const sendRight = backingOf(surface, "test").exportHandle();
  await assert.rejects(receivePortRight(sendRight, { timeout: 100 }), TypeError);
  w.a.mach_port_deallocate(w.a.taskSelf, sendRight);
  // A receive right the caller destroys while the receive waits: ClosedError, no guard exception.
  const out = new Uint8Array(4);
  assert.equal(w.a.mach_port_allocate(w.a.taskSelf, D.MACH_PORT_RIGHT_RECEIVE, out), 0);
  const port = new DataView(out.buffer).getUint32(0, true);
  const pending = receivePortRight(port, { timeout: 2000 });
  await new Promise((resolve) => setTimeout(resolve, 10));
  w.a.mach_port_mod_refs(w.a.taskSelf, port, D.MACH_PORT_RIGHT_RECEIVE, -1);
  await assert.rejects(pending, ClosedError);
  surface.close();
  w.kernel.assertNoLeaks();
});

Deno.test("review 6 (the check behind it): only a message the kernel rewrote as received counts as handed back", () => {
  const buffer = new Uint8Array(24);
  const withRemote = (disposition: number) => {
    buffer[0] = disposition;
    return buffer;
  };
  const copySend = withRemote(D.MACH_MSG_TYPE_COPY_SEND); // as surfaceport writes it
  // A failure before copy-in leaves the caller's message as written: nothing to reclaim.
  assert.equal(messageReturned(D.MACH_SEND_INVALID_RIGHT, copySend), false);
  assert.equal(messageReturned(D.MACH_SEND_TIMED_OUT, copySend), false);
  const returned = withRemote(D.MACH_MSG_TYPE_PORT_SEND); // as a pseudo-receive rewrites it
  assert.equal(messageReturned(D.MACH_SEND_TIMED_OUT, returned), true);
  assert.equal(
    messageReturned((D.MACH_SEND_NO_BUFFER | D.MACH_MSG_IPC_SPACE) >>> 0, returned),
    true,
  );
  assert.equal(messageReturned(D.KERN_SUCCESS, returned), false);
  assert.equal(messageReturned(D.MACH_RCV_TIMED_OUT, returned), false, "a receive code");
});
