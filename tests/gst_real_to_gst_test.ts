/**
 * The to-gst bridge against real GStreamer 1.26 (from the chroot that
 * scripts/gst-chroot.sh builds; skipped with the reason printed where it
 * cannot be built): every pixel format through unixfdsrc ! videoconvert !
 * pngenc, the PNG compared (abstract and path sockets, and through
 * `surfaceport to-gst`), and GStreamer holding a frame keeps it in use for
 * the producer until it dies.
 */

import assert from "node:assert/strict";
import { decode } from "fast-png";
import { publish, subscribe, Surface } from "../mod.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import type { PixelFormat } from "../src/core/geometry.ts";
import { cli, pair, sleep, uniqueName, waitUntil } from "./helpers.ts";
import { chrootTmp, GST, gstLaunch, withBindMount, within } from "./gst_helpers.ts";

const ignore = GST.root === undefined;

/** A gst-launch pipeline: one frame from unixfdsrc (with `srcArgs`), as an RGBA PNG at `location`. */
function oneFrameToPng(srcArgs: string[], location: string): string[] {
  return [
    "unixfdsrc",
    ...srcArgs,
    "num-buffers=1",
    "!",
    "videoconvert",
    "!",
    "video/x-raw,format=RGBA",
    "!",
    "pngenc",
    "!",
    "filesink",
    `location=${location}`,
  ];
}

/** Fills `surface` with four quadrants of `colors` (RGB) in its format; returns the RGB per pixel. */
function paint(surface: Surface, colors: number[][]): (x: number, y: number) => number[] {
  const { width, height } = surface;
  const quadrant = (x: number, y: number) =>
    colors[(y < height / 2 ? 0 : 2) + (x < width / 2 ? 0 : 1)];
  const p = surface.planes;
  const format = surface.format;
  // Limited-range BT.709 Y'CbCr for the YUV formats (what the bridge announces); full for 420f.
  const full = format === "420f";
  const yuv = ([r, g, b]: number[]) => {
    const [kr, kb] = [0.2126, 0.0722];
    const R = r / 255, G = g / 255, B = b / 255;
    const Y = kr * R + (1 - kr - kb) * G + kb * B;
    const pb = (B - Y) / (2 * (1 - kb)), pr = (R - Y) / (2 * (1 - kr));
    return full
      ? [Math.round(Y * 255), Math.round(128 + pb * 255), Math.round(128 + pr * 255)]
      : [Math.round(16 + Y * 219), Math.round(128 + pb * 224), Math.round(128 + pr * 224)];
  };
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const rgb = quadrant(x, y);
      if (format === "BGRA" || format === "RGBA") {
        const o = y * p[0].bytesPerRow + x * 4;
        const bytes = surface.bytes(0);
        bytes.set(
          format === "BGRA" ? [rgb[2], rgb[1], rgb[0], 255] : [rgb[0], rgb[1], rgb[2], 255],
          o,
        );
      } else if (format === "L008") {
        surface.bytes(0)[y * p[0].bytesPerRow + x] = rgb[0];
      } else {
        const [Y, U, V] = yuv(rgb);
        surface.bytes(0)[y * p[0].bytesPerRow + x] = Y;
        if (x % 2 === 0 && y % 2 === 0) {
          if (format === "y420") {
            surface.bytes(1)[(y / 2) * p[1].bytesPerRow + x / 2] = U;
            surface.bytes(2)[(y / 2) * p[2].bytesPerRow + x / 2] = V;
          } else {
            surface.bytes(1).set([U, V], (y / 2) * p[1].bytesPerRow + x);
          }
        }
      }
    }
  }
  return (x, y) =>
    format === "L008" ? [quadrant(x, y)[0], quadrant(x, y)[0], quadrant(x, y)[0]] : quadrant(x, y);
}

const COLORS = [[200, 30, 40], [20, 180, 60], [40, 60, 220], [250, 250, 250]];
const GRAYS = [[17, 17, 17], [90, 90, 90], [160, 160, 160], [240, 240, 240]];

