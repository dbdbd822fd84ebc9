/**
 * Steady-state allocation per frame of the GStreamer bridges (issue 20),
 * against real GStreamer 1.26 in its own process (the chroot of
 * scripts/gst-chroot.sh; skipped with the reason printed where it cannot be
 * built). Measured as tests/allocation_test.ts does: V8's cumulative
 * `total_allocated_bytes`, read only at the two edges of the measured batch
 * (in Deno 2.9 each reading itself allocates ~100 KB), after a long warm-up,
 * 64x64 BGRA so that the run stays seconds long. Library alone: the
 * from-gst sink hands each surface nowhere (a settled promise), the to-gst
 * frames come from four surfaces the test recycles.
 *
 * from-gst runs behind `videotestsrc ! queue ! unixfdsink sync=false` flat
 * out; to-gst serves `unixfdsrc ! fakesink sync=false`, at most two frames
 * out. The bounds and what the numbers hold are at the constants below.
 * Before this test, on main at 7522237: from-gst 12.5 KB per frame, to-gst
 * 13.7 KB; and without the queue the bridge deadlocked with the sink after
 * 1-10k frames (it waited for each RELEASE_BUFFER to be written while the
 * sink, blocked writing NEW_BUFFER under the lock its release reader needs,
 * read none): the last test here, which stalled at 1,076 buffers there.
 *
 * @module
 */

import assert from "node:assert/strict";
import v8 from "node:v8";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { unixFdStats } from "../src/gst/socket.ts";
import { GstSinkBridge, type SurfaceFrame } from "../src/gst/to_gst.ts";
import { fstatxNumbers } from "../src/linux/libc.ts";
import { Surface } from "../src/surface/surface.ts";
import { GST, gstLaunch, within } from "./gst_helpers.ts";
import { uniqueName } from "./helpers.ts";

function allocatedBytes(): number {
  // Cumulative since start, not reset by collections (absent from the node:v8 typings).
  return (v8.getHeapStatistics() as unknown as { total_allocated_bytes: number })
    .total_allocated_bytes;
}

const ignore = GST.root === undefined;
const WARMUP = 10_000;
const FRAMES = 10_000;
/**
 * from-gst bytes per frame, parked receives included: measured 600-1450 B
 * (main at 7522237: 12.5 KB). What remains: the surface adopted per frame
 * (a Surface, its backing, a finalizer registration: ~400 B), the meta
 * object, the run loop's awaits, and the parks on the shared poll when
 * GStreamer's next buffer is not there yet.
 */
const FROM_GST_LIMIT = 2048;
/**
 * What a memfd GStreamer makes during the window may add (verified, mapped,
 * an older one evicted: measured ~3.9 KB; the test's own Set entry).
 * GStreamer's pools do that unpredictably flat out (0-956 in 10,000 frames).
 */
const NEW_MEMFD_ALLOWANCE = 8 * 1024;
/**
 * to-gst bytes per frame: measured 2.8-3.2 KB (main at 7522237: 12.5-13.7
 * KB), most of it the one park per frame on the shared poll that waits for
 * the client's RELEASE_BUFFER (`src/linux/poller.ts`: its round, waiter
 * and nonblocking FFI call, ~2.5 KB), then `send`'s own promise and the
 * test's wait for a release.
 */
const TO_GST_LIMIT = 4096;

