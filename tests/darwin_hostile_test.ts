/**
 * Hostile peers of the macOS backend, mirrored from `tests/hostile_test.ts`
 * onto the in-memory TEST DOUBLE of Mach and IOSurface
 * (`tests/fakes/fake_darwin.ts`; nothing here runs on macOS). A raw
 * attacker task writes any mach message it likes to the server's
 * connection inbox or listener port; the server uses the public API.
 * After each case:
 *
 * - the server saw exactly the typed outcome expected (`ProtocolError` with
 *   its reason, a skipped HELLO, `PeerClosedError`, ...),
 * - the same channel still delivers a valid frame sent after the bad one,
 * - the server task holds exactly the rights it held before (names, user
 *   references, out-of-line regions, port sets) and no surface is left in
 *   use by a right the attacker sent, and
 * - a well-behaved client is still accepted and served.
 *
 * Every test ends with the fake's `assertNoLeaks()`.
 */

import assert from "node:assert/strict";
import {
  type Channel,
  connect,
  listen,
  type Listener,
  PeerClosedError,
  ProtocolError,
  Surface,
} from "../mod.ts";
import type { Backend } from "../src/contract/backend.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { encodeHandshake, MSG_ID_HELLO, MSG_ID_SURFACE } from "../src/darwin/messages.ts";
import { DARWIN, encodeMachMsgHeader, machMsghBits } from "../src/darwin/structs.ts";
import { computeGeometry, type SurfaceGeometry } from "../src/core/geometry.ts";
import { setBackendForTesting } from "../src/platform.ts";
import { backingOf } from "../src/surface/surface.ts";
import {
  encodeHeader,
  HEADER_SIZE,
  META_JSON,
  WIRE_MAGIC,
  WIRE_VERSION,
} from "../src/wire/wire.ts";
import { FakeMachKernel, type FakeTask } from "./fakes/fake_darwin.ts";
import { stallWatchdog } from "./helpers.ts";

const D = DARWIN;

function world() {
  const kernel = new FakeMachKernel();
  const attacker = kernel.createTask({ pid: 666, uid: 501 });
  const server = kernel.createTask({ pid: 202, uid: 501 });
  const client = kernel.createTask({ pid: 303, uid: 501 });
  const backends = new Map<FakeTask, Backend>();
  const backendOf = (task: FakeTask) => {
    let backend = backends.get(task);
    if (!backend) backends.set(task, backend = createDarwinBackend(task));
    return backend;
  };
  let current = backendOf(server);
  setBackendForTesting(current);
  const as = <T>(task: FakeTask, fn: () => T): T => {
    const previous = current;
    setBackendForTesting(current = backendOf(task));
    try {
      return fn();
    } finally {
      setBackendForTesting(current = previous);
    }
  };
  return {
    kernel,
    attacker,
    server,
    client,
    as,
    [Symbol.dispose]() {
      setBackendForTesting(undefined);
    },
  };
}
type World = ReturnType<typeof world>;

/** Everything `task` holds, as one comparable string. */
function holdings(task: FakeTask): string {
  const names = [...task.names.entries()].map(([name, e]) =>
    `${name.toString(16)}:${e.send}/${e.sendOnce}/${e.receive}/${e.dead}`
  ).sort();
  return JSON.stringify({ names, regions: task.regions.size, sets: task.portSets.size });
}

/** The attacker's send right to the server's inbox for this connection. */
function inboxOf(w: World): number {
  for (const [name, entry] of w.attacker.names) {
    if (entry.port.receiver === w.server && entry.send > 0) {
      // The listener's port is looked up per connect and released, so this is the inbox.
      return name;
    }
  }
  throw new Error("the attacker holds no send right to the server");
}

/** A new plain port in `task` with one send right (not an IOSurface port). */
function plainPort(task: FakeTask): number {
  const out = new Uint8Array(4);
  assert.equal(task.mach_port_allocate(task.taskSelf, D.MACH_PORT_RIGHT_RECEIVE, out), 0);
  const name = new DataView(out.buffer).getUint32(0, true);
  assert.equal(
    task.mach_port_insert_right(task.taskSelf, name, name, D.MACH_MSG_TYPE_MAKE_SEND),
    0,
  );
  return name;
}

