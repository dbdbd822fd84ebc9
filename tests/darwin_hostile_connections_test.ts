/**
 * Hostile peers of the macOS backend, mirrored from
 * `tests/hostile_connections_test.ts` onto the in-memory TEST DOUBLE of Mach
 * and IOSurface (`tests/fakes/fake_darwin.ts`; nothing here runs on macOS):
 * connections that misbehave. Bad HELLOs sent to the listener's name, a
 * peer of another uid, a peer that connects and dies, a producer killed
 * mid-stream, and a burst of 1,000 connects. After each the listener still
 * serves a good client, and every test ends with the fake's
 * `assertNoLeaks()`.
 */

import assert from "node:assert/strict";
import { type Channel, connect, listen, PeerClosedError, Surface } from "../mod.ts";
import { encodeHandshake, MSG_ID_HELLO } from "../src/darwin/messages.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { WIRE_MAGIC, WIRE_VERSION } from "../src/wire/wire.ts";
import { stallWatchdog } from "./helpers.ts";
import {
  forge,
  type Forged,
  goodClientServed,
  holdings,
  plainPort,
  withBytes,
  world,
} from "./hostile/darwin_world.ts";

const D = DARWIN;

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
