import assert from "node:assert/strict";
import {
  type Channel,
  ClosedError,
  listen,
  PoolExhaustedError,
  Surface,
  SurfacePool,
} from "../mod.ts";
import { assertNoFdLeak, sleep, spawnPeer, uniqueName, waitUntil } from "./helpers.ts";

const linux = Deno.build.os === "linux";

/** Spawns a `hold` peer connected to a fresh listener; returns both ends. */
async function holdingPeer() {
  const name = uniqueName("hold");
  const listener = listen(name);
  const peer = spawnPeer("peer.ts", ["hold", name]);
  const channel = await listener.accept({ timeout: 20000 });
  return {
    peer,
    channel,
    async [Symbol.asyncDispose]() {
      channel.close();
      listener.close();
      await peer[Symbol.asyncDispose]();
    },
  };
}

async function sendAndConfirm(
  channel: Channel,
  peer: { line(p: RegExp | string): Promise<string> },
  surface: Surface,
) {
  await channel.send(surface);
  const line = await peer.line(/^got /);
  const [, sequence, id] = line.split(" ");
  assert.equal(Number(id), surface.id);
  return Number(sequence);
}

Deno.test({
  name: "pool: a surface held by another process is not reused until that process closes it",
  ignore: !linux,
  async fn() {
    await using h = await holdingPeer();
    using pool = new SurfacePool({ width: 320, height: 240, maxSurfaces: 3 });
    const a = await pool.acquire();
    const idA = a.id;
    const seqA = await sendAndConfirm(h.channel, h.peer, a);
    a.close(); // back to the pool here, but the peer still holds it
    assert.equal(pool.stats.inUseElsewhere, 1);
    const b = await pool.acquire();
    assert.notEqual(b.id, idA, "A is still held by the consumer");
    b.close();
    // b is idle and free: the pool hands b out again, never A.
    for (let i = 0; i < 5; i++) {
      const s = pool.tryAcquire()!;
      assert.notEqual(s.id, idA);
      s.close();
    }
    await h.peer.send(`close ${seqA}`);
    await h.peer.line(`closed ${seqA}`);
    await waitUntil(() => pool.stats.inUseElsewhere === 0, 2000, "the consumer's release");
    // A comes back into rotation: take all free surfaces and find it among them.
    const taken = [pool.tryAcquire()!, pool.tryAcquire()!];
    assert.ok(taken.some((s) => s.id === idA), "A is reused once the consumer let go");
    taken.forEach((s) => s.close());
    assert.deepEqual(pool.stats, { allocated: 2, idle: 2, inUseHere: 0, inUseElsewhere: 0 });
  },
});

Deno.test({
  name: "pool: a consumer killed with SIGKILL while holding a surface releases it",
  ignore: !linux,
  async fn() {
    await using h = await holdingPeer();
    using pool = new SurfacePool({ width: 64, height: 64, maxSurfaces: 1 });
    const a = await pool.acquire();
    const idA = a.id;
    await sendAndConfirm(h.channel, h.peer, a);
    a.close();
    assert.equal(pool.tryAcquire(), undefined, "the only surface is held elsewhere");
    await assert.rejects(pool.acquire({ timeout: 50 }), PoolExhaustedError);
    h.peer.process.kill("SIGKILL");
    await h.peer.process.status;
    const again = await pool.acquire({ timeout: 2000 });
    assert.equal(again.id, idA, "the kernel released the dead consumer's hold");
    again.close();
  },
});

Deno.test({
  name: "pool: a frame still queued in the socket counts as a use",
  ignore: !linux,
  async fn() {
    const name = uniqueName("queued");
    using listener = listen(name);
    const { connect } = await import("../mod.ts");
    const acceptedP = listener.accept();
    using producer = await connect(name);
    using consumer = await acceptedP;
    using pool = new SurfacePool({ width: 64, height: 64, maxSurfaces: 2 });
    const a = await pool.acquire();
    await producer.send(a);
    a.close();
    assert.equal(pool.stats.inUseElsewhere, 1, "unread message holds A");
    const frame = await consumer.receive({ timeout: 1000 });
    assert.equal(pool.stats.inUseElsewhere, 1, "the open frame holds A");
    frame.close();
    assert.equal(pool.stats.inUseElsewhere, 0);
  },
});

