/**
 * publish / subscribe across processes (Linux): the publisher runs here or
 * in a child, subscribers in children (`tests/peers/pubsub_peer.ts`). Every
 * child is killed and awaited (`await using`), every wait is bounded.
 */
import assert from "node:assert/strict";
import {
  connect,
  list,
  PoolExhaustedError,
  publish,
  type Publisher,
  subscribe,
  Surface,
  SurfacePool,
  SystemCallError,
  TimeoutError,
} from "../mod.ts";
import { libc } from "../ffi/linux.ts";
import { setRegistryForTesting } from "../src/channel/registry.ts";
import { type Child, sleep, spawnPeer, uniqueName, waitUntil } from "./helpers.ts";

const ignore = Deno.build.os !== "linux";

function peer(...args: string[]): Child {
  return spawnPeer("pubsub_peer.ts", args);
}

/** Fills the whole surface with `fill` and publishes it with `{ fill }`. */
/**
 * Runs `body` with a publisher and one `stall` peer subscribed to it in
 * `mode`, which blocks after its first frame until `flag` exists; the flag
 * is removed afterwards whatever happens.
 */
async function withStalledSubscriber(
  prefix: string,
  mode: "latest" | "queue",
  body: (publisher: Publisher, stalled: Child, flag: string) => Promise<void>,
): Promise<void> {
  const name = uniqueName(prefix);
  const flag = await Deno.makeTempFile({ prefix: "surfaceport-flag-" });
  await Deno.remove(flag);
  try {
    using publisher = publish(name);
    await using stalled = peer("stall", name, mode, flag);
    await stalled.line("subscribed");
    await waitUntil(
      () => publisher.subscribers[0]?.state === "subscribed",
      10000,
      "the subscriber",
    );
    await body(publisher, stalled, flag);
  } finally {
    await Deno.remove(flag).catch(() => {});
  }
}

function frameSurface(width = 64, height = 16): Surface {
  return Surface.create({ width, height });
}

Deno.test({
  name: "pubsub: three subscriber processes get the same frames, same surface, same sequence",
  ignore,
  async fn() {
    const name = uniqueName("ps3");
    using publisher = publish(name);
    // A pool, as a producer would: a surface is rewritten only once no subscriber holds it.
    using pool = new SurfacePool({ width: 64, height: 16, maxSurfaces: 6 });
    const count = 12;
    await using a = peer("sub", name, "queue", "1", String(count));
    await using b = peer("sub", name, "queue", "2", String(count));
    await using c = peer("sub", name, "queue", "1", String(count));
    for (const child of [a, b, c]) await child.line("subscribed");
    await waitUntil(
      () =>
        publisher.subscribers.length === 3 &&
        publisher.subscribers.every((s) => s.state === "subscribed"),
      10000,
      "three subscribers",
    );
    assert.deepEqual(publisher.subscribers.map((s) => s.policy), ["queue", "queue", "queue"]);
    const ids: number[] = [];
    for (let i = 0; i < count; i++) {
      using surface = await pool.acquire({ timeout: 20000 });
      surface.bytes().fill(i);
      ids.push(surface.id);
      await publisher.send(surface, { fill: i }, { timeout: 20000 });
    }
    for (const child of [a, b, c]) {
      for (let i = 0; i < count; i++) {
        assert.equal(await child.line(/^frame/), `frame ${i} ${ids[i]} true`);
      }
      await child.line("done");
    }
    for (const info of publisher.subscribers) assert.equal(info.dropped, 0);
  },
});

