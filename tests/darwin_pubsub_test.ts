/**
 * publish / subscribe on the macOS backend, over the in-memory TEST DOUBLE
 * of mach + IOSurface (`tests/fakes/`): the publisher and its subscribers
 * are fake tasks in this one process, driven through the public API. Every
 * test ends with `assertNoLeaks()`: no right, CF reference or use count may
 * be left behind. Like the `darwin_fake_*_test.ts` files, this proves the neutral
 * publish/subscribe code and the darwin backend's control messages against
 * the fake's model of Mach, not against the kernel.
 */
import assert from "node:assert/strict";
import {
  connect,
  list,
  listen,
  PeerClosedError,
  PoolExhaustedError,
  publish,
  subscribe,
  Surface,
  SurfacePool,
  TimeoutError,
} from "../mod.ts";
import type { Backend } from "../src/contract/backend.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { setRegistryForTesting } from "../src/channel/registry.ts";
import { libc } from "../ffi/linux.ts";
import { sleep, waitUntil } from "./helpers.ts";
import { world } from "./fakes/world.ts";

/** A third (fourth...) task in the world, with its backend. */
function task(w: ReturnType<typeof world>, pid: number, uid = 501): Backend {
  return createDarwinBackend(w.kernel.createTask({ pid, uid }));
}

/**
 * No leaks, once the waits the closes woke have unwound (a parked receive or
 * accept destroys its port only when it leaves the port set).
 */
async function assertNoLeaksSettled(w: ReturnType<typeof world>): Promise<void> {
  try {
    await waitUntil(
      () => {
        try {
          w.kernel.assertNoLeaks();
          return true;
        } catch {
          return false;
        }
      },
      2000,
      "the closed ports to go",
    );
  } catch {
    // fall through: report the leaks themselves
  }
  w.kernel.assertNoLeaks();
}

function filled(fill: number): Surface {
  const surface = Surface.create({ width: 32, height: 8 });
  surface.bytes().fill(fill);
  return surface;
}

