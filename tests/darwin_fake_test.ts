/**
 * The macOS backend's channel, surface, pool and PixelBuffer logic, run on
 * any platform through the PUBLIC API (Surface, SurfacePool, listen/connect,
 * Channel, PixelBuffer, sendPortRight/receivePortRight) over
 * `darwinBackend` + the in-memory TEST DOUBLE in `tests/fakes/fake_darwin.ts`.
 * Two "processes" are two fake tasks in this one Deno process. Every test
 * ends with `assertNoLeaks()`: no right, CF reference or use count may be
 * left behind.
 *
 * This proves the TypeScript's right bookkeeping and protocol against the
 * fake's model of Mach; it does not prove that model matches the kernel —
 * `tests/darwin_e2e_test.ts` does that, on a macOS runner only.
 */

import assert from "node:assert/strict";
import {
  type Channel,
  ClosedError,
  connect,
  listen,
  MachError,
  PeerClosedError,
  PeerRefusedError,
  PixelBuffer,
  ProtocolError,
  receivePortRight,
  sendPortRight,
  Surface,
  SurfacePool,
  TimeoutError,
  UnsupportedError,
} from "../mod.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { encodePortMessage, MSG_ID_SURFACE } from "../src/darwin/messages.ts";
import { DARWIN, encodeMachMsgHeader, machMsghBits } from "../src/darwin/structs.ts";
import { computeGeometry } from "../src/core/geometry.ts";
import { setBackendForTesting } from "../src/platform.ts";
import { backingOf } from "../src/surface/surface.ts";
import { encodeHeader, HEADER_SIZE } from "../src/wire/wire.ts";
import type { FakeTask } from "./fakes/fake_darwin.ts";
import { INBOX_QUEUE_LIMIT } from "../src/darwin/mach.ts";
import { world } from "./fakes/world.ts";

/** B listens, A connects; returns both channel ends. */
async function pair(w: ReturnType<typeof world>, name = "cam", listenOptions = {}) {
  const listener = w.as(w.B, () => listen(name, listenOptions));
  const accepted = listener.accept({ timeout: 2000 });
  const producer = await w.as(w.A, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  return { listener, producer, consumer };
}

/** A's send right to B's connection inbox, found in the fake (for forging messages). */
function peerInboxName(from: FakeTask, to: FakeTask, except: number[] = []): number {
  for (const [name, entry] of from.names) {
    if (entry.port.receiver === to && entry.send > 0 && !except.includes(name)) return name;
  }
  throw new Error("no send right to the peer's inbox");
}

/** Sends a hand-made message from `task` without waiting; the fake kernel must queue it. */
function sendRaw(task: FakeTask, bytes: Uint8Array, size: number): void {
  assert.equal(
    task.mach_msg(bytes, DARWIN.MACH_SEND_MSG | DARWIN.MACH_SEND_TIMEOUT, size, 0, 0, 0, 0),
    DARWIN.KERN_SUCCESS,
  );
}

/** The next receive on `channel` fails with a ProtocolError for `reason`. */
async function expectProtocolError(channel: Channel, reason: string): Promise<void> {
  const error = await channel.receive({ timeout: 1000 }).catch((e) => e);
  assert.ok(error instanceof ProtocolError, `expected ProtocolError ${reason}, got ${error}`);
  assert.equal(error.reason, reason);
}

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

Deno.test("darwin/fake: bad messages are ProtocolErrors, their port rights released, the channel usable", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 16, height: 8 });
  const backing = backingOf(surface, "test");
  const inbox = peerInboxName(w.a, w.b);
  const good = new Uint8Array(HEADER_SIZE);
  encodeHeader(new DataView(good.buffer), surface.geometry, 0, 0, 0n, 0);
  const forge = (payload: Uint8Array, options: { id?: number; right?: number } = {}) => {
    const buffer = new Uint8Array(4096);
    const size = encodePortMessage(
      buffer,
      inbox,
      DARWIN.MACH_MSG_TYPE_COPY_SEND,
      options.id ?? MSG_ID_SURFACE,
      options.right ?? backing.exportHandle(),
      DARWIN.MACH_MSG_TYPE_MOVE_SEND,
      payload,
    );
    sendRaw(w.a, buffer, size);
  };
  const expectReason = async (reason: string) => {
    await expectProtocolError(consumer, reason);
    assert.equal(surface.inUse, false, `${reason}: the carried right was deallocated`);
  };

  forge(good, { id: 0x1234 });
  await expectReason("BAD_TYPE");
  const badMagic = good.slice();
  badMagic[0] = 0;
  forge(badMagic);
  await expectReason("BAD_MAGIC");
  forge(good.subarray(0, 40));
  await expectReason("SHORT_MESSAGE");
  const bigger = good.slice();
  encodeHeader(
    new DataView(bigger.buffer),
    computeGeometry(64, 64, "BGRA"),
    0,
    0,
    0n,
    0,
  );
  forge(bigger);
  await expectReason("SIZE_MISMATCH");
  // A send right that is not an IOSurface port.
  const plain = new Uint8Array(4);
  w.a.mach_port_allocate(w.a.taskSelf, DARWIN.MACH_PORT_RIGHT_RECEIVE, plain);
  const plainName = new DataView(plain.buffer).getUint32(0, true);
  w.a.mach_port_insert_right(w.a.taskSelf, plainName, plainName, DARWIN.MACH_MSG_TYPE_MAKE_SEND);
  forge(good, { right: plainName });
  await expectReason("NOT_SHARED_MEMORY");
  w.a.mach_port_mod_refs(w.a.taskSelf, plainName, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);

  // No descriptor at all, then two of them.
  const raw = new Uint8Array(64);
  const view = new DataView(raw.buffer);
  encodeMachMsgHeader(view, 0, {
    bits: machMsghBits(DARWIN.MACH_MSG_TYPE_COPY_SEND, 0),
    size: 32,
    remotePort: inbox,
    localPort: 0,
    voucherPort: 0,
    id: MSG_ID_SURFACE,
  });
  sendRaw(w.a, raw, 32);
  await expectReason("NO_HANDLE");
  const two = new Uint8Array(128);
  const size = encodePortMessage(
    two,
    inbox,
    DARWIN.MACH_MSG_TYPE_COPY_SEND,
    MSG_ID_SURFACE,
    backing.exportHandle(),
    DARWIN.MACH_MSG_TYPE_MOVE_SEND,
    new Uint8Array(12),
  );
  const tv = new DataView(two.buffer);
  tv.setUint32(24, 2, true); // descriptor count 2: the "payload" holds a second port descriptor
  tv.setUint32(40, backing.exportHandle(), true);
  tv.setUint8(50, DARWIN.MACH_MSG_TYPE_MOVE_SEND);
  tv.setUint8(51, 0);
  sendRaw(w.a, two, size);
  await expectReason("EXTRA_HANDLES");

  // Still usable.
  await producer.send(surface, "ok");
  using frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.meta, "ok");
  frame.close();
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