Deno.test({
  name:
    "pubsub: a stalled 'latest' subscriber never slows the publisher, then gets the newest frame",
  ignore,
  async fn() {
    await withStalledSubscriber("psl", "latest", async (publisher, stalled, flag) => {
      using surface = frameSurface();
      surface.bytes().fill(0);
      await publisher.send(surface, { fill: 0 });
      assert.equal(await stalled.line(/^first/), "first 0");
      // The subscriber's thread is now blocked until the flag exists: every send must
      // complete anyway (it could never complete if it waited for that subscriber).
      const frames = 300;
      for (let i = 1; i <= frames; i++) {
        surface.bytes().fill(i & 0xff);
        await publisher.send(surface, { fill: i & 0xff }, { timeout: 10000 });
      }
      const [info] = publisher.subscribers;
      assert.equal(info.dropped >= frames - 2, true, `dropped ${info.dropped}`);
      assert.equal(info.waiting, 1); // only the newest frame is held for it
      await Deno.writeTextFile(flag, "go");
      const last = frames & 0xff;
      // The newest frame, not the one after the frame it read last.
      assert.equal(await stalled.line(/^after/), `after ${frames} ${last} true`);
      assert.equal((await stalled.exit()).code, 0, stalled.stderr);
    });
  },
});

Deno.test({
  name: "pubsub: a stalled 'queue' subscriber back-pressures the publisher, and loses nothing",
  ignore,
  async fn() {
    await withStalledSubscriber("psq", "queue", async (publisher, stalled, flag) => {
      using surface = frameSurface();
      surface.bytes().fill(7);
      await publisher.send(surface, { fill: 7 });
      assert.equal(await stalled.line(/^first/), "first 0");
      // Depth 1 is in flight and the subscriber does not ask for more: send waits.
      surface.bytes().fill(8);
      await assert.rejects(
        publisher.send(surface, { fill: 8 }, { timeout: 300 }),
        TimeoutError,
      );
      assert.equal(publisher.subscribers[0].waiting, 0); // withdrawn after the timeout
      let handed = false;
      surface.bytes().fill(9);
      const next = publisher.send(surface, { fill: 9 }, { timeout: 20000 }).then(() => {
        handed = true;
      });
      await sleep(200);
      assert.equal(handed, false, "send resolved while the queue subscriber was stalled");
      await Deno.writeTextFile(flag, "go");
      await next;
      // Sequence 1 was withdrawn by the timed-out send: the subscriber sees the gap.
      assert.equal(await stalled.line(/^after/), "after 2 9 true");
      assert.equal((await stalled.exit()).code, 0, stalled.stderr);
    });
  },
});

Deno.test({
  name: "pubsub: a late subscriber gets the most recent frame at once",
  ignore,
  async fn() {
    const name = uniqueName("pslate");
    using publisher = publish(name);
    using surface = frameSurface();
    for (let i = 0; i < 5; i++) {
      surface.bytes().fill(40 + i);
      await publisher.send(surface, { fill: 40 + i });
    }
    await using late = peer("sub", name, "latest", "1", "1");
    assert.equal(await late.line(/^frame/), `frame 4 ${surface.id} true`);
    await late.line("done");
  },
});

Deno.test({
  name: "pubsub: a pool reuses a published surface only after every subscriber let go, " +
    "and after a SIGKILLed one",
  ignore,
  async fn() {
    const name = uniqueName("pspool");
    using publisher = publish(name, { keepLast: false });
    using pool = new SurfacePool({ width: 64, height: 16, maxSurfaces: 1 });
    await using one = peer("hold", name);
    await using two = peer("hold", name);
    await using killed = peer("hold", name);
    await waitUntil(
      () =>
        publisher.subscribers.length === 3 &&
        publisher.subscribers.every((s) => s.state === "subscribed"),
      10000,
      "three subscribers",
    );
    let id: number;
    {
      using surface = await pool.acquire({ timeout: 1000 });
      id = surface.id;
      await publisher.send(surface, { fill: 0 });
    }
    for (const child of [one, two, killed]) {
      assert.match(await child.line(/^holding/), new RegExp(`^holding 0 ${id}$`));
    }
    const busy = () =>
      assert.rejects(pool.acquire({ timeout: 150 }), PoolExhaustedError, "reused too early");
    await busy();
    await one.send("close");
    await one.line("closed");
    await busy();
    await two.send("close");
    await two.line("closed");
    await busy(); // the third one still holds it
    killed.process.kill("SIGKILL");
    await killed.process.status;
    using again = await pool.acquire({ timeout: 5000 });
    assert.equal(again.id, id);
  },
});