Deno.test("darwin/fake pubsub: three subscriber tasks get the same frames and sequences", async () => {
  using w = world();
  const C = task(w, 303), D = task(w, 404);
  const publisher = publish("cam");
  const subscriptions = [
    await w.as(w.B, () => subscribe("cam", { policy: "queue", timeout: 1000 })),
    await w.as(C, () => subscribe("cam", { policy: "queue", depth: 2, timeout: 1000 })),
    await w.as(D, () => subscribe("cam", { policy: "queue", timeout: 1000 })),
  ];
  await waitUntil(
    () => publisher.subscribers.filter((s) => s.state === "subscribed").length === 3,
    2000,
    "three SUBSCRIBEs",
  );
  assert.deepEqual(publisher.subscribers.map((s) => s.pid).sort(), [202, 303, 404]);
  const surface = filled(0);
  for (let i = 0; i < 5; i++) {
    surface.bytes().fill(i);
    const sent = publisher.send(surface, { i }, { timeout: 2000 });
    for (const subscription of subscriptions) {
      using frame = await subscription.receive({ timeout: 1000 });
      assert.equal(frame.sequence, i);
      assert.deepEqual(frame.meta, { i });
      assert.equal(frame.surface.id, surface.id);
      assert.equal(frame.surface.bytes()[5], i);
    }
    await sent;
  }
  for (const subscription of subscriptions) subscription.close();
  surface.close();
  publisher.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake pubsub: a 'latest' subscriber that does not read never slows the publisher, then gets the newest", async () => {
  using w = world();
  const publisher = publish("cam");
  const subscription = await w.as(w.B, () => subscribe("cam", { timeout: 1000 }));
  await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 2000, "SUBSCRIBE");
  const surface = filled(0);
  await publisher.send(surface, { i: 0 });
  (await subscription.receive({ timeout: 1000 })).close();
  // The fake's queues hold 5 messages: 50 sends would stall on a subscriber that got them all.
  for (let i = 1; i <= 50; i++) await publisher.send(surface, { i }, { timeout: 1000 });
  assert.equal(publisher.subscribers[0].dropped >= 48, true);
  using frame = await subscription.receive({ timeout: 1000 });
  assert.deepEqual(frame.meta, { i: 50 });
  assert.equal(frame.sequence, 50);
  assert.equal(subscription.stats.dropped, 49);
  frame.close();
  subscription.close();
  surface.close();
  publisher.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake pubsub: a 'queue' subscriber back-pressures; a late one gets the last frame", async () => {
  using w = world();
  const C = task(w, 303);
  const publisher = publish("cam");
  const queued = await w.as(w.B, () => subscribe("cam", { policy: "queue", timeout: 1000 }));
  await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 2000, "SUBSCRIBE");
  const surface = filled(1);
  await publisher.send(surface, { i: 0 });
  await assert.rejects(publisher.send(surface, { i: 1 }, { timeout: 100 }), TimeoutError);
  const late = await w.as(C, () => subscribe("cam", { timeout: 1000 }));
  using first = await late.receive({ timeout: 1000 });
  assert.equal(first.sequence, 1); // the last frame, though the queue subscriber never got it
  first.close();
  (await queued.receive({ timeout: 1000 })).close(); // sequence 0
  const next = publisher.send(surface, { i: 2 }, { timeout: 1000 });
  using second = await queued.receive({ timeout: 1000 }); // returns the credit, gets sequence 2
  assert.equal(second.sequence, 2);
  await next;
  second.close();
  queued.close();
  late.close();
  surface.close();
  publisher.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake pubsub: the pool reuses a surface only after every subscriber let go, and after a killed task", async () => {
  using w = world();
  const C = task(w, 303);
  const victim = w.kernel.createTask({ pid: 404, uid: 501 });
  const V = createDarwinBackend(victim);
  const publisher = publish("cam", { keepLast: false });
  const b = await w.as(w.B, () => subscribe("cam", { timeout: 1000 }));
  const c = await w.as(C, () => subscribe("cam", { timeout: 1000 }));
  const v = await w.as(V, () => subscribe("cam", { timeout: 1000 }));
  await waitUntil(
    () => publisher.subscribers.filter((s) => s.state === "subscribed").length === 3,
    2000,
    "three SUBSCRIBEs",
  );
  const pool = new SurfacePool({ width: 32, height: 8, maxSurfaces: 1 });
  const surface = pool.tryAcquire()!;
  const id = surface.id;
  await publisher.send(surface, { i: 0 });
  surface.close();
  const frames = [
    await b.receive({ timeout: 1000 }),
    await c.receive({ timeout: 1000 }),
    await v.receive({ timeout: 1000 }),
  ];
  for (const frame of frames) assert.equal(frame.surface.id, id);
  await assert.rejects(pool.acquire({ timeout: 50 }), PoolExhaustedError);
  frames[0].close();
  await assert.rejects(pool.acquire({ timeout: 50 }), PoolExhaustedError);
  frames[1].close();
  await assert.rejects(pool.acquire({ timeout: 50 }), PoolExhaustedError);
  w.kernel.kill(victim); // dies holding its frame: the kernel drops its rights
  using again = await pool.acquire({ timeout: 2000 });
  assert.equal(again.id, id);
  await waitUntil(() => publisher.subscribers.length === 2, 2000, "the dead subscriber to go");
  frames[2].close(); // the dead task's frame object: its rights went with the task
  v.close();
  again.close();
  b.close();
  c.close();
  pool.close();
  publisher.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake: connect and subscribe with a timeout wait for the name (BOOTSTRAP_UNKNOWN_SERVICE retried)", async () => {
  using w = world();
  const connecting = w.as(w.B, () => connect("later", { timeout: 2000 }));
  const subscribing = w.as(w.B, () => subscribe("later-pub", { timeout: 2000 }));
  await sleep(150);
  const listener = listen("later");
  const publisher = publish("later-pub");
  const accepted = listener.accept({ timeout: 2000 });
  const channel = await connecting;
  const server = await accepted;
  assert.equal(channel.peer.pid, 101);
  const subscription = await subscribing;
  const surface = filled(9);
  await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 2000, "SUBSCRIBE");
  await publisher.send(surface);
  (await subscription.receive({ timeout: 1000 })).close();
  subscription.close();
  channel.close();
  server.close();
  listener.close();
  publisher.close();
  surface.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake pubsub: a reconnecting subscription follows a restarted publisher", async () => {
  using w = world();
  const C = task(w, 303);
  let publisher = publish("cam");
  const subscription = await w.as(
    w.B,
    () => subscribe<{ gen: number }>("cam", { timeout: 1000, reconnect: true }),
  );
  const surface = filled(2);
  await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 2000, "SUBSCRIBE");
  await publisher.send(surface, { gen: 1 });
  (await subscription.receive({ timeout: 1000 })).close();
  assert.equal(subscription.publisher?.pid, 101);
  publisher.close();
  const receiving = subscription.receive({ timeout: 3000 });
  await sleep(100);
  publisher = w.as(C, () => publish("cam")); // another task takes the name over
  await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 3000, "resubscribe");
  const other = w.as(C, () => filled(3));
  await w.as(C, () => publisher.send(other, { gen: 2 }));
  using frame = await receiving;
  assert.equal(frame.meta?.gen, 2);
  assert.equal(subscription.publisher?.pid, 303);
  assert.equal(subscription.stats.reconnects, 1);
  frame.close();
  subscription.close();
  w.as(C, () => {
    publisher.close();
    other.close();
  });
  surface.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake: without reconnect, a subscription ends when its publisher closes", async () => {
  using w = world();
  const publisher = publish("cam");
  const subscription = await w.as(w.B, () => subscribe("cam", { timeout: 1000 }));
  publisher.close();
  await assert.rejects(subscription.receive({ timeout: 1000 }), PeerClosedError);
  subscription.close();
  await assertNoLeaksSettled(w);
});