type Descriptor =
  | { port: number; disposition: number }
  /** Out-of-line memory; `copy` defaults to MACH_MSG_VIRTUAL_COPY; `volatile`: OOL_VOLATILE. */
  | { ool: number; copy?: number; deallocate?: boolean; volatile?: boolean }
  /** An out-of-line array of these port names (MOVE_SEND), sent with `copy`. */
  | { oolPorts: number[]; copy: number };

interface Forged {
  id?: number;
  /** Descriptors; none and `complex` unset: a simple message. */
  descriptors?: Descriptor[];
  complex?: boolean;
  payload?: Uint8Array;
  /** Reply right in the header (local port and its disposition). */
  reply?: { port: number; disposition: number };
  /** Cut `msgh_size` to this (the kernel receives what the header says). */
  size?: number;
}

/** Sends a forged message from the attacker to `destination` (COPY_SEND); returns `mach_msg_return_t`. */
function forge(w: World, destination: number, m: Forged): number {
  const bytes = new Uint8Array(1 << 17);
  const view = new DataView(bytes.buffer);
  const descriptors = m.descriptors ?? [];
  const arrays: Uint32Array[] = []; // out-of-line port arrays, alive until the send returns
  const complex = m.complex ?? descriptors.length > 0;
  let offset = 24;
  if (complex) {
    view.setUint32(24, descriptors.length, true);
    offset = 28;
    for (const d of descriptors) {
      if ("oolPorts" in d) {
        const names = new Uint32Array(d.oolPorts);
        arrays.push(names);
        view.setBigUint64(offset, Deno.UnsafePointer.value(Deno.UnsafePointer.of(names)), true);
        view.setUint8(offset + 9, d.copy);
        view.setUint8(offset + 10, D.MACH_MSG_TYPE_MOVE_SEND);
        view.setUint8(offset + 11, D.MACH_MSG_OOL_PORTS_DESCRIPTOR);
        view.setUint32(offset + 12, names.length, true);
        offset += 16;
      } else if ("ool" in d) {
        view.setBigUint64(offset, 0x10000n, true);
        view.setUint8(offset + 8, d.deallocate ? 1 : 0);
        view.setUint8(offset + 9, d.copy ?? D.MACH_MSG_VIRTUAL_COPY);
        view.setUint8(
          offset + 11,
          d.volatile ? D.MACH_MSG_OOL_VOLATILE_DESCRIPTOR : D.MACH_MSG_OOL_DESCRIPTOR,
        );
        view.setUint32(offset + 12, d.ool, true);
        offset += 16;
      } else {
        view.setUint32(offset, d.port, true);
        view.setUint8(offset + 10, d.disposition);
        view.setUint8(offset + 11, D.MACH_MSG_PORT_DESCRIPTOR);
        offset += 12;
      }
    }
  }
  const payload = m.payload ?? new Uint8Array(0);
  bytes.set(payload, offset);
  const size = m.size ?? ((offset + payload.length + 3) & ~3);
  encodeMachMsgHeader(view, 0, {
    bits: (machMsghBits(D.MACH_MSG_TYPE_COPY_SEND, m.reply?.disposition ?? 0) |
      (complex ? D.MACH_MSGH_BITS_COMPLEX : 0)) >>> 0,
    size,
    remotePort: destination,
    localPort: m.reply?.port ?? 0,
    voucherPort: 0,
    id: m.id ?? MSG_ID_SURFACE,
  });
  const kr = w.attacker.mach_msg(bytes, D.MACH_SEND_MSG | D.MACH_SEND_TIMEOUT, size, 0, 0, 0, 0);
  if (arrays.length > 0) arrays.length = 0; // kept alive until the kernel read them
  return kr;
}

/** A wire header for `geometry` (and `metaLength` bytes of `metaKind` metadata). */
function wire(geometry: SurfaceGeometry, metaKind = 0, metaLength = 0): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE);
  encodeHeader(new DataView(bytes.buffer), geometry, metaKind, metaLength, 0n, 0);
  return bytes;
}