for (
  const [format, width, height, zeroCopy, path] of [
    ["BGRA", 320, 240, true, false],
    ["BGRA", 322, 240, false, true],
    ["RGBA", 64, 48, true, false],
    ["L008", 100, 50, false, false],
    ["420v", 320, 240, true, false],
    ["420f", 320, 240, true, false],
    ["y420", 322, 240, false, false],
    ["y420", 128, 64, true, false],
  ] as [PixelFormat, number, number, boolean, boolean][]
) {
  Deno.test({
    name:
      `gst real: ${format} ${width}x${height} → to-gst (${path ? "path" : "abstract"} socket) → ` +
      `unixfdsrc ! videoconvert ! pngenc, PNG compared (${zeroCopy ? "zero-copy" : "copied"})`,
    ignore,
    async fn() {
      const name = uniqueName("gstsink");
      const png = chrootTmp(`${name}.png`);
      const run = async (socket: string, srcArgs: string[]) => {
        const bridge = GstSinkBridge.listen(socket);
        try {
          await using gst = gstLaunch(oneFrameToPng(srcArgs, png.inside));
          await bridge.waitForClient(10_000);
          const name = uniqueName("gstpub");
          using publisher = publish(name);
          using subscription = await subscribe(name, { timeout: 5000, policy: "queue", depth: 4 });
          // The frame below must find the subscriber admitted (see gst_real_from_gst_test.ts).
          await waitUntil(
            () => publisher.subscribers[0]?.state === "subscribed",
            5000,
            "SUBSCRIBE",
          );
          const running = bridge.run(subscription);
          using surface = Surface.create({ width, height, format });
          const expected = paint(surface, format === "L008" ? GRAYS : COLORS);
          await publisher.send(surface);
          assert.equal((await gst.exit(15_000)).code, 0, gst.stderr);
          publisher.close(); // the subscription ends, and with it run()
          await within(running, 5000, "to-gst to end");
          const stats = bridge.stats;
          assert.equal(stats.received, 1);
          assert.equal(zeroCopy ? stats.zeroCopy : stats.copies, 1, JSON.stringify(stats));
          await waitUntil(() => bridge.stats.outstanding === 0, 5000, "the frame to come back");
          return expected;
        } finally {
          bridge.close();
        }
      };
      try {
        const expected = path
          ? await withBindMount(
            "/tmp",
            () => run(`/tmp/${name}.sock`, [`socket-path=/tmp/${name}.sock`]),
          )
          : await run(`@${name}`, [`socket-path=${name}`, "socket-type=abstract"]);
        // With /tmp bind-mounted, the chroot's /tmp is the host's.
        const image = decode(await Deno.readFile(path ? `/tmp/${name}.png` : png.outside));
        assert.deepEqual([image.width, image.height, image.channels], [width, height, 4]);
        const tolerance = format === "BGRA" || format === "RGBA" || format === "L008" ? 0 : 6;
        let worst = 0;
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) {
            // Chroma is interpolated across the quadrant edges: compare away from them.
            if (tolerance && (Math.abs(x - width / 2) < 4 || Math.abs(y - height / 2) < 4)) {
              continue;
            }
            const o = (y * width + x) * 4;
            const want = expected(x, y);
            for (let c = 0; c < 3; c++) {
              worst = Math.max(worst, Math.abs(image.data[o + c] - want[c]));
            }
            assert.ok(
              worst <= tolerance,
              `(${x},${y}): ${[...image.data.subarray(o, o + 3)]} vs ${want}`,
            );
          }
        }
      } finally {
        await Deno.remove(path ? `/tmp/${name}.png` : png.outside).catch(() => {});
      }
    },
  });
}
Deno.test({
  name:
    "gst real: GStreamer holding a to-gst frame keeps it in use for the producer; killing it frees it",
  ignore,
  async fn() {
    const socket = uniqueName("gstkeep");
    const bridge = GstSinkBridge.listen(`@${socket}`);
    try {
      // A sink that never finishes prerolling holds the first buffer.
      await using gst = gstLaunch([
        "unixfdsrc",
        `socket-path=${socket}`,
        "socket-type=abstract",
        "!",
        "queue",
        "!",
        "fakesink",
        "sync=true",
        "ts-offset=3600000000000",
      ]);
      await bridge.waitForClient(10_000);
      using channels = await pair();
      const running = bridge.run(channels.server);
      using surface = Surface.create({ width: 320, height: 240, format: "BGRA" });
      await channels.client.send(surface);
      await waitUntil(() => bridge.stats.zeroCopy === 1, 5000, "the frame to reach GStreamer");
      await sleep(300);
      assert.ok(surface.inUse, "GStreamer's hold keeps the producer's surface in use");
      gst.process.kill("SIGKILL");
      await gst.process.status;
      await waitUntil(() => !surface.inUse, 5000, "the surface to be free after GStreamer died");
      assert.equal(bridge.stats.outstanding, 0);
      channels.client.close();
      await within(running, 5000, "to-gst to end");
    } finally {
      bridge.close();
    }
  },
});
Deno.test({
  name:
    "gst real: `surfaceport to-gst NAME @SOCKET` → unixfdsrc ! pngenc gets the publisher's frame exactly",
  ignore,
  async fn() {
    const socket = uniqueName("gstcli");
    const name = uniqueName("gstcli-sub");
    const png = chrootTmp(`${socket}.png`);
    using publisher = publish(name);
    await using bridge = cli(["to-gst", name, `@${socket}`, "--interval", "200"]);
    await bridge.line("serving", 20_000);
    try {
      await using gst = gstLaunch(
        oneFrameToPng([`socket-path=${socket}`, "socket-type=abstract"], png.inside),
      );
      using surface = Surface.create({ width: 320, height: 240, format: "BGRA" });
      const expected = paint(surface, COLORS);
      // Send until GStreamer has its frame (the bridge drops frames while no client is connected).
      const deadline = performance.now() + 15_000;
      let status: Deno.CommandStatus | undefined;
      gst.process.status.then((s) => status = s);
      while (!status && performance.now() < deadline) {
        await publisher.send(surface);
        await sleep(50);
      }
      assert.equal(status?.code, 0, gst.stderr);
      const image = decode(await Deno.readFile(png.outside));
      assert.deepEqual([image.width, image.height, image.channels], [320, 240, 4]);
      // Every pixel, not a sample.
      let wrong = 0, first = "";
      for (let y = 0; y < 240; y++) {
        for (let x = 0; x < 320; x++) {
          const at = (y * 320 + x) * 4;
          const want = expected(x, y);
          const got = [image.data[at], image.data[at + 1], image.data[at + 2]];
          if (got.some((v, i) => v !== want[i])) {
            if (wrong++ === 0) first = `(${x},${y}): ${got} instead of ${want}`;
          }
        }
      }
      assert.equal(wrong, 0, `${wrong} pixels differ; the first at ${first}`);
      assert.match(await bridge.line(/zero-copy [1-9]/, 10_000), /copies 0/);
    } finally {
      await Deno.remove(png.outside).catch(() => {});
    }
    publisher.close();
    await bridge.line("end of stream", 10_000);
    assert.equal((await bridge.exit(5000)).code, 0, bridge.stderr);
  },
});
