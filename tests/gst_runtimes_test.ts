/**
 * The GStreamer bridges under Node and Bun against real GStreamer 1.26 (the
 * chroot of scripts/gst-chroot.sh): `tests/peers/gst_runtime_peer.ts` runs
 * GstSourceBridge / GstSinkBridge in a Node or Bun process, `gst-launch-1.0`
 * runs the other end in the chroot over an abstract socket, and this file
 * checks the pixels, the bytes and the buffer holds. Ignored, with the
 * reason in the name, where the chroot or the runtime is missing.
 */

import assert from "node:assert/strict";
import { Child, uniqueName } from "./helpers.ts";
import { chrootTmp, GST, gstLaunch } from "./gst_helpers.ts";
import { missing, repositoryRoot, runtimes } from "./runtimes.ts";

const PEER = `${repositoryRoot}tests/peers/gst_runtime_peer.ts`;

/** videotestsrc's foreground-color (ARGB) and the BGRA bytes it must arrive as. */
const SOLID_ARGB = "0xff3366cc";
const SOLID_BGRA = "204,102,51,255";

function whyIgnored(name: "node" | "bun"): string | undefined {
  return GST.reason ?? missing(name);
}

function spawn(name: "node" | "bun", args: string[]): Child {
  const [command, commandArgs] = runtimes[name]!.command(PEER, args);
  return new Child(command, commandArgs);
}

for (const name of ["node", "bun"] as const) {
  const reason = whyIgnored(name);
  const ignored = reason ? ` (ignored: ${reason})` : "";

  Deno.test({
    name: `gst ${name}: videotestsrc solid colour → unixfdsink → from-gst in ${name} → channel: ` +
      `pixels exact, a held buffer is never reused and goes back only when released${ignored}`,
    ignore: reason !== undefined,
    async fn() {
      const socket = uniqueName("gstrt-src");
      const total = 40;
      await using gst = gstLaunch([
        "videotestsrc",
        "is-live=true", // endless: the peer stops the bridge after `total` frames
        "pattern=solid-color",
        `foreground-color=${SOLID_ARGB}`,
        "!",
        "video/x-raw,format=BGRA,width=64,height=48,framerate=60/1",
        "!",
        "unixfdsink",
        `socket-path=${socket}`,
        "socket-type=abstract",
        "wait-for-connection=true",
      ]);
      await using peer = spawn(name, ["from-gst", socket, String(total)]);
      for (let n = 0; n <= 10; n++) {
        assert.equal(
          await peer.line(/^frame /, 20_000),
          `frame ${n} 64x48 BGRA ${SOLID_BGRA} wrong=0`,
        );
      }
      // Ten later frames closed and given back while frame 0 is held: it is not, and none of
      // them came in its memory; closed, it goes back too.
      assert.equal(await peer.line(/^holding /, 10_000), "holding released=10 reused=0");
      assert.equal(await peer.line(/^returned /, 10_000), "returned released=11");
      let rest = 0;
      for (;;) {
        const line = await peer.line(/^(frame|stats) /, 20_000);
        if (line.startsWith("stats ")) {
          const stats = JSON.parse(line.slice(6));
          assert.ok(stats.forwarded >= total && stats.received >= stats.forwarded, line);
          assert.ok(stats.released >= total, line); // every frame the peer closed went back
          assert.equal(stats.dropped, 0, line);
          assert.equal(11 + rest, total, line);
          assert.equal(stats.copies, 0, line);
          break;
        }
        assert.match(line, new RegExp(`^frame \\d+ 64x48 BGRA ${SOLID_BGRA} wrong=0$`));
        rest++;
      }
      assert.equal(await peer.line(/^done /, 10_000), `done ${name}`);
      assert.equal((await peer.exit(10_000)).code, 0, peer.stderr);
      assert.doesNotMatch(gst.stderr, /ERROR/); // the endless pipeline is killed on dispose
    },
  });

  Deno.test({
    name: `gst ${name}: to-gst in ${name} → unixfdsrc ! identity sleep ! filesink: bytes exact, ` +
      `each frame in use while GStreamer holds it, back after${ignored}`,
    ignore: reason !== undefined,
    async fn() {
      const socket = uniqueName("gstrt-sink");
      const frames = 3;
      const width = 64;
      const raw = chrootTmp(`${socket}.raw`);
      try {
        await using peer = spawn(name, ["to-gst", socket, String(frames), String(width)]);
        await peer.line("listening", 20_000);
        await using gst = gstLaunch([
          "unixfdsrc",
          `socket-path=${socket}`,
          "socket-type=abstract",
          `num-buffers=${frames}`,
          "!",
          "identity",
          "sleep-time=200000", // µs: GStreamer holds each buffer this long
          "!",
          "filesink",
          // Unbuffered and no last sample: filesink must not keep buffers once written.
          "buffer-mode=unbuffered",
          "enable-last-sample=false",
          `location=${raw.inside}`,
        ]);
        for (let f = 0; f < frames; f++) {
          assert.match(await peer.line(/^sent /, 20_000), new RegExp(`^sent ${f} inUse=true `));
          assert.equal(await peer.line(/^returned /, 10_000), `returned ${f} outstanding=0`);
        }
        const stats = JSON.parse((await peer.line(/^stats /, 10_000)).slice(6));
        assert.deepEqual(
          [stats.received, stats.zeroCopy, stats.copies, stats.dropped, stats.outstanding],
          [frames, frames, 0, 0, 0],
          JSON.stringify(stats),
        );
        assert.equal(await peer.line(/^done /, 10_000), `done ${name}`);
        assert.equal((await peer.exit(10_000)).code, 0, peer.stderr);
        assert.equal((await gst.exit(10_000)).code, 0, gst.stderr);
        const bytes = await Deno.readFile(raw.outside);
        const frameBytes = width * 4 * 16;
        assert.equal(bytes.length, frames * frameBytes);
        for (let f = 0; f < frames; f++) {
          for (let i = 0; i < frameBytes; i++) {
            const got = bytes[f * frameBytes + i];
            const want = (i * 7 + f * 13) & 0xff;
            if (got !== want) assert.fail(`frame ${f} byte ${i}: ${got}, expected ${want}`);
          }
        }
      } finally {
        await Deno.remove(raw.outside).catch(() => {});
      }
    },
  });
}