Deno.test({
  name: `gst allocation: from-gst allocates < ${FROM_GST_LIMIT} B per frame in the steady state`,
  ignore,
  async fn() {
    const socket = uniqueName("gstalloc");
    await using _gst = gstLaunch([
      "videotestsrc",
      `num-buffers=${WARMUP + FRAMES + 20}`,
      "pattern=black",
      "!",
      "video/x-raw,format=BGRA,width=64,height=64",
      "!",
      // Without the queue, videotestsrc's pool kept growing (a new memfd every few buffers, each
      // verified and mapped); behind it the pool levels off at a few hundred memfds.
      "queue",
      "max-size-buffers=1",
      "!",
      "unixfdsink",
      `socket-path=${socket}`,
      "socket-type=abstract",
      "wait-for-connection=true",
      "sync=false",
    ]);
    const bridge = await GstSourceBridge.connect(`@${socket}`, { timeout: 10_000 });
    try {
      let frames = 0;
      let before = 0;
      let after = 0;
      // GStreamer's memfds by inode: one first seen in the window is mapped then, and allowed for.
      const memfds = new Set<number>();
      let newMemfds = 0;
      let waitsBefore = 0;
      let waits = 0;
      const settled = Promise.resolve();
      const sink = {
        send(surface: Surface): Promise<void> {
          frames++;
          const handle = surface.unsafeHandle;
          const inode = handle.kind === "memfd" ? fstatxNumbers(handle.fd).ino : -1;
          if (!memfds.has(inode)) {
            memfds.add(inode);
            if (frames > WARMUP && frames <= WARMUP + FRAMES) newMemfds++;
          }
          if (frames === WARMUP) {
            before = allocatedBytes();
            waitsBefore = unixFdStats.receiveWaits;
          } else if (frames === WARMUP + FRAMES) {
            after = allocatedBytes();
            waits = unixFdStats.receiveWaits - waitsBefore;
          }
          return settled;
        },
      };
      await within(bridge.run(sink), 60_000, "from-gst to forward every frame and end at EOS");
      assert.equal(frames, WARMUP + FRAMES + 20, "every buffer was forwarded");
      const perFrame = (after - before) / FRAMES;
      const limit = FROM_GST_LIMIT + newMemfds * NEW_MEMFD_ALLOWANCE / FRAMES;
      console.log(
        `  from-gst: ${perFrame.toFixed(0)} B per frame (${newMemfds} new memfds in the window, ` +
          `${memfds.size} in all; ${waits} parked receives; limit ${limit.toFixed(0)} B)`,
      );
      assert.ok(perFrame < limit, `${perFrame.toFixed(0)} B per frame, limit ${limit.toFixed(0)}`);
    } finally {
      bridge.close();
    }
  },
});

Deno.test({
  name: `gst allocation: to-gst allocates < ${TO_GST_LIMIT} B per frame in the steady state`,
  ignore,
  async fn() {
    const socket = uniqueName("gstalloc");
    let released = 0;
    let wake: (() => void) | undefined;
    using bridge = GstSinkBridge.listen(`@${socket}`, {
      onReleased: () => {
        released++;
        wake?.();
      },
    });
    await using _gst = gstLaunch([
      "unixfdsrc",
      `socket-path=${socket}`,
      "socket-type=abstract",
      "!",
      "fakesink",
      "sync=false",
    ]);
    await bridge.waitForClient(10_000);
    const surfaces = [0, 1, 2, 3].map(() => Surface.create({ width: 64, height: 64 }));
    try {
      const frames: SurfaceFrame[] = surfaces.map((surface) => ({ surface, close() {} }));
      let before = 0;
      const serve = async () => {
        for (let i = 0; i < WARMUP + FRAMES; i++) {
          if (i === WARMUP) before = allocatedBytes();
          // At most two frames out (the bridge's default maxOutstanding): wait for a release.
          while (i - released >= 2) await new Promise<void>((resolve) => wake = resolve);
          await bridge.send(frames[i & 3]);
        }
      };
      await within(serve(), 60_000, "to-gst to serve every frame (GStreamer releasing them)");
      const perFrame = (allocatedBytes() - before) / FRAMES;
      console.log(`  to-gst: ${perFrame.toFixed(0)} B per frame (${bridge.stats.dropped} dropped)`);
      assert.ok(
        perFrame < TO_GST_LIMIT,
        `${perFrame.toFixed(0)} B per frame, limit ${TO_GST_LIMIT}`,
      );
    } finally {
      for (const surface of surfaces) surface.close();
    }
  },
});

Deno.test({
  name: "gst allocation: from-gst forwards 20,000 buffers of a unixfdsink flat out (a release " +
    "never waits for the sink)",
  ignore,
  async fn() {
    // No queue: the sink writes NEW_BUFFER from the streaming thread, under the lock its release
    // reader needs. A bridge that stopped reading until its RELEASE_BUFFER was written deadlocked
    // with it after 1,000-10,000 buffers (both sockets full, each side waiting to write).
    const buffers = 20_000;
    const socket = uniqueName("gstflat");
    await using _gst = gstLaunch([
      "videotestsrc",
      `num-buffers=${buffers}`,
      "pattern=black",
      "!",
      "video/x-raw,format=BGRA,width=64,height=64",
      "!",
      "unixfdsink",
      `socket-path=${socket}`,
      "socket-type=abstract",
      "wait-for-connection=true",
      "sync=false",
    ]);
    const bridge = await GstSourceBridge.connect(`@${socket}`, { timeout: 10_000 });
    try {
      let frames = 0;
      const settled = Promise.resolve();
      const running = bridge.run({
        send(): Promise<void> {
          frames++;
          return settled;
        },
      });
      await within(running, 30_000, `from-gst to forward ${buffers} buffers`).catch((error) => {
        throw new Error(`${(error as Error).message}: stalled at ${frames}`);
      });
      assert.equal(frames, buffers);
    } finally {
      bridge.close();
    }
  },
});