Deno.test({
  name: "pubsub: with keepLast (default) the last frame stays in use until the next one",
  ignore,
  async fn() {
    const name = uniqueName("pskeep");
    using publisher = publish(name);
    using pool = new SurfacePool({ width: 64, height: 16, maxSurfaces: 2 });
    let firstId: number;
    {
      using first = await pool.acquire({ timeout: 1000 });
      firstId = first.id;
      await publisher.send(first, { fill: 0 });
    }
    {
      using second = await pool.acquire({ timeout: 1000 });
      assert.notEqual(second.id, firstId); // the first is kept for late subscribers
      await publisher.send(second, { fill: 0 }); // now the first is released
    }
    using third = await pool.acquire({ timeout: 1000 });
    assert.equal(third.id, firstId);
  },
});

Deno.test({
  name: "pubsub: a reconnecting subscription survives its publisher being killed and restarted",
  ignore,
  async fn() {
    const name = uniqueName("psre");
    await using first = peer("pub", name, "1");
    const firstPid = Number((await first.line(/^publishing/)).split(" ")[1]);
    using subscription = await subscribe<{ gen: number; i: number }>(name, {
      reconnect: true,
      timeout: 10000,
    });
    {
      using frame = await subscription.receive({ timeout: 10000 });
      assert.equal(frame.meta?.gen, 1);
      assert.equal(subscription.publisher?.pid, firstPid);
    }
    first.process.kill("SIGKILL");
    await first.process.status;
    await using second = peer("pub", name, "2");
    const secondPid = Number((await second.line(/^publishing/)).split(" ")[1]);
    for (;;) {
      using frame = await subscription.receive({ timeout: 15000 });
      if (frame.meta?.gen === 2) break; // frames of the first generation may still be queued
    }
    assert.equal(subscription.publisher?.pid, secondPid);
    assert.equal(subscription.stats.reconnects, 1);
    // Without reconnect, the same restart ends the subscription.
    using plain = await subscribe(name, { timeout: 10000 });
    (await plain.receive({ timeout: 10000 })).close();
    second.process.kill("SIGKILL");
    await second.process.status;
    const rest = async () => {
      for await (const frame of plain) frame.close();
    };
    await rest(); // ends (PeerClosedError) instead of hanging
  },
});

Deno.test({
  name:
    "connect with a timeout succeeds when the listener starts 1 s later; without, fails at once",
  ignore,
  async fn() {
    const name = uniqueName("late");
    await assert.rejects(
      connect(name),
      (e: unknown) => e instanceof SystemCallError && e.errnoName === "ECONNREFUSED",
    );
    await using later = peer("listen-later", name, "1000");
    const start = performance.now();
    using channel = await connect(name, { timeout: 15000 });
    assert.equal(performance.now() - start >= 500, true, "connected before the listener started?");
    await later.line("listening");
    assert.equal(await later.line(/^accepted/), `accepted ${Deno.pid}`);
    assert.equal(channel.peer.pid, later.process.pid);
    // And a timeout that runs out names the name.
    await assert.rejects(connect(uniqueName("never"), { timeout: 200 }), TimeoutError);
  },
});

Deno.test({
  name: "subscribe with a timeout waits for the publisher to appear",
  ignore,
  async fn() {
    const name = uniqueName("sublate");
    await assert.rejects(subscribe(name), SystemCallError);
    const subscribing = subscribe(name, { timeout: 15000 });
    await sleep(300);
    await using publisher = peer("pub", name, "3");
    await publisher.line(/^publishing/);
    using subscription = await subscribing;
    using frame = await subscription.receive({ timeout: 10000 });
    assert.equal((frame.meta as { gen: number }).gen, 3);
  },
});

