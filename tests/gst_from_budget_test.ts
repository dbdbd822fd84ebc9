/**
 * from-gst in front of a publisher: a subscriber that keeps frames within
 * its own budget must not stall another one. The bridge holds GStreamer's
 * buffers while any subscriber uses them. A subscriber of depth 4 that
 * reads 3 frames, keeps them and stops reading holds 5 (4 in flight, 1 at
 * the publisher) and is never cut off: it has credits. Three of them, one
 * after another, held 10 (9 open, 1 the latest), more than the old default
 * of 8 buffers, and every later frame was dropped for everyone else.
 *
 * @module
 */

import assert from "node:assert/strict";
import { GstSourceBridge, publish, subscribe, type Subscription } from "../mod.ts";
import { uniqueName } from "./helpers.ts";
import { GST, gstLaunch, within } from "./gst_helpers.ts";

/** Frames `subscription` received in `ms`. */
async function framesWithin(subscription: Subscription, ms: number): Promise<number> {
  const end = performance.now() + ms;
  let frames = 0;
  for (;;) {
    const left = end - performance.now();
    if (left <= 0) return frames;
    try {
      using _frame = await subscription.receive({ timeout: left });
    } catch {
      return frames;
    }
    frames++;
  }
}

Deno.test({
  name:
    "from-gst: subscribers that keep 3 frames each and stop reading never slow another one down" +
    (GST.root ? "" : ` (ignored: ${GST.reason})`),
  ignore: !GST.root,
  async fn() {
    const socket = uniqueName("gst-budget");
    await using _gst = gstLaunch([
      "videotestsrc",
      "is-live=true",
      "!",
      "video/x-raw,format=BGRA,width=64,height=48,framerate=30/1",
      "!",
      "unixfdsink",
      `socket-path=${socket}`,
      "socket-type=abstract",
      "wait-for-connection=true",
    ]);
    const name = uniqueName("gst-budget-pub");
    using publisher = publish(name);
    const stop = new AbortController();
    const forwarding = GstSourceBridge.forward(`@${socket}`, publisher, {
      timeout: 10_000,
      signal: stop.signal,
    });
    const kept: Disposable[] = [];
    try {
      using witness = await subscribe(name, { timeout: 10_000 });
      using _first = await within(witness.receive(), 20_000, "a first frame");
      _first[Symbol.dispose]();
      const alone = await framesWithin(witness, 2000);
      // depth 4: each reads 3 frames and keeps them open, then reads nothing (within its budget
      // of 5: it is never cut off).
      // One after another, so that each keeps frames of its own.
      for (let k = 0; k < 3; k++) {
        const keeper = await subscribe(name, { timeout: 10_000, depth: 4 });
        kept.push(keeper);
        for (let i = 0; i < 3; i++) {
          kept.push(await within(keeper.receive(), 10_000, "keeper frame"));
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      const beside = await framesWithin(witness, 2000);
      console.log(`witness frames in 2 s: alone ${alone}, beside the keepers ${beside}`);
      assert.ok(alone >= 10, `the witness got only ${alone} frames in 2 s alone`);
      assert.ok(
        beside >= alone / 2,
        `beside the keepers the witness got ${beside} (alone ${alone})`,
      );
    } finally {
      for (const held of kept.reverse()) held[Symbol.dispose]();
      stop.abort();
      await forwarding.catch(() => {});
    }
  },
});
