import assert from "node:assert/strict";
import { listen, Surface, SurfacePool } from "../mod.ts";
import { backingOf } from "../src/surface/surface.ts";
import { InotifyReleaseWatcher } from "../src/linux/surface.ts";
import { fdTargets, openFds, pair, settleRuntimeFds, spawnPeer, uniqueName } from "./helpers.ts";

const linux = Deno.build.os === "linux";

/** Resolves to how long `watcher.wait` took, in ms (bounded by `ms`). */
async function timeWait(watcher: InotifyReleaseWatcher, ms: number): Promise<number> {
  const started = performance.now();
  await watcher.wait(started + ms, new AbortController().signal);
  return performance.now() - started;
}

Deno.test({
  name: "release watch: closing the last holder of a surface wakes the watcher; sending does not",
  ignore: !linux,
  async fn() {
    await settleRuntimeFds();
    const baseline = openFds();
    {
      using p = await pair();
      using surface = Surface.create({ width: 64, height: 64 });
      const watcher = InotifyReleaseWatcher.create()!;
      try {
        watcher.watch(backingOf(surface, "test"));
        // Quiet: no release happens, so the wait runs to its deadline.
        assert.ok(await timeWait(watcher, 60) >= 55, "no event without a release");
        await p.client.send(surface); // parks a locked description in the socket queue: no event
        assert.ok(await timeWait(watcher, 60) >= 55, "sending is not a release");
        const frame = await p.server.receive({ timeout: 1000 });
        assert.equal(surface.inUse, true);
        setTimeout(() => frame.close(), 30);
        const took = await timeWait(watcher, 5000);
        assert.ok(took < 1000, `the frame's close woke the watcher (${took.toFixed(1)} ms)`);
        assert.equal(surface.inUse, false);
      } finally {
        watcher.close();
      }
    }
    assert.deepEqual(fdTargets(baseline), [], "the watcher's descriptor is closed");
  },
});

Deno.test({
  name: "release watch: a holder killed with SIGKILL wakes the watcher",
  ignore: !linux,
  async fn() {
    const name = uniqueName("watchkill");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["hold", name]);
    using channel = await listener.accept({ timeout: 20000 });
    using surface = Surface.create({ width: 64, height: 64 });
    const watcher = InotifyReleaseWatcher.create()!;
    try {
      watcher.watch(backingOf(surface, "test"));
      await channel.send(surface);
      await peer.line(/^got /);
      assert.ok(await timeWait(watcher, 60) >= 55, "held: no event");
      setTimeout(() => peer.process.kill("SIGKILL"), 20);
      const took = await timeWait(watcher, 5000);
      assert.ok(took < 2000, `the holder's death woke the watcher (${took.toFixed(1)} ms)`);
      await peer.process.status;
      assert.equal(surface.inUse, false);
    } finally {
      watcher.close();
    }
  },
});

Deno.test({
  name: "pool: a parked acquire wakes on a release event and lends the released surface",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using pool = new SurfacePool({ width: 64, height: 64, maxSurfaces: 1 });
    const a = await pool.acquire();
    const id = a.id;
    await p.client.send(a);
    a.close(); // back here, but held by the frame below
    const frame = await p.server.receive({ timeout: 1000 });
    const controller = new AbortController();
    const aborted = pool.acquire({ signal: controller.signal });
    setTimeout(() => controller.abort(new Error("stop")), 30);
    await assert.rejects(aborted, /stop/, "a parked acquire honours its signal");
    const waiting = pool.acquire({ timeout: 5000 });
    setTimeout(() => frame.close(), 40);
    const again = await waiting;
    assert.equal(again.id, id);
    again.close();
  },
});
