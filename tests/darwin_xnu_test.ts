/**
 * The defects a second review of the macOS backend against XNU, launchd
 * and libsyscall found (issue 19, "Defects"), each shown over the TEST
 * DOUBLE (`tests/fakes/`), which now does what XNU does in those places:
 * copies a port array it cannot map out with address 0 and its count kept,
 * serves messages to kernel objects (a MIG bad-id reply), gives a right
 * that died in transit as `MACH_PORT_DEAD`, and bumps a reused pid's
 * version. Every test here failed on the code before its fix; each ends
 * with `assertNoLeaks()`.
 */

import assert from "node:assert/strict";
import {
  ClosedError,
  connect,
  listen,
  MachError,
  PeerClosedError,
  ProtocolError,
  receivePortRight,
  sendPortRight,
  Surface,
  TimeoutError,
} from "../mod.ts";
import { resolveLimits } from "../src/channel/options.ts";
import { APP_GROUP_ENV } from "../src/darwin/bootstrap.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { connectMach } from "../src/darwin/listener.ts";
import { INBOX_QUEUE_LIMIT, kernReturnName } from "../src/darwin/mach.ts";
import { SEND_POSSIBLE_RECHECK_MS } from "../src/darwin/send.ts";
import { DARWIN, encodeMachMsgHeader, machMsghBits } from "../src/darwin/structs.ts";
import { backingOf } from "../src/surface/surface.ts";
import { runtime } from "../ffi/runtime.ts";
import type { FakeTask } from "./fakes/fake_darwin.ts";
import { glueNative } from "./fakes/frameworks.ts";
import { world } from "./fakes/world.ts";

const D = DARWIN;

