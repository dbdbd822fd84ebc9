/**
 * Hostile peers of the macOS backend, mirrored from
 * `tests/hostile_messages_test.ts` onto the in-memory TEST DOUBLE of Mach
 * and IOSurface (`tests/fakes/fake_darwin.ts`; nothing here runs on macOS):
 * malformed messages. A raw attacker task writes any mach message it likes
 * to the server's connection inbox (tests/hostile/darwin_world.ts); the
 * server uses the public API. After each case:
 *
 * - the server saw exactly the typed outcome expected (`ProtocolError` with
 *   its reason),
 * - the same channel still delivers a valid frame sent after the bad one,
 * - the server task holds exactly the rights it held before (names, user
 *   references, out-of-line regions, port sets) and no surface is left in
 *   use by a right the attacker sent, and
 * - a well-behaved client is still accepted and served.
 *
 * The test ends with the fake's `assertNoLeaks()`.
 */

import assert from "node:assert/strict";
import { type Channel, connect, listen, ProtocolError, Surface } from "../mod.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { computeGeometry, type SurfaceGeometry } from "../src/core/geometry.ts";
import { backingOf } from "../src/surface/surface.ts";
import {
  encodeHeader,
  HEADER_SIZE,
  META_JSON,
  WIRE_MAGIC,
  WIRE_VERSION,
} from "../src/wire/wire.ts";
import {
  type AttackWorld,
  forge,
  goodClientServed,
  holdings,
  plainPort,
  withBytes,
  world,
} from "./hostile/darwin_world.ts";

const D = DARWIN;

/** The attacker's send right to the server's inbox for this connection. */
function inboxOf(w: AttackWorld): number {
  for (const [name, entry] of w.attacker.names) {
    if (entry.port.receiver === w.server && entry.send > 0) {
      // The listener's port is looked up per connect and released, so this is the inbox.
      return name;
    }
  }
  throw new Error("the attacker holds no send right to the server");
}

/** A wire header for `geometry` (and `metaLength` bytes of `metaKind` metadata). */
function wire(geometry: SurfaceGeometry, metaKind = 0, metaLength = 0): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE);
  encodeHeader(new DataView(bytes.buffer), geometry, metaKind, metaLength, 0n, 0);
  return bytes;
}

interface ChannelCase {
  name: string;
  /** Sends the bad message(s); the attacker's surface exports ports with `right()`. */
  attack: (w: AttackWorld, inbox: number, right: () => number, good: Uint8Array) => void;
  /** The ProtocolError reason expected. */
  reason: string;
  /** Releases what the attack kept alive until the server received it. */
  after?: (w: AttackWorld) => void;
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
async function attackedChannel(w: AttackWorld, name: string) {
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