Deno.test({
  name: "list() shows a publisher of another process, and stops showing it once it is killed",
  ignore,
  async fn() {
    const name = uniqueName("pslist");
    await using child = peer("pub", name, "1");
    const pid = Number((await child.line(/^publishing/)).split(" ")[1]);
    const entry = (await list()).find((e) => e.name === name);
    assert.deepEqual(entry, {
      name,
      kind: "publisher",
      pid,
      address: `@surfaceport/${name}`,
      subscribers: 0,
    });
    using subscription = await subscribe(name, { timeout: 5000 });
    (await subscription.receive({ timeout: 5000 })).close();
    let seen: number | undefined;
    for (let i = 0; i < 250 && seen !== 1; i++) {
      seen = (await list()).find((e) => e.name === name)?.subscribers;
      if (seen !== 1) await sleep(20);
    }
    assert.equal(seen, 1);
    child.process.kill("SIGKILL");
    await child.process.status;
    assert.equal((await list()).find((e) => e.name === name), undefined);
    // The stale entry is gone from the registry too.
    const runtime = Deno.env.get("XDG_RUNTIME_DIR");
    for (const dir of [`/tmp/surfaceport-${libc().geteuid()}`, `${runtime}/surfaceport`]) {
      if (dir.startsWith("undefined/") || !(await Deno.lstat(dir).catch(() => false))) continue;
      const files = [...Deno.readDirSync(dir)].map((f) => f.name);
      assert.equal(files.some((f) => f.startsWith(`${pid}-`)), false);
    }
  },
});

Deno.test({
  name: "list() removes an entry's .tmp abandoned by a process killed mid-write, not a fresh one",
  ignore,
  async fn() {
    const path = await Deno.makeTempDir({ prefix: "surfaceport-registry-" });
    await Deno.chmod(path, 0o700);
    setRegistryForTesting({ path, uid: libc().geteuid() });
    try {
      const abandoned = `${path}/999999-cam.json.tmp`;
      const fresh = `${path}/999998-cam.json.tmp`;
      Deno.writeTextFileSync(abandoned, "");
      Deno.writeTextFileSync(fresh, "{");
      const anHourAgo = new Date(Date.now() - 3_600_000);
      Deno.utimeSync(abandoned, anHourAgo, anHourAgo);
      assert.deepEqual(await list(), []);
      const names = [...Deno.readDirSync(path)].map((entry) => entry.name);
      assert.deepEqual(names, ["999998-cam.json.tmp"], "only the one being written is left");
    } finally {
      setRegistryForTesting(undefined);
      await Deno.remove(path, { recursive: true });
    }
  },
});

Deno.test({
  name: "list() shows listeners of this process until they close",
  ignore,
  async fn() {
    const name = uniqueName("lslisten");
    const listener = (await import("../mod.ts")).listen(name);
    const entry = (await list()).find((e) => e.name === name);
    assert.equal(entry?.kind, "channel");
    assert.equal(entry?.pid, Deno.pid);
    listener.close();
    assert.equal((await list()).find((e) => e.name === name), undefined);
  },
});

Deno.test({
  name: "pubsub: a plain connect() peer that sends no SUBSCRIBE still gets frames",
  ignore,
  async fn() {
    const name = uniqueName("psplain");
    using publisher = publish(name);
    using surface = frameSurface();
    surface.bytes().fill(3);
    await publisher.send(surface, { fill: 3 });
    using channel = await connect(name, { timeout: 5000 });
    using frame = await channel.receive({ timeout: 5000 }); // after the grace period
    assert.equal(frame.sequence, 0);
    assert.equal(publisher.subscribers[0].state, "plain");
    await publisher.send(surface, { fill: 3 });
    (await channel.receive({ timeout: 5000 })).close();
  },
});