/** B listens, A connects; returns both channel ends. */
async function pair(w: ReturnType<typeof world>, name = "xnu", allowPeer?: () => boolean) {
  const listener = w.as(w.B, () => listen(name, allowPeer ? { allowPeer } : {}));
  const accepted = listener.accept({ timeout: 2000 });
  const producer = await w.as(w.A, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  return { listener, producer, consumer };
}

/** Gives `attacker` a send right to the inbox `owner` receives on from `peer` (as a leak would). */
function leakInbox(peer: FakeTask, owner: FakeTask, attacker: FakeTask): number {
  for (const entry of peer.names.values()) {
    if (entry.port.receiver === owner && entry.send > 0) {
      return attacker.insert({ port: entry.port, type: "send" });
    }
  }
  throw new Error("no send right to the peer's inbox");
}

/** Sends `bytes` (a header and body already written) from `task`; returns `mach_msg_return_t`. */
function rawSend(task: FakeTask, bytes: Uint8Array, size: number): number {
  return task.mach_msg(bytes, D.MACH_SEND_MSG | D.MACH_SEND_TIMEOUT, size, 0, 0, 0, 0);
}

/** A new port in `task` with its receive right and one send right; returns its name. */
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

Deno.test("defect 5: a port array XNU could not map (address 0, count kept) is destroyed without walking address 0", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const attacker = w.kernel.createTask({ pid: 666, uid: 501 });
  const inbox = leakInbox(w.a, w.b, attacker);
  const port = plainPort(attacker);
  const names = new Uint32Array([port]);
  const bytes = new Uint8Array(64);
  const view = new DataView(bytes.buffer);
  encodeMachMsgHeader(view, 0, {
    bits: (machMsghBits(D.MACH_MSG_TYPE_COPY_SEND, 0) | D.MACH_MSGH_BITS_COMPLEX) >>> 0,
    size: 44,
    remotePort: inbox,
    localPort: 0,
    voucherPort: 0,
    id: 0x53505203,
  });
  view.setUint32(24, 1, true);
  view.setBigUint64(28, Deno.UnsafePointer.value(Deno.UnsafePointer.of(names)), true);
  view.setUint8(28 + 9, D.MACH_MSG_PHYSICAL_COPY);
  view.setUint8(28 + 10, D.MACH_MSG_TYPE_COPY_SEND);
  view.setUint8(28 + 11, D.MACH_MSG_OOL_PORTS_DESCRIPTOR);
  view.setUint32(28 + 12, names.length, true);
  assert.equal(rawSend(attacker, bytes, 44), D.KERN_SUCCESS);
  w.kernel.vmSpaceLimit = 0; // the consumer's address space is full: the array cannot be mapped
  const error = await w.as(w.B, () => consumer.receive({ timeout: 1000 })).catch((e) => e);
  w.kernel.vmSpaceLimit = Infinity;
  assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
  assert.equal(error.reason, "CONTROL_TRUNCATED");
  assert.match(error.message, /MACH_RCV_BODY_ERROR \| MACH_MSG_VM_SPACE/);
  // The channel still serves.
  using surface = Surface.create({ width: 8, height: 8 });
  await producer.send(surface, "after");
  using frame = await w.as(w.B, () => consumer.receive({ timeout: 1000 }));
  assert.equal(frame.meta, "after");
  frame.close();
  attacker.mach_port_deallocate(attacker.taskSelf, port);
  attacker.mach_port_mod_refs(attacker.taskSelf, port, D.MACH_PORT_RIGHT_RECEIVE, -1);
  attacker.mach_port_deallocate(attacker.taskSelf, inbox);
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

/**
 * Makes the kernel send `inbox` a MIG bad-id reply with msgh_id 70 (= the
 * no-senders notification's id): a request with id -30 to a kernel object
 * (an IOSurface port), the inbox as its reply port.
 */
function spoofNoSenders(attacker: FakeTask, inbox: number): void {
  const surface = attacker.createIOSurface({
    width: 4,
    height: 4,
    pixelFormat: 0x42475241,
    allocSize: 64,
    planes: [{ width: 4, height: 4, bytesPerElement: 4, bytesPerRow: 16, offset: 0 }],
  })!;
  const kobject = attacker.IOSurfaceCreateMachPort(surface);
  const bytes = new Uint8Array(32);
  encodeMachMsgHeader(new DataView(bytes.buffer), 0, {
    bits: machMsghBits(D.MACH_MSG_TYPE_MOVE_SEND, D.MACH_MSG_TYPE_COPY_SEND),
    size: 32,
    remotePort: kobject,
    localPort: inbox,
    voucherPort: 0,
    id: D.MACH_NOTIFY_NO_SENDERS - 100,
  });
  assert.equal(rawSend(attacker, bytes, 32), D.KERN_SUCCESS);
  attacker.CFRelease(surface);
}

Deno.test("defect 8: a kernel's MIG reply with id 70 is not taken for the peer's no-senders notification", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  const attacker = w.kernel.createTask({ pid: 666, uid: 501 });
  const inbox = leakInbox(w.a, w.b, attacker);
  spoofNoSenders(attacker, inbox);
  assert.equal(w.kernel.queuedMessages(), 1, "the kernel's reply is queued on the inbox");
  using surface = Surface.create({ width: 8, height: 8 });
  await producer.send(surface, "still connected");
  // Before: PeerClosedError, and the channel was dead for good.
  using frame = await w.as(w.B, () => consumer.receive({ timeout: 1000 }));
  assert.equal(frame.meta, "still connected");
  frame.close();
  // The real notification still ends the channel.
  attacker.mach_port_deallocate(attacker.taskSelf, inbox);
  producer.close();
  await assert.rejects(w.as(w.B, () => consumer.receive({ timeout: 1000 })), PeerClosedError);
  surface.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("defect 9: PeerCredentials carries the audit token's pid version; an allowPeer on pid + version refuses a reused pid", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  assert.equal(consumer.peer.pid, w.a.pid);
  assert.equal(consumer.peer.pidVersion, w.a.pidVersion);
  assert.equal(producer.peer.pidVersion, w.b.pidVersion);
  producer.close();
  consumer.close();
  listener.close();

  // The child we meant exits; another process gets its pid and connects.
  const meant = { pid: w.a.pid, pidVersion: w.a.pidVersion };
  w.kernel.kill(w.a);
  const impostor = w.kernel.createTask({ pid: meant.pid, uid: 501 });
  assert.equal(impostor.pid, meant.pid);
  assert.notEqual(impostor.pidVersion, meant.pidVersion);
  const guarded = w.as(
    w.B,
    () =>
      listen("xnu-child", {
        allowPeer: (peer) => peer.pid === meant.pid && peer.pidVersion === meant.pidVersion,
      }),
  );
  const I = createDarwinBackend(impostor);
  const accepted = guarded.accept({ timeout: 300 }).catch((e) => e);
  await assert.rejects(w.as(I, () => connect("xnu-child", { timeout: 300 })), PeerClosedError);
  assert.ok(await accepted instanceof TimeoutError, "the impostor is never accepted");
  guarded.close();
  w.kernel.assertNoLeaks();
});

Deno.test("defect 13: receivePortRight refuses a right that died in transit (MACH_PORT_DEAD)", async () => {
  using w = world();
  const a = w.a;
  const inbox = plainPort(a); // the caller's own port, with a send right to it
  const doomed = plainPort(a);
  await sendPortRight(inbox, doomed); // a copy of the send right travels
  a.mach_port_mod_refs(a.taskSelf, doomed, D.MACH_PORT_RIGHT_RECEIVE, -1); // the port dies
  a.mach_port_deallocate(a.taskSelf, doomed); // our own right is a dead name now
  const error = await receivePortRight(inbox, { timeout: 500 }).catch((e) => e);
  assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${JSON.stringify(error)}`);
  assert.equal(error.reason, "NO_HANDLE");
  assert.match(error.message, /MACH_PORT_DEAD/);
  a.mach_port_deallocate(a.taskSelf, inbox);
  a.mach_port_mod_refs(a.taskSelf, inbox, D.MACH_PORT_RIGHT_RECEIVE, -1);
  w.kernel.assertNoLeaks();
});

Deno.test("defect 13: a mach_msg_return_t with special bits is named, not printed as hex", () => {
  assert.equal(
    kernReturnName(D.MACH_SEND_NO_BUFFER | D.MACH_MSG_IPC_SPACE),
    "MACH_SEND_NO_BUFFER | MACH_MSG_IPC_SPACE",
  );
  assert.equal(
    kernReturnName(D.MACH_RCV_BODY_ERROR | D.MACH_MSG_VM_SPACE | D.MACH_MSG_IPC_KERNEL),
    "MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE | MACH_MSG_IPC_KERNEL",
  );
  assert.equal(kernReturnName(D.MACH_SEND_TIMED_OUT), "MACH_SEND_TIMED_OUT");
  assert.equal(kernReturnName(0x12345), "0x12345");
});

Deno.test("defect 13: connect to a listener whose queue stays full times out at its deadline and reports the time spent", async () => {
  using w = world();
  const listener = w.as(w.B, () => listen("xnu-full"));
  // Five connects that are never accepted fill the listener's queue (XNU's default limit).
  const pending = [];
  for (let i = 0; i < 5; i++) {
    pending.push(
      connectMach(w.a, "xnu-full", () => true, resolveLimits({}), performance.now() + 2000)
        .catch((e) => e),
    );
  }
  assert.equal(w.kernel.queuedMessages(), 5);
  const timeout = 150;
  const start = performance.now();
  const error = await connectMach(
    w.a,
    "xnu-full",
    () => true,
    resolveLimits({}),
    performance.now() + timeout,
  ).catch((e) => e);
  const spent = performance.now() - start;
  assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${error}`);
  assert.ok(spent >= timeout, `gave up after ${spent} ms, before its ${timeout} ms deadline`);
  const reported = Number(/after (\d+) ms/.exec(error.message)?.[1]);
  assert.ok(
    reported >= timeout && reported <= spent + 1,
    `reports ${reported} ms, spent ${spent}`,
  );
  listener.close();
  for (const result of await Promise.all(pending)) {
    assert.ok(result instanceof PeerClosedError, `${result}`);
  }
  w.kernel.assertNoLeaks();
});

Deno.test("defect 6: an inbox queues INBOX_QUEUE_LIMIT frames, and a send to a full one waits for MACH_NOTIFY_SEND_POSSIBLE instead of polling", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w);
  using surface = Surface.create({ width: 8, height: 8 });
  for (let i = 0; i < INBOX_QUEUE_LIMIT; i++) await producer.send(surface, i, { timeout: 500 });
  assert.equal(w.kernel.fullQueueSends, 0, "the inbox kept XNU's default queue limit of 5");
  assert.ok(INBOX_QUEUE_LIMIT >= 64 + 2, "a subscriber's depth (64) and its control messages fit");

  // The consumer stalls for 200 ms while a send waits.
  let done = false;
  const waiting = producer.send(surface, "late", { timeout: 2000 }).then(() => done = true);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(done, false);
  const attempts = w.kernel.fullQueueSends;
  assert.ok(attempts <= 3, `${attempts} handed-back sends while the queue stayed full (polling)`);
  const start = performance.now();
  (await w.as(w.B, () => consumer.receive({ timeout: 1000 }))).close();
  await waiting;
  const woken = performance.now() - start;
  assert.ok(
    woken < SEND_POSSIBLE_RECHECK_MS / 2,
    `woken after ${woken} ms: not by the notification`,
  );

  // A send blocked on a peer that dies ends with PeerClosedError (a dead-name notification).
  const blocked = producer.send(surface, "never").catch((e) => e);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const killed = performance.now();
  w.kernel.kill(w.b);
  const error = await blocked;
  assert.ok(error instanceof PeerClosedError, `${error}`);
  assert.ok(performance.now() - killed < SEND_POSSIBLE_RECHECK_MS / 2, "not woken by the kernel");
  surface.close();
  producer.close();
  void consumer, listener; // died with B
  w.kernel.assertNoLeaks();
});