/**
 * A complex surface message whose descriptors are `kinds` ("port": the
 * surface's right, MOVE_SEND; "ool": `oolSize` bytes of out-of-line memory),
 * then a valid wire header. Returns the bytes and `msgh_size`.
 */
function complexSurfaceMessage(
  inbox: number,
  kinds: ("port" | "ool")[],
  right: () => number,
  payload: Uint8Array,
  oolSize = 4096,
): { bytes: Uint8Array; size: number } {
  const bytes = new Uint8Array(4096);
  const view = new DataView(bytes.buffer);
  let offset = 28;
  for (const kind of kinds) {
    if (kind === "port") {
      view.setUint32(offset, right(), true);
      view.setUint8(offset + 10, DARWIN.MACH_MSG_TYPE_MOVE_SEND);
      view.setUint8(offset + 11, DARWIN.MACH_MSG_PORT_DESCRIPTOR);
      offset += 12;
    } else {
      view.setBigUint64(offset, 0x10000n, true); // the sender's address (not read by the fake)
      view.setUint8(offset + 9, 1); // MACH_MSG_VIRTUAL_COPY
      view.setUint8(offset + 11, DARWIN.MACH_MSG_OOL_DESCRIPTOR);
      view.setUint32(offset + 12, oolSize, true);
      offset += 16;
    }
  }
  bytes.set(payload, offset);
  const size = (offset + payload.length + 3) & ~3;
  encodeMachMsgHeader(view, 0, {
    bits: (machMsghBits(DARWIN.MACH_MSG_TYPE_COPY_SEND, 0) | DARWIN.MACH_MSGH_BITS_COMPLEX) >>> 0,
    size,
    remotePort: inbox,
    localPort: 0,
    voucherPort: 0,
    id: MSG_ID_SURFACE,
  });
  view.setUint32(24, kinds.length, true);
  return { bytes, size };
}