Deno.test({
  name: "pool: acquire waits for a release, honours timeout and signal, and fails typed",
  ignore: !linux,
  async fn() {
    using pool = new SurfacePool({ width: 16, height: 16, maxSurfaces: 2 });
    const a = pool.tryAcquire()!;
    const b = pool.tryAcquire()!;
    assert.equal(pool.tryAcquire(), undefined);
    assert.deepEqual(pool.stats, { allocated: 2, idle: 0, inUseHere: 2, inUseElsewhere: 0 });
    const started = performance.now();
    await assert.rejects(pool.acquire({ timeout: 60 }), (e: unknown) => {
      assert.ok(e instanceof PoolExhaustedError);
      assert.match(e.message, /2 handed out by acquire\(\) in this process/);
      return true;
    });
    assert.ok(performance.now() - started >= 55);
    const controller = new AbortController();
    const aborted = pool.acquire({ signal: controller.signal });
    controller.abort(new Error("cancelled"));
    await assert.rejects(aborted, /cancelled/);
    const waiting = pool.acquire({ timeout: 5000 });
    setTimeout(() => a.close(), 20);
    const c = await waiting;
    assert.equal(c.id, a.id, "a local close wakes the waiter");
    await assert.rejects(pool.acquire({ timeout: -1 }), RangeError);
    c.close();
    b.close();
    assert.throws(() => new SurfacePool({ width: 16, height: 16, maxSurfaces: 0 }), RangeError);
    assert.throws(() => new SurfacePool({ width: 15, height: 16, format: "420v" }), RangeError);
  },
});

Deno.test({
  name: "pool: views outlive a lend but never the memory; close() with surfaces out; no fd leaks",
  ignore: !linux,
  async fn() {
    await assertNoFdLeak(async () => {
      const pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 2 });
      const a = pool.tryAcquire()!;
      const view = a.bytes();
      view.fill(5);
      a.close();
      // Documented: a view kept past close() of a pooled surface still shows
      // the pool's memory (one buffer per mapping, not per lend).
      assert.equal(view.length, a.allocSize);
      const again = pool.tryAcquire()!;
      assert.equal(again.id, a.id);
      assert.equal(again.bytes()[0], 5, "same memory");
      assert.equal(again.bytes().buffer, view.buffer, "one buffer per mapping");
      pool.close();
      assert.throws(() => pool.tryAcquire(), ClosedError);
      await assert.rejects(pool.acquire(), ClosedError);
      assert.equal(again.bytes()[0], 5, "a surface handed out stays valid after pool.close()");
      again.close(); // released now, since the pool is closed
      assert.equal(view.length, 0, "unmapping the memory detached every view of it");
      pool.close();
    });
  },
});

Deno.test({
  name: "pool: randomized consumers never see a surface reused while they hold it",
  ignore: !linux,
  async fn() {
    const consumers = 3;
    const frames = 300;
    const name = uniqueName("random");
    using listener = listen(name);
    const peers = Array.from(
      { length: consumers },
      (_, i) => spawnPeer("peer.ts", ["random", name, String(i + 7)]),
    );
    try {
      const channels: Channel[] = [];
      for (let i = 0; i < consumers; i++) channels.push(await listener.accept({ timeout: 20000 }));
      using pool = new SurfacePool({ width: 128, height: 64, maxSurfaces: 6 });
      const ids = new Set<number>();
      for (let i = 0; i < frames; i++) {
        const surface = await pool.acquire({ timeout: 10000 });
        ids.add(surface.id);
        // The producer scribbles over the stamp area: if a consumer still held
        // this surface, it will see its pid overwritten when it checks.
        new DataView(surface.bytes().buffer, surface.bytes().byteOffset, 8).setUint32(
          0,
          0xdeadbeef,
          true,
        );
        await channels[i % consumers].send(surface);
        surface.close();
        if (i % 17 === 0) await sleep(1);
      }
      using end = Surface.create({ width: 2, height: 2 });
      for (const channel of channels) await channel.send(end, { end: true });
      for (const peer of peers) {
        const line = await peer.line(/^done /);
        const [, count, corrupt] = line.split(" ");
        assert.equal(Number(corrupt), 0, `consumer saw its frame reused: ${line}\n${peer.stderr}`);
        assert.equal(Number(count), frames / consumers);
      }
      // Fails if the pool allocated past maxSurfaces instead of waiting for a release.
      assert.ok(ids.size <= pool.maxSurfaces, `${ids.size} distinct surfaces, max 6`);
      console.log(
        `pool needed ${ids.size} distinct surfaces for ${frames} frames to ${consumers} consumers`,
      );
      channels.forEach((c) => c.close());
    } finally {
      for (const peer of peers) await peer[Symbol.asyncDispose]();
    }
  },
});