Deno.test({
  name: "pubsub: a subscriber that breaks the control protocol is disconnected; others go on",
  ignore,
  async fn() {
    const { backend } = await import("../src/platform.ts");
    const { encodeCredit, encodeSubscribe } = await import("../src/wire/pubsub_wire.ts");
    const name = uniqueName("pshostile");
    using publisher = publish(name);
    using good = await subscribe(name, { timeout: 5000 });
    const limits = {
      maxSurfaceBytes: 1 << 30,
      maxMetaBytes: 65536,
      mappingCacheSize: 0,
      spinMicros: 0,
    };
    const depthZero = encodeSubscribe("latest", 1);
    new DataView(depthZero.buffer).setUint32(12, 0, true);
    const unknownPolicy = encodeSubscribe("latest", 1);
    new DataView(unknownPolicy.buffer).setUint16(10, 9, true);
    const wrongType = encodeSubscribe("latest", 1);
    new DataView(wrongType.buffer).setUint16(6, 1, true);
    const cases: [string, Uint8Array[]][] = [
      ["depth 0", [depthZero]],
      ["unknown policy", [unknownPolicy]],
      ["a surface type with no fd", [wrongType]],
      ["CREDIT before SUBSCRIBE", [encodeCredit(1)]],
      ["a second SUBSCRIBE", [encodeSubscribe("queue", 1), encodeSubscribe("queue", 1)]],
      ["a short message", [new Uint8Array([0x53, 0x50, 0x52, 0x54])]],
    ];
    using surface = frameSurface();
    for (const [what, messages] of cases) {
      const connection = await backend().connect(
        name,
        () => true,
        limits,
        performance.now() + 5000,
      );
      try {
        for (const message of messages) {
          await connection.sendControl(message, performance.now() + 5000);
        }
        // The publisher hangs up on it: its receive ends (maybe after the last frame).
        await assert.rejects(
          (async () => {
            for (;;) (await connection.receive(performance.now() + 5000)).surface.release();
          })(),
          (e: unknown) => e instanceof Error && e.name !== "TimeoutError",
          what,
        );
      } finally {
        connection.close();
      }
      await waitUntil(() => publisher.subscribers.length === 1, 5000, `${what}: dropped`);
      await publisher.send(surface, { fill: 0 });
      (await good.receive({ timeout: 5000 })).close();
    }
  },
});

Deno.test({
  name: "pubsub: a frame the publisher holds for a subscriber stays in use until a newer one " +
    "replaces it",
  ignore,
  async fn() {
    const name = uniqueName("psheld");
    using publisher = publish(name, { keepLast: false });
    using subscription = await subscribe(name, { timeout: 5000 });
    await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 5000, "SUBSCRIBE");
    using pool = new SurfacePool({ width: 64, height: 16, maxSurfaces: 3 });
    const sendOne = async () => {
      using surface = await pool.acquire({ timeout: 1000 });
      await publisher.send(surface);
      return surface.id;
    };
    const inFlight = await sendOne(); // the subscriber's one credit: in its socket now
    const held = await sendOne(); // no credit left: held by the publisher
    assert.equal(publisher.subscribers[0].waiting, 1);
    // Neither may be reused: the third surface is a new one.
    const third = await sendOne(); // replaces (releases) the held one
    assert.notEqual(third, inFlight);
    assert.notEqual(third, held);
    assert.equal(publisher.subscribers[0].dropped, 1);
    using again = await pool.acquire({ timeout: 1000 });
    assert.equal(again.id, held);
    subscription.close();
  },
});

Deno.test({
  name: "pubsub: a frame already waiting is returned at once (no promise layers, no thread hop); " +
    "frames and credits still flow in order",
  ignore,
  async fn() {
    const name = uniqueName("psfast");
    using publisher = publish(name, { keepLast: false });
    using subscription = await subscribe(name, { policy: "queue", depth: 4, timeout: 5000 });
    await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 5000, "subscribed");
    using surface = frameSurface();
    // Three frames a round with depth 4: the credit of a round's last frame goes out with the
    // next round's first receive, and the next three fit in the rest.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) await publisher.send(surface, { i }, { timeout: 5000 });
      const sent = 3 * (round + 1);
      await waitUntil(() => publisher.subscribers[0]?.sent === sent, 5000, "three frames sent");
      for (let i = 0; i < 3; i++) {
        const pending = subscription.receive({ timeout: 5000 });
        // The fast path returns a settled promise: it wins a race with one resolved a turn later.
        const first = await Promise.race([pending, Promise.resolve("not yet")]);
        assert.notEqual(first, "not yet", `frame ${i} of round ${round} took the slow path`);
        const frame = await pending;
        assert.deepEqual(frame.meta, { i });
        frame.close();
      }
    }
    assert.equal(subscription.stats.received, 9);
    assert.equal(subscription.stats.dropped, 0);
  },
});