Deno.test("defect 6 / issue 23: a send-possible request replaced by another comes back as a right and is released", async () => {
  using w = world();
  const a = w.a;
  const inbox = plainPort(a);
  assert.equal(
    a.mach_port_set_attributes(a.taskSelf, inbox, D.MACH_PORT_LIMITS_INFO, new Uint8Array(4), 1),
    0,
  ); // limit 0: always full
  const first = sendPortRight(inbox, inbox, { timeout: 2000 });
  const second = sendPortRight(inbox, inbox, { timeout: 2000 }); // replaces the first's request
  await new Promise((resolve) => setTimeout(resolve, 20));
  const limit = new Uint8Array(4);
  new DataView(limit.buffer).setInt32(0, 5, true);
  assert.equal(a.mach_port_set_attributes(a.taskSelf, inbox, D.MACH_PORT_LIMITS_INFO, limit, 1), 0);
  await Promise.all([first, second]);
  for (let i = 0; i < 2; i++) {
    const { right } = await receivePortRight(inbox, { timeout: 500 });
    a.mach_port_deallocate(a.taskSelf, right);
  }
  a.mach_port_deallocate(a.taskSelf, inbox);
  a.mach_port_mod_refs(a.taskSelf, inbox, D.MACH_PORT_RIGHT_RECEIVE, -1);
  w.kernel.assertNoLeaks(); // the replaced request's send-once right was released
});

