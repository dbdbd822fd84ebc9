/**
 * The bridge against real GStreamer 1.26 (from the chroot that
 * scripts/gst-chroot.sh builds; skipped with the reason printed where it
 * cannot be built).
 */

import assert from "node:assert/strict";
import { decode } from "fast-png";
import { type Frame, PeerClosedError, publish, subscribe, Surface } from "../mod.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import type { PixelFormat } from "../src/core/geometry.ts";
import { connect } from "../mod.ts";
import { Child, pair, PEER_FLAGS, sleep, spawnPeer, uniqueName, waitUntil } from "./helpers.ts";
import { chrootTmp, GST, gstLaunch, withBindMount, within } from "./gst_helpers.ts";

const ignore = GST.root === undefined;

/** videotestsrc's SMPTE top bars (100%), RGB. */
const BARS: [number, number, number][] = [
  [255, 255, 255],
  [255, 255, 0],
  [0, 255, 255],
  [0, 255, 0],
  [255, 0, 255],
  [255, 0, 0],
  [0, 0, 255],
];

/** Limited-range Y'CbCr to RGB with the matrix `colorimetry` names (bt601 / bt709). */
function yuvToRgb(y: number, u: number, v: number, colorimetry: string | undefined): number[] {
  const [kr, kb] = colorimetry === "bt709" ? [0.2126, 0.0722] : [0.299, 0.114];
  const Y = (y - 16) / 219, pb = (u - 128) / 224, pr = (v - 128) / 224;
  const r = Y + 2 * (1 - kr) * pr;
  const b = Y + 2 * (1 - kb) * pb;
  const g = (Y - kr * r - kb * b) / (1 - kr - kb);
  return [r, g, b].map((c) => Math.round(Math.min(1, Math.max(0, c)) * 255));
}

/** The RGB at (x, y) of a BGRA or NV12 surface. */
function rgbAt(surface: Surface, x: number, y: number, colorimetry: string | undefined): number[] {
  const p0 = surface.planes[0];
  if (surface.format === "BGRA") {
    const o = y * p0.bytesPerRow + x * 4;
    const b = surface.bytes(0);
    return [b[o + 2], b[o + 1], b[o]];
  }
  const p1 = surface.planes[1];
  const uv = surface.bytes(1);
  const o = (y >> 1) * p1.bytesPerRow + (x >> 1) * 2;
  return yuvToRgb(surface.bytes(0)[y * p0.bytesPerRow + x], uv[o], uv[o + 1], colorimetry);
}

