/**
 * Steady-state allocation per frame of the from-gst bridge when a consumer
 * holds each frame until the next one (issue 20), against real GStreamer
 * 1.26 behind a live source (a park per frame, as a camera's): each frame
 * the consumer lets go of closes its description, inotify reports it, and
 * the bridge's watch of the held buffers wakes, probes and releases, per
 * frame. The consumer is this test (a locked description per frame, as a
 * subscriber's, closed at the next frame); what it allocates is left out.
 * See tests/gst_allocation_test.ts for the rest of the bridges' bounds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SampledAllocation } from "../bench/common.ts";
import { assertBelow, type PerOperation } from "./sampled_allocation.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { unixFdStats } from "../src/gst/socket.ts";
import { libc } from "../src/linux/libc.ts";
import { backingOf, type Surface } from "../src/surface/surface.ts";
import { GST, liveUnixFdSource, within } from "./gst_helpers.ts";
import { uniqueName } from "./helpers.ts";

const TEST = "/tests/gst_held_allocation_test.ts";
/** Frames measured, after as many of warm-up, at {@link FPS}. */
const FRAMES = 1500;
const FPS = 500;
/**
 * What the bridge's own code (src/gst/) allocates per frame here: measured
 * 142-145 B (21:55 UTC on 2026-12-07): the frame (Surface, backing, meta),
 * and the watch's deadline (`performance.now()`'s number); its wait is one
 * record re-armed per wake. 287-291 B while the watch was an async loop
 * awaiting `waitReady`'s promise per wake, 189-200 B while it drained
 * inotify through an `isize` read (a BigInt per call); ~390 B with a
 * promise per wake.
 */
const CODE_LIMIT = 192;
/**
 * The whole process per frame, library alone: measured 296-298 B (2.1-2.2
 * KB with the watch's promise per wake and the shared poll's nonblocking
 * call per round, before its thread called back).
 */
const HELD_LIMIT = 512;

Deno.test({
  name: `gst allocation: from-gst whose consumer holds each frame until the next allocates < ` +
    `${HELD_LIMIT} B per frame, < ${CODE_LIMIT} B of its own (a wake of its release watch per frame)`,
  ignore: GST.root === undefined,
  async fn() {
    const socket = uniqueName("gstheld");
    await using _gst = liveUnixFdSource(socket, 2 * FRAMES + 20, FPS);
    const bridge = await GstSourceBridge.connect(`@${socket}`, { timeout: 10_000 });
    let held = -1;
    try {
      using sampler = new SampledAllocation();
      let frames = 0;
      let waitsBefore = 0;
      let waits = 0;
      let measured: PerOperation | undefined;
      const settled = Promise.resolve();
      const sink = {
        send(surface: Surface): Promise<void> {
          frames++;
          // The consumer lets go of the last frame and holds this one (a locked description).
          if (held >= 0) libc().close(held);
          held = backingOf(surface, "test").exportHandle();
          if (frames === FRAMES) {
            waitsBefore = unixFdStats.receiveWaits;
            return sampler.start();
          }
          if (frames === 2 * FRAMES) {
            waits = unixFdStats.receiveWaits - waitsBefore;
            return sampler.stopProfile().then((profile) => {
              measured = { bytes: profile.total / FRAMES, profile, count: FRAMES };
            });
          }
          return settled;
        },
      };
      await within(bridge.run(sink), 60_000, "from-gst to forward every frame and end at EOS");
      assert.ok(measured, "the window was sampled");
      assert.equal(bridge.stats.dropped, 0, "no buffer was dropped");
      const own = measured.profile.bytesFrom(TEST) / FRAMES;
      const code = measured.profile.bytesOf("/src/gst/", undefined, TEST) / FRAMES;
      console.log(
        `  from-gst held: ${(measured.bytes - own).toFixed(0)} B per frame, ${code.toFixed(0)} ` +
          `B by src/gst/ (${waits} parked receives, ${bridge.stats.released} released)`,
      );
      assertBelow(
        "from-gst's own code (src/gst/), frames held",
        measured,
        CODE_LIMIT,
        measured.bytes - code,
      );
      assertBelow("from-gst, frames held", measured, HELD_LIMIT, own);
    } finally {
      bridge.close();
      if (held >= 0) libc().close(held);
    }
  },
});
