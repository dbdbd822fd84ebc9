/**
 * What the macOS backend refuses, run on any platform through the PUBLIC
 * API over `darwinBackend` + the in-memory TEST DOUBLE in
 * `tests/fakes/fake_darwin.ts`: hand-made bad messages (their port rights
 * released, the channel still usable), out-of-line memory, messages larger
 * than the receive buffer, a peer of another uid (the audit trailer), and a
 * sender `allowPeer` refuses. Two "processes" are two fake tasks in this one
 * Deno process. Every test ends with `assertNoLeaks()`: no right, CF
 * reference or use count may be left behind. (Hostile peers proper:
 * `tests/darwin_hostile_messages_test.ts`.)
 *
 * This proves the TypeScript's right bookkeeping and protocol against the
 * fake's model of Mach; it does not prove that model matches the kernel —
 * `tests/darwin_e2e_test.ts` does that, on a macOS runner only.
 */

import assert from "node:assert/strict";
import {
  type Channel,
  connect,
  listen,
  PeerClosedError,
  PeerRefusedError,
  ProtocolError,
  receivePortRight,
  sendPortRight,
  Surface,
} from "../mod.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { encodePortMessage, MSG_ID_SURFACE } from "../src/darwin/messages.ts";
import { DARWIN, encodeMachMsgHeader, machMsghBits } from "../src/darwin/structs.ts";
import { computeGeometry } from "../src/core/geometry.ts";
import { backingOf } from "../src/surface/surface.ts";
import { encodeHeader, HEADER_SIZE } from "../src/wire/wire.ts";
import type { FakeTask } from "./fakes/fake_darwin.ts";
import { pair, world } from "./fakes/world.ts";

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
