/**
 * What one GStreamer client can cost the to-gst bridge's other clients and
 * its producer: a client that never releases holds at most its budget (the
 * rest of the frames skip it) and is cut off after `stallTimeout`; a client
 * that stops reading is cut off at the send deadline instead of stalling
 * every other client; out of descriptors, the bridge refuses the waiting
 * client and keeps accepting.
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { PeerClosedError, PoolExhaustedError, Surface, SurfacePool } from "../mod.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import { connectUnixFd } from "../src/gst/socket.ts";
import type { UnixFdConnection } from "../src/gst/unixfd_connection.ts";
import { encodeRelease } from "../src/gst/protocol.ts";
import { Child, PEER_FLAGS, sleep, uniqueName, waitUntil } from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const linux = Deno.build.os === "linux";

/** A unixfdsrc stand-in that reads every message and releases every buffer at once. */
async function releasingClient(client: UnixFdConnection, counts: { frames: number }) {
  try {
    for (;;) {
      const message = await client.receive(performance.now() + 30_000);
      if (message.type !== "new-buffer") continue;
      for (const fd of message.fds) libc().close(fd);
      counts.frames++;
      await client.send(encodeRelease(message.buffer.id));
    }
  } catch {
    // closed
  }
}

/** A client that reads every message and keeps every buffer (never releases). */
async function hoardingClient(client: UnixFdConnection, held: number[]) {
  try {
    for (;;) {
      const message = await client.receive(performance.now() + 30_000);
      if (message.type === "new-buffer") held.push(...message.fds);
    }
  } catch {
    // cut off
  }
}

Deno.test({
  name:
    "to-gst: a client that never releases holds at most its budget, is cut off when stalled, and " +
    "never drains a producer pool sized from the budgets",
  ignore: !linux,
  async fn() {
    const name = uniqueName("gst-budget");
    // 1 s, not less: the releasing client runs in this process, and a loaded machine that gives
    // the process no CPU for longer than the stall timeout would stall it too.
    const bridge = GstSinkBridge.listen(`@${name}`, { stallTimeout: 1000 });
    const good = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const hoarder = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const held: number[] = [];
    const counts = { frames: 0 };
    // The hoarder's budget (2, still mapped by it after the cut-off), maxOutstanding (2) and the
    // one being painted: 5. Before the budget the hoarder alone took up to 8.
    const pool = new SurfacePool({ width: 64, height: 4, format: "BGRA", maxSurfaces: 5 });
    try {
      await waitUntil(() => bridge.stats.clients === 2, 2000, "two clients");
      const reading = [releasingClient(good, counts), hoardingClient(hoarder, held)];
      let exhausted = 0;
      // Until the hoarder is cut off (1 s after it filled its budget; meanwhile it holds
      // maxOutstanding and the frames are dropped), then 100 frames more for the other client.
      let sent = 0;
      let sentAfterCutOff = 0;
      for (; sent < 1000 && sentAfterCutOff < 100; sent++) {
        if (bridge.stats.cutOff > 0) sentAfterCutOff++;
        let surface: Surface;
        try {
          surface = await pool.acquire({ timeout: 1000 });
        } catch (error) {
          if (!(error instanceof PoolExhaustedError)) throw error;
          exhausted++;
          continue;
        }
        await bridge.send({ surface, close: () => surface.close() });
        await sleep(5);
      }
      assert.equal(exhausted, 0, "the producer's pool ran dry");
      assert.ok(held.length <= 2, `the hoarder got ${held.length} frames, its budget is 2`);
      assert.ok(bridge.stats.cutOff >= 1, "the stalled client was cut off");
      assert.equal(bridge.stats.clients, 1);
      assert.ok(
        counts.frames >= sentAfterCutOff / 2,
        `the releasing client got ${counts.frames} frames, ${sentAfterCutOff} were sent after the cut-off`,
      );
      bridge.close();
      await Promise.all(reading);
    } finally {
      for (const fd of held) libc().close(fd);
      good.close();
      hoarder.close();
      bridge.close();
      pool.close();
    }
  },
});