Deno.test("defect 10: listen() never blocks the thread: a name launchd still holds is checked in by timers, a name in use fails at once", async () => {
  using w = world();
  w.kernel.bootstrapRemovalDelayMs = 200; // launchd drops a closed listener's name after 200 ms
  // Check-ins counted, not timed: a listen() that waited on the thread for the name retries
  // there (a bound on how long listen() took failed when a loaded machine paused it).
  let checkIns = 0;
  const checkIn = w.a.bootstrap_check_in.bind(w.a);
  w.a.bootstrap_check_in = (...args) => (checkIns++, checkIn(...args));
  listen("xnu-again").close();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  try {
    let before = checkIns;
    const again = listen("xnu-again"); // SERVICE_ACTIVE until launchd removes the name
    assert.equal(checkIns - before, 1, "listen() retried the check-in on the thread");
    const accepted = again.accept({ timeout: 2000 });
    const client = await w.as(w.B, () => connect("xnu-again", { timeout: 2000 }));
    const server = await accepted;
    assert.ok(checkIns - before > 1, "the name was checked in later, by a timer");
    assert.ok(ticks >= 10, `the event loop ran ${ticks} 5 ms ticks while the name was held`);
    client.close();
    server.close();
    again.close();

    // A live listener's name (another process's): refused at once, saying so, not after 250 ms.
    const live = w.as(w.B, () => listen("xnu-live"));
    before = checkIns;
    assert.throws(
      () => listen("xnu-live"),
      (e) =>
        e instanceof MachError && e.kernReturnName === "BOOTSTRAP_NOT_PRIVILEGED" &&
        /another process/.test(e.message),
    );
    assert.equal(checkIns - before, 1, "retried a live name");
    live.close();
    // Closed while launchd still holds the name: the background check-in stops, nothing leaks.
    listen("xnu-again").close();
    const pending = listen("xnu-again");
    const waiting = pending.accept().catch((e) => e);
    pending.close();
    assert.ok(await waiting instanceof ClosedError);
    await new Promise((resolve) => setTimeout(resolve, 250));
  } finally {
    clearInterval(timer);
  }
  w.kernel.assertNoLeaks();
});

