/**
 * The bridges against real GStreamer 1.26 (in the chroot of
 * `scripts/gst-chroot.sh`): from-gst `--reconnect` picks up a restarted
 * pipeline; to-gst keeps a real `unixfdsrc` served beside a client that
 * never releases.
 */

import assert from "node:assert/strict";
import { publish, subscribe, Surface } from "../mod.ts";
import { connectUnixFd } from "../src/gst/socket.ts";
import { type Child, cli, uniqueName } from "./helpers.ts";
import { GST, gstLaunch } from "./gst_helpers.ts";
import { libc } from "../ffi/linux.ts";

const ignore = GST.root === undefined;

function pipeline(socket: string, frames: number): Child {
  return gstLaunch([
    "videotestsrc",
    `num-buffers=${frames}`,
    "is-live=true",
    "!",
    "video/x-raw,format=BGRA,width=320,height=240,framerate=30/1",
    "!",
    "unixfdsink",
    `socket-path=${socket}`,
    "socket-type=abstract",
    "wait-for-connection=true",
  ]);
}

Deno.test({
  name: "gst real: `from-gst --reconnect` serves a pipeline run twice to one subscriber",
  ignore,
  async fn() {
    const socket = uniqueName("gstagain");
    const name = uniqueName("gstagain-pub");
    {
      await using first = pipeline(socket, 10);
      await using bridge = cli([
        "from-gst",
        `@${socket}`,
        name,
        "--reconnect",
        "--interval",
        "100",
        "--timeout",
        "10000",
      ]);
      using subscription = await subscribe(name, { timeout: 20_000 });
      (await subscription.receive({ timeout: 10_000 })).close();
      assert.equal((await first.exit(20_000)).code, 0, first.stderr);
      // The first pipeline ended (EOS); the bridge waits for the next on the same socket.
      await using second = pipeline(socket, 10);
      await bridge.line(/connections 2/, 20_000);
      const frame = await subscription.receive({ timeout: 10_000 });
      assert.equal(frame.surface.width, 320);
      frame.close();
      assert.equal((await second.exit(20_000)).code, 0, second.stderr);
      bridge.process.kill("SIGINT");
      assert.equal((await bridge.exit(10_000)).code, 0, bridge.stderr);
    }
  },
});

Deno.test({
  name: "gst real: to-gst serves a real unixfdsrc all its frames beside a client that never " +
    "releases",
  ignore,
  async fn() {
    const socket = uniqueName("gstbudget");
    const name = uniqueName("gstbudget-sub");
    using publisher = publish(name);
    await using bridge = cli(["to-gst", name, `@${socket}`, "--interval", "200"]);
    await bridge.line("serving", 20_000);
    // The hoarder connects first, reads every buffer and never gives one back.
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
    using surface = Surface.create({ width: 320, height: 240, format: "BGRA" });
    const frames = 30;
    try {
      await using gst = gstLaunch([
        "unixfdsrc",
        `socket-path=${socket}`,
        "socket-type=abstract",
        `num-buffers=${frames}`,
        "!",
        "fakesink",
        "sync=false",
      ]);
      // Publish until GStreamer has had its frames (the bridge drops frames it cannot place).
      const deadline = performance.now() + 30_000;
      let status: Deno.CommandStatus | undefined;
      gst.process.status.then((s) => status = s);
      while (status === undefined && performance.now() < deadline) {
        await publisher.send(surface, undefined);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (!status) {
        let last = "";
        try {
          for (;;) last = await bridge.line(/to-gst/, 300);
        } catch {
          // no more lines
        }
        assert.fail(
          `unixfdsrc did not get ${frames} buffers beside the hoarder: ${last}\n${gst.stderr}`,
        );
      }
      assert.equal(status.code, 0, gst.stderr);
      assert.ok(held.length <= 2, `the hoarder holds ${held.length} buffers; its budget is 2`);
    } finally {
      hoarder.close();
      await hoarding;
      for (const fd of held) libc().close(fd);
    }
  },
});