Deno.test({
  name: "to-gst: a client's stall is timed from when it filled its budget, not from its last " +
    "release: after a pause in the stream, the next frames cut no one off",
  ignore: !linux,
  async fn() {
    const name = uniqueName("gst-stall-clock");
    const bridge = GstSinkBridge.listen(`@${name}`, { stallTimeout: 300 });
    const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const pool = new SurfacePool({ width: 64, height: 4, format: "BGRA", maxSurfaces: 6 });
    const fds: number[] = [];
    const sendOne = async () => {
      const surface = await pool.acquire({ timeout: 1000 });
      await bridge.send({ surface, close: () => surface.close() });
    };
    try {
      await waitUntil(() => bridge.stats.clients === 1, 2000, "the client");
      await sendOne();
      let message;
      do message = await client.receive(performance.now() + 5000); while (
        message.type !== "new-buffer"
      );
      fds.push(...message.fds);
      await client.send(encodeRelease(message.buffer.id));
      await sleep(600); // the stream pauses: twice the stall timeout since that release
      // Back to back: the second fills the client's budget (2), the third finds it full. It has
      // been full for microseconds, not 600 ms: skipped, not cut off.
      await sendOne();
      await sendOne();
      await sendOne();
      assert.equal(bridge.stats.cutOff, 0, "a client was cut off for the pause before its budget");
      assert.equal(bridge.stats.clients, 1);
    } finally {
      for (const fd of fds) libc().close(fd);
      client.close();
      bridge.close();
      pool.close();
    }
  },
});

Deno.test({
  name: "to-gst: a client that stops reading is cut off at the send deadline and never stalls " +
    "the others",
  ignore: !linux,
  async fn() {
    const name = uniqueName("gst-deadline");
    // Only the send deadline may cut the deaf client off here, not its stalled budget.
    // (maxOutstanding above the deaf client's budget, so the other client's frames still flow.)
    const bridge = GstSinkBridge.listen(`@${name}`, {
      sendTimeout: 300,
      stallTimeout: 60_000,
      maxOutstanding: 4,
    });
    const good = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const deaf = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const counts = { frames: 0 };
    // Two geometries in turn: every frame is preceded by a CAPS message to every client, so
    // a client that reads nothing fills its socket whatever its frame budget.
    const surfaces = [
      Surface.create({ width: 64, height: 4 }),
      Surface.create({ width: 64, height: 8 }),
    ];
    try {
      await waitUntil(() => bridge.stats.clients === 2, 2000, "two clients");
      const reading = releasingClient(good, counts);
      const sendAll = async () => {
        for (let i = 0; i < 3000 && bridge.stats.clients === 2; i++) {
          await bridge.send({ surface: surfaces[i % 2], close: () => {} });
          await sleep(0); // the releasing client reads between frames
        }
        assert.equal(bridge.stats.clients, 1, "the deaf client was cut off");
        assert.ok(bridge.stats.cutOff >= 1);
        // The other client keeps getting frames.
        const before = counts.frames;
        for (let i = 0; i < 2000 && counts.frames < before + 20; i++) {
          await bridge.send({ surface: surfaces[i % 2], close: () => {} });
          await sleep(2);
        }
        assert.ok(
          counts.frames >= before + 20,
          `${counts.frames - before} frames after the cut-off`,
        );
      };
      // Before the deadline existed, a send to the deaf client never returned: bounded here.
      await within(
        sendAll(),
        30_000,
        "the sends (a deaf client stalls every send without a deadline)",
      );
      bridge.close();
      await reading;
    } finally {
      good.close();
      deaf.close();
      bridge.close();
      for (const surface of surfaces) surface.close();
    }
  },
});

Deno.test({
  name: "to-gst: out of descriptors the waiting client is refused and the bridge keeps accepting",
  ignore: !linux,
  async fn() {
    const name = uniqueName("gst-emfile");
    await using bridgeProcess = new Child(Deno.execPath(), [
      "run",
      ...PEER_FLAGS,
      new URL("./peers/gst_starved.ts", import.meta.url).pathname,
      name,
    ]);
    await bridgeProcess.line(/^full \d+$/, 30_000);
    {
      const refused = await connectUnixFd(`@${name}`, () => true, performance.now() + 5000);
      try {
        await assert.rejects(refused.receive(performance.now() + 10_000), PeerClosedError);
      } finally {
        refused.close();
      }
    }
    await bridgeProcess.send("free");
    await bridgeProcess.line("freed");
    const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 5000);
    try {
      for (;;) {
        const message = await client.receive(performance.now() + 10_000);
        if (message.type !== "new-buffer") continue;
        for (const fd of message.fds) libc().close(fd);
        break;
      }
    } finally {
      client.close();
    }
  },
});