Deno.test("darwin/fake: list() shows publishers and listeners from the registry, live by bootstrap look-up", async () => {
  using w = world();
  const path = await Deno.makeTempDir({ prefix: "surfaceport-registry-" });
  await Deno.chmod(path, 0o700);
  setRegistryForTesting({ path, uid: libc().geteuid() });
  try {
    const publisher = publish("cam");
    const listener = w.as(w.B, () => listen("chan"));
    const subscription = await w.as(w.B, () => subscribe("cam", { timeout: 1000 }));
    await waitUntil(() => publisher.subscribers.length === 1, 2000, "the subscriber");
    // The subscriber count is rewritten at most once per 100 ms (a burst of connections is one write).
    let entries = await list();
    for (let i = 0; i < 100 && entries[0]?.subscribers !== 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      entries = await list();
    }
    assert.deepEqual(entries.map((e) => [e.name, e.kind, e.address, e.subscribers]), [
      ["cam", "publisher", "surfaceport.cam", 1],
      ["chan", "channel", "surfaceport.chan", undefined],
    ]);
    // An entry whose name no longer resolves (its task died) is left out.
    await Deno.writeTextFile(
      `${path}/999-ghost.json`,
      JSON.stringify({ name: "ghost", kind: "publisher", pid: 999, address: "surfaceport.ghost" }),
    );
    assert.equal((await list()).some((e) => e.name === "ghost"), false);
    subscription.close();
    publisher.close();
    w.as(w.B, () => listener.close());
    assert.deepEqual(await list(), []);
  } finally {
    setRegistryForTesting(undefined);
    await Deno.remove(path, { recursive: true });
  }
  await assertNoLeaksSettled(w);
});

Deno.test("registry: a fake task's uid never gets a registry directory from this process", () => {
  using w = world();
  const exists = (path: string) => {
    try {
      Deno.lstatSync(path);
      return true;
    } catch {
      return false;
    }
  };
  // A uid that is not this process's and has no directory yet (the world's 501 may be either,
  // e.g. on a Mac), so that a directory made for it can only come from this listen.
  let uid = 501;
  while (uid === libc().geteuid() || exists(`/tmp/surfaceport-${uid}`)) uid++;
  const path = `/tmp/surfaceport-${uid}`;
  try {
    w.as(task(w, 303, uid), () => listen("registry-probe").close());
    assert.equal(exists(path), false, `${path} was left behind for a uid this process is not`);
  } finally {
    if (exists(path)) Deno.removeSync(path, { recursive: true }); // made by a broken registry
  }
});