for (
  const [format, width, height] of [
    ["BGRA", 1280, 720],
    ["BGRA", 322, 240],
    ["NV12", 1280, 720],
    ["NV12", 322, 240],
  ] as const
) {
  Deno.test({
    name:
      `gst real: videotestsrc ${format} ${width}x${height} → unixfdsink → from-gst → subscriber sees the bars`,
    ignore,
    async fn() {
      const socket = uniqueName("gstsrc");
      const frames = 5;
      await using gst = gstLaunch([
        "videotestsrc",
        `num-buffers=${frames}`,
        "pattern=smpte",
        "!",
        `video/x-raw,format=${format},width=${width},height=${height}`,
        "!",
        "unixfdsink",
        `socket-path=${socket}`,
        "socket-type=abstract",
        "wait-for-connection=true",
      ]);
      const name = uniqueName("gstpub");
      using publisher = publish(name);
      using subscription = await subscribe(name, { timeout: 5000, policy: "queue", depth: 8 });
      // subscribe() returns once SUBSCRIBE is sent; the publisher reads it on a later turn. Frame
      // 0 published before then has no subscriber and is dropped (seen: offset 1 first).
      await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 5000, "SUBSCRIBE");
      const bridge = await GstSourceBridge.connect(`@${socket}`, { timeout: 10_000 });
      try {
        const running = bridge.run(publisher);
        const seen: string[] = [];
        for (let i = 0; i < frames; i++) {
          using frame = await subscription.receive({ timeout: 10_000 });
          const surface = frame.surface;
          assert.equal(surface.format, format === "BGRA" ? "BGRA" : "420v");
          assert.deepEqual([surface.width, surface.height], [width, height]);
          // GStreamer's own layout arrives as it is (rows rounded to 4 bytes): no copy was made.
          assert.equal(
            surface.planes[0].bytesPerRow,
            format === "BGRA" ? width * 4 : Math.ceil(width / 4) * 4,
          );
          assert.equal((frame.meta as { offset: number }).offset, i, "GStreamer's frame number");
          const y = Math.floor(height / 3);
          for (const [bar, expected] of BARS.entries()) {
            const x = Math.floor((bar + 0.5) * width / 7);
            const rgb = rgbAt(surface, x, y, bridge.caps?.colorimetry);
            for (let c = 0; c < 3; c++) {
              assert.ok(
                Math.abs(rgb[c] - expected[c]) <= 12,
                `frame ${i} bar ${bar} at (${x},${y}): got ${rgb}, expected ${expected}`,
              );
            }
          }
          seen.push(`${i}`);
        }
        await within(running, 10_000, "from-gst to end at EOS");
        assert.equal(seen.length, frames);
        const stats = bridge.stats;
        assert.equal(stats.received, frames);
        assert.equal(stats.forwarded, frames);
        assert.equal(stats.copies, 0);
        assert.equal(stats.outstanding, 0);
        assert.equal((await gst.exit(10_000)).code, 0, gst.stderr);
      } finally {
        bridge.close();
      }
    },
  });
}

Deno.test({
  name: "gst real: a unixfdsink on a path socket (/tmp bind-mounted into the chroot) → from-gst",
  ignore,
  async fn() {
    const socket = `/tmp/${uniqueName("gstpath")}.sock`;
    await withBindMount("/tmp", async () => {
      await using gst = gstLaunch([
        "videotestsrc",
        "num-buffers=3",
        "!",
        "video/x-raw,format=NV12,width=320,height=240",
        "!",
        "unixfdsink",
        `socket-path=${socket}`,
        "wait-for-connection=true",
      ]);
      using channels = await pair();
      const bridge = await GstSourceBridge.connect(socket, { timeout: 10_000 });
      try {
        const running = bridge.run(channels.client);
        for (let i = 0; i < 3; i++) {
          using frame = await channels.server.receive({ timeout: 10_000 });
          assert.equal(frame.surface.format, "420v");
          const white = rgbAt(frame.surface, 20, 80, bridge.caps?.colorimetry);
          assert.ok(white.every((c) => c >= 243), `white bar: ${white}`);
        }
        await within(running, 10_000, "from-gst to end at EOS");
        assert.equal((await gst.exit(10_000)).code, 0, gst.stderr);
      } finally {
        bridge.close();
      }
    });
  },
});