function withBytes(base: Uint8Array, edit: (view: DataView) => void): Uint8Array {
  const copy = base.slice();
  edit(new DataView(copy.buffer));
  return copy;
}

/** The client connects, sends a frame, and the server receives it intact. */
async function goodClientServed(w: World, listener: Listener, name: string): Promise<void> {
  const accepted = listener.accept({ timeout: 2000 });
  const channel = await w.as(w.client, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  const surface = w.as(w.client, () => Surface.create({ width: 8, height: 8 }));
  surface.bytes().fill(7);
  await channel.send(surface, { good: true });
  const frame = await consumer.receive({ timeout: 1000 });
  assert.deepEqual(frame.meta, { good: true });
  assert.equal(frame.surface.bytes()[0], 7);
  frame.close();
  surface.close();
  channel.close();
  consumer.close();
}

interface ChannelCase {
  name: string;
  /** Sends the bad message(s); the attacker's surface exports ports with `right()`. */
  attack: (w: World, inbox: number, right: () => number, good: Uint8Array) => void;
  /** The ProtocolError reason expected. */
  reason: string;
  /** Releases what the attack kept alive until the server received it. */
  after?: (w: World) => void;
}

/** A port an attack keeps alive until the server received the message (see `after`). */
let keptPort = 0;

const G = computeGeometry(16, 8, "BGRA");
const good = wire(G);

const CHANNEL_CASES: ChannelCase[] = [
  {
    name: "no port descriptor (a simple message)",
    attack: (w, inbox) => forge(w, inbox, { payload: good }),
    reason: "NO_HANDLE",
  },
  {
    name: "complex with zero descriptors",
    attack: (w, inbox) => forge(w, inbox, { complex: true, payload: good }),
    reason: "NO_HANDLE",
  },
  {
    name: "two port descriptors",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [
          { port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND },
          { port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND },
        ],
        payload: good,
      }),
    reason: "EXTRA_HANDLES",
  },
  {
    name: "eight port descriptors",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: Array.from({ length: 8 }, () => ({
          port: right(),
          disposition: D.MACH_MSG_TYPE_MOVE_SEND,
        })),
        payload: good,
      }),
    reason: "EXTRA_HANDLES",
  },
  {
    name: "one out-of-line memory descriptor instead of a port",
    attack: (w, inbox) => forge(w, inbox, { descriptors: [{ ool: 8192 }], payload: good }),
    reason: "NO_HANDLE",
  },
  {
    // XNU copies PHYSICAL_COPY memory out with `deallocate` 0 whatever the sender set, and
    // mach_msg_destroy frees a region only when it is set: the receiver must free it itself.
    name: "a PHYSICAL_COPY out-of-line region (deallocate set by the sender) instead of a port",
    attack: (w, inbox) =>
      forge(w, inbox, {
        descriptors: [{ ool: 1 << 24, copy: D.MACH_MSG_PHYSICAL_COPY, deallocate: true }],
        payload: good,
      }),
    reason: "NO_HANDLE",
  },
  {
    // The rights in an out-of-line port array are destroyed by mach_msg_destroy (which reads the
    // array); the array itself, copied out without `deallocate`, must be freed by the receiver.
    name: "an out-of-line array of two surface rights (PHYSICAL_COPY) instead of a port",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ oolPorts: [right(), right()], copy: D.MACH_MSG_PHYSICAL_COPY }],
        payload: good,
      }),
    reason: "NO_HANDLE",
  },
  {
    // A volatile region is copied out as a new region too; mach_msg_destroy never frees it.
    name: "a port and a volatile out-of-line region",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }, {
          ool: 1 << 24,
          volatile: true,
        }],
        payload: good,
      }),
    reason: "EXTRA_HANDLES",
  },
  {
    name: "out-of-line memory and a port",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ ool: 8192 }, { port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: good,
      }),
    reason: "EXTRA_HANDLES",
  },
  {
    name: "a port and out-of-line memory the server cannot map (MACH_RCV_BODY_ERROR)",
    attack: (w, inbox, right) => {
      w.kernel.vmSpaceLimit = 0x7fffffff; // the server's free address space, for this case
      return forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }, {
          ool: 0x80000000,
        }],
        payload: good,
      });
    },
    reason: "CONTROL_TRUNCATED",
  },
  {
    // The port stays alive until the server received it: one destroyed in transit arrives as
    // MACH_PORT_DEAD (XNU's ipc_kmsg_copyout_object), a different case (the next one).
    name: "a send right that is not an IOSurface port",
    attack: (w, inbox) => {
      keptPort = plainPort(w.attacker);
      forge(w, inbox, {
        descriptors: [{ port: keptPort, disposition: D.MACH_MSG_TYPE_COPY_SEND }],
        payload: good,
      });
    },
    reason: "NOT_SHARED_MEMORY",
    after: (w) => {
      w.attacker.mach_port_deallocate(w.attacker.taskSelf, keptPort);
      w.attacker.mach_port_mod_refs(w.attacker.taskSelf, keptPort, D.MACH_PORT_RIGHT_RECEIVE, -1);
    },
  },
  {
    name: "a send right whose port died in transit (MACH_PORT_DEAD)",
    attack: (w, inbox) => {
      const port = plainPort(w.attacker);
      forge(w, inbox, {
        descriptors: [{ port, disposition: D.MACH_MSG_TYPE_COPY_SEND }],
        payload: good,
      });
      w.attacker.mach_port_deallocate(w.attacker.taskSelf, port);
      w.attacker.mach_port_mod_refs(w.attacker.taskSelf, port, D.MACH_PORT_RIGHT_RECEIVE, -1);
    },
    reason: "NO_HANDLE",
  },
  {
    name: "a send-once right (wrong disposition)",
    attack: (w, inbox) => {
      const port = plainPort(w.attacker);
      forge(w, inbox, {
        descriptors: [{ port, disposition: D.MACH_MSG_TYPE_MAKE_SEND_ONCE }],
        payload: good,
      });
      w.attacker.mach_port_deallocate(w.attacker.taskSelf, port);
      w.attacker.mach_port_mod_refs(w.attacker.taskSelf, port, D.MACH_PORT_RIGHT_RECEIVE, -1);
    },
    reason: "NO_HANDLE",
  },
  {
    name: "a receive right (wrong disposition: the server must destroy the port)",
    attack: (w, inbox) => {
      const port = plainPort(w.attacker);
      w.attacker.mach_port_deallocate(w.attacker.taskSelf, port);
      forge(w, inbox, {
        descriptors: [{ port, disposition: D.MACH_MSG_TYPE_MOVE_RECEIVE }],
        payload: good,
      });
    },
    reason: "NO_HANDLE",
  },
  {
    name: "a null port in the descriptor",
    attack: (w, inbox) =>
      forge(w, inbox, {
        descriptors: [{ port: 0, disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: good,
      }),
    reason: "NO_HANDLE",
  },
  {
    name: "a reply right in the header",
    attack: (w, inbox, right) => {
      const port = plainPort(w.attacker);
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        reply: { port, disposition: D.MACH_MSG_TYPE_MAKE_SEND },
        payload: good,
      });
      w.attacker.mach_port_deallocate(w.attacker.taskSelf, port);
      w.attacker.mach_port_mod_refs(w.attacker.taskSelf, port, D.MACH_PORT_RIGHT_RECEIVE, -1);
    },
    reason: "EXTRA_HANDLES",
  },
  {
    name: "an unknown msgh_id",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        id: 0x1234,
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: good,
      }),
    reason: "BAD_TYPE",
  },
  {
    name: "garbage bytes after the mach header (no descriptor)",
    attack: (w, inbox) => forge(w, inbox, { payload: crypto.getRandomValues(new Uint8Array(200)) }),
    reason: "NO_HANDLE",
  },
  {
    name: "garbage bytes after a valid port descriptor",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: new Uint8Array(200).fill(0xa5),
      }),
    reason: "BAD_MAGIC",
  },
  {
    name: "a wire header cut at 60 bytes",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: good.subarray(0, 60),
      }),
    reason: "SHORT_MESSAGE",
  },
  {
    name: "a wire header cut at 9 bytes",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: good.subarray(0, 9),
      }),
    reason: "SHORT_MESSAGE",
  },
  {
    name: "msgh_size that cuts the port descriptor (the kernel refuses nothing; we must)",
    attack: (w, inbox) => forge(w, inbox, { complex: true, size: 28, payload: good }),
    reason: "NO_HANDLE",
  },
  {
    name: "a message larger than the receive buffer (the kernel destroys it, with its port)",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: new Uint8Array(100_000),
      }),
    reason: "MESSAGE_TRUNCATED",
  },
  {
    name: "bad wire magic",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: withBytes(good, (v) => v.setUint32(0, WIRE_MAGIC ^ 1, true)),
      }),
    reason: "BAD_MAGIC",
  },
  {
    name: "an unknown protocol version",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: withBytes(good, (v) => v.setUint16(4, WIRE_VERSION + 1, true)),
      }),
    reason: "BAD_VERSION",
  },
  {
    name: "an unknown wire message type",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: withBytes(good, (v) => v.setUint16(6, 9, true)),
      }),
    reason: "BAD_TYPE",
  },
  {
    name: "an unknown pixel format",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: withBytes(good, (v) => v.setUint32(12, 0x41414141, true)),
      }),
    reason: "BAD_GEOMETRY",
  },
  {
    name: "width 2^32-1",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: withBytes(good, (v) => v.setUint32(16, 0xffffffff, true)),
      }),
    reason: "BAD_GEOMETRY",
  },
  {
    name: "a geometry larger than the IOSurface it names",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: wire(computeGeometry(64, 64, "BGRA")),
      }),
    reason: "SIZE_MISMATCH",
  },
  {
    name: "a header announcing 1 MiB of metadata",
    attack: (w, inbox, right) =>
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload: wire(G, META_JSON, 1 << 20),
      }),
    reason: "TOO_LARGE",
  },
  {
    name: "metadata that is not UTF-8 JSON (rejected after the port was imported)",
    attack: (w, inbox, right) => {
      const payload = new Uint8Array(HEADER_SIZE + 4);
      payload.set(wire(G, META_JSON, 4));
      payload.set([0xff, 0xfe, 0x7b, 0x00], HEADER_SIZE);
      forge(w, inbox, {
        descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
        payload,
      });
    },
    reason: "BAD_META",
  },
];

