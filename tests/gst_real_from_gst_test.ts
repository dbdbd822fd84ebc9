/**
 * The from-gst bridge against real GStreamer 1.26 (from the chroot that
 * scripts/gst-chroot.sh builds; skipped with the reason printed where it
 * cannot be built): videotestsrc's bars arrive in GStreamer's own buffers
 * (abstract and path sockets, and through `surfaceport from-gst`), and a
 * consumer that hoards frames and is SIGKILLed never gets a held buffer
 * reused.
 */

import assert from "node:assert/strict";
import { connect, PeerClosedError, publish, subscribe, type Surface } from "../mod.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { cli, pair, spawnPeer, uniqueName, waitUntil } from "./helpers.ts";
import { GST, gstLaunch, withBindMount, within } from "./gst_helpers.ts";

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