/** Fills `surface` with four quadrants of `colors` (RGB) in its format; returns the RGB per pixel. */
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
          // The frame below must find the subscriber admitted (see the from-gst tests above).
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
    "gst real: a consumer hoards frames, then is SIGKILLed — GStreamer never reuses a held buffer " +
    "and gets every one back",
  ignore,
  async fn() {
    const socket = uniqueName("gsthold");
    const channelName = uniqueName("gsthold-ch");
    const total = 120;
    const hold = 4;
    await using holder = spawnPeer("gst_holder.ts", [channelName, String(hold)]);
    await holder.line("ready", 20_000);
    await using gst = gstLaunch([
      "videotestsrc",
      "pattern=ball",
      "is-live=true",
      `num-buffers=${total}`,
      "!",
      "video/x-raw,format=BGRA,width=320,height=240,framerate=60/1",
      "!",
      "unixfdsink",
      `socket-path=${socket}`,
      "socket-type=abstract",
      "wait-for-connection=true",
    ]);
    using channel = await connect(channelName, { timeout: 5000 });
    const bridge = await GstSourceBridge.connect(`@${socket}`, {
      timeout: 10_000,
      maxOutstanding: hold + 2,
    });
    try {
      const forwarded: { offset: number; id: number }[] = [];
      const running = bridge.run({
        async send(surface, meta) {
          forwarded.push({ offset: (meta as { offset: number }).offset, id: surface.id });
          // Like a publisher whose only subscriber died: the frame goes nowhere.
          await channel.send(surface, meta).catch((error) => {
            if (!(error instanceof PeerClosedError)) throw error;
          });
        },
      });
      const held: { offset: number; id: number }[] = [];
      for (let i = 0; i < hold; i++) {
        const [, offset, id] = (await holder.line(/^held /, 20_000)).split(" ");
        held.push({ offset: Number(offset), id: Number(id) });
      }
      await holder.line("holding", 20_000);
      // Let GStreamer produce a good many more frames while the four are held.
      const before = forwarded.length;
      await waitUntil(() => forwarded.length >= before + 30, 20_000, "30 more frames");
      assert.ok(bridge.stats.outstanding >= hold, JSON.stringify(bridge.stats));
      await holder.send("verify");
      assert.equal(await holder.line(/^(intact|changed) /, 10_000), `intact ${hold}`);
      const killedAt = forwarded.length;
      holder.process.kill("SIGKILL");
      await holder.process.status;
      // No frame after a held one, up to the kill, came in that held buffer's memory.
      for (const h of held) {
        const reused = forwarded.slice(0, killedAt).find((f) =>
          f.offset > h.offset && f.id === h.id
        );
        assert.equal(reused, undefined, `GStreamer reused held buffer ${h.id} (frame ${h.offset})`);
      }
      await within(running, 30_000, "from-gst to reach EOS");
      const stats = bridge.stats;
      assert.equal(stats.received, total);
      assert.equal(stats.outstanding, 0, "every buffer went back to GStreamer");
      assert.equal(stats.released, total);
      assert.equal((await gst.exit(10_000)).code, 0, gst.stderr);
    } finally {
      bridge.close();
    }
  },
});

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

export type { Frame };

const CLI = new URL("../cli/main.ts", import.meta.url).pathname;

/** `deno run cli/main.ts ARGS` as a child (killed and awaited on dispose). */
function cli(args: string[]): Child {
  return new Child(Deno.execPath(), ["run", ...PEER_FLAGS, CLI, ...args]);
}

Deno.test({
  name:
    "gst real: `surfaceport from-gst @SOCKET NAME` → a subscriber sees GStreamer's frames, no copy",
  ignore,
  async fn() {
    const socket = uniqueName("gstcli");
    const name = uniqueName("gstcli-pub");
    const frames = 20;
    await using gst = gstLaunch([
      "videotestsrc",
      `num-buffers=${frames}`,
      "is-live=true",
      "!",
      "video/x-raw,format=BGRA,width=322,height=240,framerate=30/1",
      "!",
      "unixfdsink",
      `socket-path=${socket}`,
      "socket-type=abstract",
      "wait-for-connection=true",
    ]);
    await using bridge = cli([
      "from-gst",
      `@${socket}`,
      name,
      "--interval",
      "200",
      "--timeout",
      "10000",
    ]);
    using subscription = await subscribe(name, { timeout: 20_000 });
    using frame = await subscription.receive({ timeout: 10_000 });
    assert.equal(frame.surface.planes[0].bytesPerRow, 322 * 4, "GStreamer's rows, as they are");
    const o = Math.floor(240 / 3) * 322 * 4 + Math.floor(0.5 * 322 / 7) * 4;
    assert.deepEqual(
      [...frame.surface.bytes(0).subarray(o, o + 3)],
      [255, 255, 255],
      "the white bar",
    );
    frame.close();
    const line = await bridge.line(/copies 0 .*/, 10_000);
    assert.match(line, /^from-gst @\S+ → \S+: BGRA 322x240 /);
    await bridge.line("end of stream", 20_000);
    assert.equal((await bridge.exit(5000)).code, 0, bridge.stderr);
    assert.equal((await gst.exit(5000)).code, 0, gst.stderr);
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
