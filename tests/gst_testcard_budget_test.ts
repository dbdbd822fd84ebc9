/**
 * Issue 18, defect 2, as processes: `cli testcard` (its pool sized from its
 * subscribers' budgets), `cli to-gst` subscribed to it, and a `unixfdsrc`
 * stand-in that reads every buffer and never releases one. The testcard
 * keeps running and a witness subscriber keeps its frame rate.
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { subscribe } from "../mod.ts";
import { connectUnixFd } from "../src/gst/socket.ts";
import { cli, uniqueName } from "./helpers.ts";

const linux = Deno.build.os === "linux";

/** Frames a witness receives in `ms`. */
async function rate(subscription: Awaited<ReturnType<typeof subscribe>>, ms: number) {
  let frames = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    try {
      (await subscription.receive({ timeout: Math.max(1, end - performance.now()) })).close();
      frames++;
    } catch {
      break; // timed out at the end of the window
    }
  }
  return frames;
}

Deno.test({
  name: "to-gst: a unixfdsrc that never releases neither kills `cli testcard` nor slows a " +
    "witness subscriber below 70%",
  ignore: !linux,
  async fn() {
    const name = uniqueName("card-gst");
    const socket = uniqueName("card-gst-sock");
    await using card = cli(["testcard", name, "--width", "320", "--height", "180", "--fps", "30"]);
    await card.line(`testcard ${name}:`);
    await using bridge = cli(["to-gst", name, `@${socket}`, "--interval", "200"]);
    await bridge.line("serving", 20_000);
    using witness = await subscribe(name, { timeout: 10_000 });
    await rate(witness, 500); // warm up
    const before = await rate(witness, 2000);
    const hoarder = await connectUnixFd(`@${socket}`, () => true, performance.now() + 10_000);
    const held: number[] = [];
    const hoarding = (async () => {
      try {
        for (;;) {
          const message = await hoarder.receive(performance.now() + 60_000);
          if (message.type === "new-buffer") held.push(...message.fds);
        }
      } catch {
        // cut off
      }
    })();
    try {
      const during = await rate(witness, 3000) * 2 / 3; // per 2 s, like `before`
      const status = await Promise.race([
        card.process.status,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 0)),
      ]);
      assert.equal(status, undefined, `the testcard exited: ${card.stderr}`);
      assert.ok(before > 20, `the witness got ${before} frames in 2 s before`);
      assert.ok(
        during >= 0.7 * before,
        `the witness fell from ${before} to ${during.toFixed(0)} frames per 2 s`,
      );
      assert.ok(held.length <= 2, `the hoarder holds ${held.length} frames`);
    } finally {
      hoarder.close();
      await hoarding;
      for (const fd of held) libc().close(fd);
    }
  },
});