Deno.test("defect 11: a sandboxed process is told the sandbox denies mach-register, and its application group prefix works", async () => {
  using w = world();
  const app = w.kernel.createTask({ pid: 303, appGroups: ["TEAMID.com.example.shared"] });
  const App = createDarwinBackend(glueNative(app));
  assert.throws(
    () => w.as(App, () => listen("camera")),
    (e) =>
      e instanceof MachError && e.kernReturnName === "BOOTSTRAP_NOT_PRIVILEGED" &&
      /sandbox/.test(e.message) && /mach-register/.test(e.message) &&
      e.message.includes(APP_GROUP_ENV),
  );
  await assert.rejects(
    w.as(App, () => connect("camera")),
    (e) => e instanceof MachError && /mach-lookup/.test(e.message),
  );
  Deno.env.set(APP_GROUP_ENV, "TEAMID.com.example.shared");
  try {
    const listener = w.as(App, () => listen("camera"));
    assert.equal(listener.address, "TEAMID.com.example.shared.surfaceport.camera");
    const accepted = listener.accept({ timeout: 1000 });
    const client = await connect("camera", { timeout: 1000 }); // A, outside the sandbox
    const server = await accepted;
    client.close();
    server.close();
    listener.close();
  } finally {
    Deno.env.delete(APP_GROUP_ENV);
  }
  w.kernel.assertNoLeaks();
});

Deno.test("fake: names are reused as XNU reuses them (same index, generation + 4), so a stale name is invalid", () => {
  using w = world();
  const a = w.a;
  const first = plainPort(a);
  a.mach_port_deallocate(a.taskSelf, first);
  a.mach_port_mod_refs(a.taskSelf, first, D.MACH_PORT_RIGHT_RECEIVE, -1);
  const second = plainPort(a);
  assert.equal(second >>> 8, first >>> 8, "the freed index is reused at once");
  assert.equal(second & 0xff, (first + 4) & 0xff, "with the next generation");
  assert.equal(a.mach_port_deallocate(a.taskSelf, first), D.KERN_INVALID_NAME);
  w.kernel.violations.length = 0; // that stale deallocate was this test's own
  a.mach_port_deallocate(a.taskSelf, second);
  a.mach_port_mod_refs(a.taskSelf, second, D.MACH_PORT_RIGHT_RECEIVE, -1);
  w.kernel.assertNoLeaks();
});

Deno.test("fake: with a slow blocking-thread pool (5 ms a call) parked receives and sends still meet", async () => {
  using w = world();
  w.kernel.blockingCallLatencyMs = 5;
  const { listener, producer, consumer } = await pair(w, "xnu-slow");
  using surface = Surface.create({ width: 8, height: 8 });
  for (let i = 0; i < 10; i++) {
    const receiving = w.as(w.B, () => consumer.receive({ timeout: 2000 })); // parks first
    await producer.send(surface, i);
    using frame = await receiving;
    assert.equal(frame.meta, i);
    frame.close();
  }
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("fake: bootstrap namespaces: an ssh session's task neither sees nor collides with the GUI's names", async () => {
  using w = world();
  const listener = w.as(w.B, () => listen("xnu-ns"));
  const ssh = w.kernel.createTask({ pid: 404, namespace: "ssh" });
  const S = createDarwinBackend(glueNative(ssh));
  await assert.rejects(
    w.as(S, () => connect("xnu-ns")),
    (e) => e instanceof MachError && e.kernReturnName === "BOOTSTRAP_UNKNOWN_SERVICE",
  );
  const own = w.as(S, () => listen("xnu-ns")); // the same name, in its own namespace
  own.close();
  listener.close();
  w.kernel.assertNoLeaks();
});

Deno.test("fake (issue 23): each task maps a surface at its own address; a frame arrives byte for byte", async () => {
  using w = world();
  const { listener, producer, consumer } = await pair(w, "xnu-bytes");
  using surface = Surface.create({ width: 64, height: 32, format: "420v" });
  for (let plane = 0; plane < 2; plane++) {
    const bytes = surface.bytes(plane);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + plane * 7 + (i >> 8)) & 0xff;
  }
  await producer.send(surface, null);
  using frame = await w.as(w.B, () => consumer.receive({ timeout: 1000 }));
  assert.notEqual(
    runtime.pointerValue(backingOf(frame.surface, "test").baseAddress),
    runtime.pointerValue(backingOf(surface, "test").baseAddress),
    "the receiver sees the memory at its own address, as another process would",
  );
  for (let plane = 0; plane < 2; plane++) {
    assert.deepEqual(frame.surface.bytes(plane), surface.bytes(plane), `plane ${plane}`);
  }
  surface.bytes(0)[0] ^= 0xff; // one memory behind both mappings
  assert.equal(frame.surface.bytes(0)[0], surface.bytes(0)[0]);
  frame.close();
  surface.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});