/** Sets up server (listener + one accepted channel from the attacker, using the library). */
async function attackedChannel(w: World, name: string) {
  const listener = w.as(w.server, () => listen(name));
  const accepted = listener.accept({ timeout: 2000 });
  const producer: Channel = await w.as(w.attacker, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  return { listener, producer, consumer };
}

Deno.test("darwin/hostile: every malformed message is a typed error, its rights released, the channel and listener still serve", async () => {
  using w = world();
  const { listener, producer, consumer } = await attackedChannel(w, "hostile");
  const inbox = inboxOf(w);
  const surface = w.as(w.attacker, () => Surface.create({ width: 16, height: 8 }));
  const backing = backingOf(surface, "test");
  const right = () => backing.exportHandle();
  const baseline = holdings(w.server);

  for (const c of CHANNEL_CASES) {
    c.attack(w, inbox, right, good);
    const error = await consumer.receive({ timeout: 1000 }).catch((e) => e);
    w.kernel.vmSpaceLimit = Infinity;
    c.after?.(w);
    assert.ok(error instanceof ProtocolError, `${c.name}: expected ProtocolError, got ${error}`);
    assert.equal(error.reason, c.reason, `${c.name}: ${error.message}`);
    assert.equal(holdings(w.server), baseline, `${c.name}: the server's rights changed`);
    assert.equal(surface.inUse, false, `${c.name}: a port the attacker sent is still alive`);
    assert.equal(w.kernel.queuedMessages(), 0, `${c.name}: something is still queued`);
    // The same channel still delivers a valid frame.
    await producer.send(surface, { after: c.name });
    const frame = await consumer.receive({ timeout: 1000 });
    assert.deepEqual(frame.meta, { after: c.name });
    frame.close();
    await goodClientServed(w, listener, "hostile");
    assert.equal(holdings(w.server), baseline, `${c.name}: the good client left rights behind`);
  }

  // 500 bad messages in a row, each with a surface port: no growth.
  for (let i = 0; i < 500; i++) {
    forge(w, inbox, {
      descriptors: [{ port: right(), disposition: D.MACH_MSG_TYPE_MOVE_SEND }],
      payload: withBytes(good, (v) => v.setUint32(0, i, true)),
    });
    const error = await consumer.receive({ timeout: 1000 }).catch((e) => e);
    assert.ok(error instanceof ProtocolError);
  }
  assert.equal(holdings(w.server), baseline);
  assert.equal(surface.inUse, false);

  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/hostile: bad HELLOs are destroyed and skipped; a refused uid and a peer that dies at once leave nothing", async () => {
  using w = world();
  const listener = w.as(w.server, () => listen("door"));
  const accepting = listener.accept(); // parked the whole time; bad HELLOs must not end it
  const lookUp = () => {
    const out = new Uint8Array(4);
    const name = new TextEncoder().encode("surfaceport.door");
    const service = new Uint8Array(128);
    service.set(name);
    assert.equal(w.attacker.bootstrap_look_up(w.attacker.bootstrapPort, service, out), 0);
    return new DataView(out.buffer).getUint32(0, true);
  };
  const door = lookUp();
  const hello = (magic: number, version: number) => {
    const reply = plainPort(w.attacker);
    const buffer = new Uint8Array(32);
    encodeHandshake(
      buffer,
      MSG_ID_HELLO,
      door,
      D.MACH_MSG_TYPE_COPY_SEND,
      reply,
      D.MACH_MSG_TYPE_MAKE_SEND,
      magic,
      version,
    );
    assert.equal(
      w.attacker.mach_msg(buffer, D.MACH_SEND_MSG | D.MACH_SEND_TIMEOUT, 32, 0, 0, 0, 0),
      0,
    );
    return reply;
  };
  // One at a time: the listener's queue is short, and a send it hands back would return a uref.
  const drained = async () => {
    for (let i = 0; i < 100 && w.kernel.queuedMessages() > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  };
  const replies = [hello(0x41414141, WIRE_VERSION)];
  await drained();
  replies.push(hello(WIRE_MAGIC, WIRE_VERSION + 7));
  await drained();
  const plain = plainPort(w.attacker);
  const bad: Forged[] = [
    { id: MSG_ID_HELLO, payload: new Uint8Array(8) }, // no reply port
    {
      id: MSG_ID_HELLO,
      descriptors: [{ port: plain, disposition: D.MACH_MSG_TYPE_COPY_SEND }],
      reply: { port: plain, disposition: D.MACH_MSG_TYPE_MAKE_SEND },
      payload: new Uint8Array(8),
    }, // complex
    {
      id: MSG_ID_HELLO,
      reply: { port: plain, disposition: D.MACH_MSG_TYPE_MAKE_SEND_ONCE },
      payload: withBytes(new Uint8Array(8), (v) => v.setUint32(0, WIRE_MAGIC, true)),
    }, // a send-once reply
    { id: MSG_ID_HELLO, payload: new Uint8Array(4000) }, // larger than a HELLO
    { descriptors: [{ ool: 4096 }], payload: new Uint8Array(8) }, // out-of-line memory
    { descriptors: [{ ool: 0x80000000 }], payload: new Uint8Array(8) }, // unmappable: body error
  ];
  for (const m of bad) {
    assert.equal(forge(w, door, m), 0);
    await drained();
  }
  assert.equal(w.kernel.queuedMessages(), 0, "every bad HELLO was taken off the queue");
  assert.equal(w.server.regions.size, 0);
  // Each refused HELLO's reply right was dropped: no listener inbox was ever made for them.
  for (const reply of replies) {
    w.attacker.mach_port_deallocate(w.attacker.taskSelf, reply);
    w.attacker.mach_port_mod_refs(w.attacker.taskSelf, reply, D.MACH_PORT_RIGHT_RECEIVE, -1);
  }
  w.attacker.mach_port_deallocate(w.attacker.taskSelf, plain);
  w.attacker.mach_port_mod_refs(w.attacker.taskSelf, plain, D.MACH_PORT_RIGHT_RECEIVE, -1);
  w.attacker.mach_port_deallocate(w.attacker.taskSelf, door);

  // A peer of another uid is refused from the audit trailer; its connect ends typed.
  const stranger = w.kernel.createTask({ pid: 777, uid: 1234 });
  await assert.rejects(w.as(stranger, () => connect("door", { timeout: 1000 })), PeerClosedError);

  // A peer that connects and dies at once: the accepted channel ends with PeerClosedError.
  const ghost = w.kernel.createTask({ pid: 888, uid: 501 });
  const ghostChannel = await w.as(ghost, () => connect("door", { timeout: 1000 }));
  const ghostSide = await accepting;
  void ghostChannel;
  w.kernel.kill(ghost);
  await assert.rejects(ghostSide.receive({ timeout: 1000 }), PeerClosedError);
  ghostSide.close();

  await goodClientServed(w, listener, "door");
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/hostile: a peer killed mid-stream: queued frames arrive, then PeerClosedError, nothing held", async () => {
  using w = world();
  const listener = w.as(w.server, () => listen("stream"));
  const accepted = listener.accept({ timeout: 1000 });
  const victim = w.kernel.createTask({ pid: 999, uid: 501 });
  const producer = await w.as(victim, () => connect("stream", { timeout: 1000 }));
  const consumer = await accepted;
  const surfaces = w.as(victim, () => [0, 1, 2].map(() => Surface.create({ width: 8, height: 8 })));
  for (const [i, s] of surfaces.entries()) await producer.send(s, i);
  const first = await consumer.receive({ timeout: 1000 });
  const pending = consumer.receive({ timeout: 1000 }); // the second is still queued
  w.kernel.kill(victim); // SIGKILL: the kernel reclaims every right the victim held
  const second = await pending;
  const third = await consumer.receive({ timeout: 1000 });
  assert.deepEqual([first.meta, second.meta, third.meta], [0, 1, 2]);
  await assert.rejects(consumer.receive({ timeout: 1000 }), PeerClosedError);
  for (const frame of [first, second, third]) frame.close();
  consumer.close();
  await goodClientServed(w, listener, "stream");
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("darwin/hostile: a burst of 1,000 connects is accepted; every right comes back", async () => {
  using w = world();
  const listener = w.as(w.server, () => listen("burst"));
  const baseline = holdings(w.server);
  const N = 1000;
  const accepted: Channel[] = [];
  // The bound is on a stall, not on the whole burst: 1,000 connects retrying against a full
  // queue are CPU work that a loaded machine stretches well past any fixed total.
  using stall = stallWatchdog(() => accepted.length, 10_000, `accepting ${N} connects`);
  const acceptAll = (async () => {
    while (accepted.length < N) accepted.push(await listener.accept({ signal: stall.signal }));
  })();
  const clients = await Promise.all(
    Array.from(
      { length: N },
      () => w.as(w.attacker, () => connect("burst", { signal: stall.signal })),
    ),
  );
  await acceptAll;
  assert.equal(accepted.length, N);
  assert.equal(w.server.names.size, 1 + 2 * N, "the listener port plus two rights per channel");
  for (const c of clients) c.close();
  for (const c of accepted) {
    await assert.rejects(c.receive({ timeout: 1000 }), PeerClosedError);
    c.close();
  }
  assert.equal(holdings(w.server), baseline);
  await goodClientServed(w, listener, "burst");
  listener.close();
  w.kernel.assertNoLeaks();
});