Deno.test("darwin/fake: a surface message whose one descriptor is out-of-line memory is a ProtocolError, the memory freed", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 16, height: 8 });
  const backing = backingOf(surface, "test");
  const inbox = peerInboxName(w.a, w.b);
  const header = new Uint8Array(HEADER_SIZE);
  encodeHeader(new DataView(header.buffer), surface.geometry, 0, 0, 0n, 0);
  const send = (kinds: ("port" | "ool")[], oolSize?: number) => {
    const { bytes, size } = complexSurfaceMessage(
      inbox,
      kinds,
      () => backing.exportHandle(),
      header,
      oolSize,
    );
    sendRaw(w.a, bytes, size);
  };
  const expectReason = async (reason: string) => {
    await expectProtocolError(consumer, reason);
    assert.equal(w.b.regions.size, 0, `${reason}: the out-of-line region was deallocated`);
    assert.equal(surface.inUse, false, `${reason}: every carried right was deallocated`);
  };

  send(["ool"]); // used to be a TypeError from `const [port] = layout.ports`
  await expectReason("NO_HANDLE");
  send(["ool", "port"]);
  await expectReason("EXTRA_HANDLES");
  send(["port", "ool"]);
  await expectReason("EXTRA_HANDLES");
  // Memory the receiver cannot map (its address space is full): MACH_RCV_BODY_ERROR; the port
  // that did arrive is destroyed.
  w.kernel.vmSpaceLimit = 1 << 20;
  send(["port", "ool"], 1 << 21);
  await expectReason("CONTROL_TRUNCATED");

  await producer.send(surface, "still usable");
  using frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.meta, "still usable");
  frame.close();
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: a message larger than the receive buffer is destroyed by the kernel, with its right", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w, "small", { maxMetaBytes: 16 });
  using surface = Surface.create({ width: 8, height: 8 });
  await producer.send(surface, "x".repeat(200));
  await expectProtocolError(consumer, "MESSAGE_TRUNCATED");
  assert.equal(surface.inUse, false);
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: the audit trailer's uid is checked on both sides of the handshake", async () => {
  using w = world();
  const stranger = w.kernel.createTask({ pid: 303, uid: 777 });
  const S = createDarwinBackend(stranger);
  const listener = w.as(w.B, () => listen("guarded"));
  const accepted = listener.accept({ timeout: 2000 });
  // A task of another uid is refused by the listener (its HELLO's reply right is dropped).
  await assert.rejects(
    w.as(S, () => connect("guarded", { timeout: 1000 })),
    (e) => e instanceof PeerClosedError && /refused/.test(e.message),
  );
  // The listener kept accepting: a same-uid task gets in.
  const producer = await connect("guarded", { timeout: 1000 });
  const consumer = await accepted;
  assert.equal(consumer.peer.uid, 501);
  producer.close();
  consumer.close();
  listener.close();
  // A listener of another uid is refused by the connecting side.
  const foreign = w.as(S, () => listen("foreign", { allowPeer: () => true }));
  const foreignAccept = foreign.accept({ timeout: 2000 });
  const error = await connect("foreign", { timeout: 1000 }).catch((e) => e);
  assert.ok(error instanceof PeerRefusedError, String(error));
  assert.equal(error.peer.uid, 777);
  assert.equal(error.peer.pid, 303);
  const strangerSide = await foreignAccept;
  await assert.rejects(strangerSide.receive({ timeout: 1000 }), PeerClosedError);
  strangerSide.close();
  foreign.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/fake: messages from a sender allowPeer refuses are dropped (a leaked right)", async () => {
  using w = world();
  const stranger = w.kernel.createTask({ pid: 404, uid: 999 });
  const { listener, producer, consumer } = await pair(w);
  // Hand a copy of A's send right to B's inbox to the stranger, which then sends a surface.
  const inbox = peerInboxName(w.a, w.b);
  const box = new Uint8Array(4);
  stranger.mach_port_allocate(stranger.taskSelf, DARWIN.MACH_PORT_RIGHT_RECEIVE, box);
  const boxName = new DataView(box.buffer).getUint32(0, true);
  stranger.mach_port_insert_right(
    stranger.taskSelf,
    boxName,
    boxName,
    DARWIN.MACH_MSG_TYPE_MAKE_SEND,
  );
  const boxInA = w.a.insert({
    port: stranger.names.get(boxName)!.port,
    type: "send",
  });
  stranger.mach_port_deallocate(stranger.taskSelf, boxName);
  await sendPortRight(boxInA, inbox, { timeout: 100 });
  const received = await w.as(
    createDarwinBackend(stranger),
    () => receivePortRight(boxName, { timeout: 100 }),
  );
  const strangerSurface = stranger.createIOSurface({
    width: 8,
    height: 8,
    pixelFormat: 0x42475241,
    allocSize: 4096,
    planes: computeGeometry(8, 8).planes,
  })!;
  const header = new Uint8Array(HEADER_SIZE);
  encodeHeader(new DataView(header.buffer), computeGeometry(8, 8), 0, 0, 0n, 0);
  const buffer = new Uint8Array(512);
  const size = encodePortMessage(
    buffer,
    received.right,
    DARWIN.MACH_MSG_TYPE_COPY_SEND,
    MSG_ID_SURFACE,
    stranger.IOSurfaceCreateMachPort(strangerSurface),
    DARWIN.MACH_MSG_TYPE_MOVE_SEND,
    header,
  );
  sendRaw(stranger, buffer, size);
  using surface = Surface.create({ width: 8, height: 8 });
  await producer.send(surface, "from A");
  using frame = await consumer.receive({ timeout: 1000 });
  assert.equal(frame.meta, "from A", "the stranger's frame was dropped");
  assert.equal(stranger.IOSurfaceIsInUse(strangerSurface), false, "and its right released");
  stranger.CFRelease(strangerSurface);
  stranger.mach_port_deallocate(stranger.taskSelf, received.right);
  stranger.mach_port_mod_refs(stranger.taskSelf, boxName, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);
  w.a.mach_port_deallocate(w.a.taskSelf, boxInA); // a dead name now
  frame.close();
  surface.close();
  producer.close();
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
