/**
 * `deno task bench:gst` (also run at the end of `deno task bench`): the
 * GStreamer bridge at 1920×1080 BGRA (layouts that need no copy), each
 * direction against its direct path, in one run on one machine.
 *
 *   deno task bench:gst [--frames N] [--json PATH]
 *
 * - **from-gst, frames/s**: `videotestsrc pattern=black ! unixfdsink
 *   sync=false` as fast as GStreamer goes, received by (direct) a bare
 *   unixfd client that releases each buffer at once, and (bridge)
 *   `GstSourceBridge` → `Publisher` → `Subscription` in this process.
 * - **from-gst, latency**: the same at a live 30 frames/s; GStreamer's pts
 *   (`CLOCK_MONOTONIC` when the sink sent the buffer) to receipt, by the
 *   bare client (direct) and by the subscriber (bridge).
 * - **to-gst, frames/s**: a `SurfacePool` publisher sending as fast as its
 *   pool allows to (direct) a subscriber closing each frame, and (bridge) a
 *   subscriber → `GstSinkBridge` → `unixfdsrc ! fakesink sync=false
 *   enable-last-sample=false`,
 *   counted when GStreamer gave the frame back.
 * - **to-gst, latency** at 30 frames/s: send to receipt by the subscriber
 *   (direct) and send to GStreamer's RELEASE_BUFFER (bridge: a round trip,
 *   so an upper bound of the one-way latency).
 *
 * The machine is shared and noisy: both paths of a pair run back to back in
 * the same process. Needs the GStreamer chroot (scripts/gst-chroot.sh, as
 * root); without it, prints why and exits 0.
 *
 * @module
 */

import { libc } from "../ffi/linux.ts";
import {
  GstSinkBridge,
  GstSourceBridge,
  nowMicros,
  publish,
  subscribe,
  SurfacePool,
} from "../mod.ts";
import { connectUnixFd } from "../src/gst/socket.ts";
import { encodeRelease } from "../src/gst/protocol.ts";
import { percentile, withTimeout } from "./common.ts";

const args = [...Deno.args];
const option = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const FRAMES = Number(option("--frames") ?? 300);
const LIVE_FRAMES = 150;
const WIDTH = 1920, HEIGHT = 1080;
const CAPS = `video/x-raw,format=BGRA,width=${WIDTH},height=${HEIGHT}`;
const SCRIPT = new URL("../scripts/gst-chroot.sh", import.meta.url).pathname;

const chroot = await new Deno.Command(SCRIPT, { stdout: "piped", stderr: "piped" }).output();
if (!chroot.success) {
  const why = new TextDecoder().decode(chroot.stderr).trim().split("\n").at(-1);
  console.log(`bench:gst skipped: no GStreamer chroot (${why})`);
  Deno.exit(0);
}
const ROOT = new TextDecoder().decode(chroot.stdout).trim().split("\n").at(-1)!;

const timespec = new BigInt64Array(2);
const timespecBytes = new Uint8Array(timespec.buffer);
function monotonicNanos(): number {
  libc().clock_gettime(1, timespecBytes);
  return Number(timespec[0]) * 1e9 + Number(timespec[1]);
}

let unique = 0;
const name = (what: string) => `bench-gst-${what}-${Deno.pid}-${unique++}`;

/** Runs gst-launch in the chroot for the duration of `fn`; always killed and awaited. */
async function withGst<T>(pipeline: string[], fn: () => Promise<T>): Promise<T> {
  const child = new Deno.Command("chroot", {
    args: [ROOT, "gst-launch-1.0", "-q", ...pipeline],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    return await fn();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.output();
  }
}

function sinkPipeline(socket: string, live: boolean, frames: number): string[] {
  return [
    "videotestsrc",
    "pattern=black",
    `num-buffers=${frames}`,
    ...(live ? ["is-live=true"] : []),
    "!",
    `${CAPS},framerate=${live ? "30/1" : "1000/1"}`,
    "!",
    "unixfdsink",
    `socket-path=${socket}`,
    "socket-type=abstract",
    "wait-for-connection=true",
    `sync=${live}`,
  ];
}

interface Run {
  fps: number;
  latencyUs: number[];
}

/** from-gst, direct: a bare unixfd client releasing each buffer at once. */
async function fromGstDirect(live: boolean, frames: number): Promise<Run> {
  const socket = name("direct");
  return await withGst(sinkPipeline(socket, live, frames), async () => {
    const client = await connectUnixFd(`@${socket}`, () => true, performance.now() + 10_000);
    const latencyUs: number[] = [];
    let first = 0, count = 0;
    const release = new Uint8Array(16);
    try {
      while (count < frames) {
        const m = await client.receive(performance.now() + 10_000);
        if (m.type === "eos") break;
        if (m.type !== "new-buffer") continue;
        const now = monotonicNanos();
        if (count++ === 0) first = performance.now();
        latencyUs.push((now - Number(m.buffer.pts)) / 1000);
        for (const fd of m.fds) libc().close(fd);
        await client.send(encodeRelease(m.buffer.id, release));
      }
    } finally {
      client.close();
    }
    return { fps: (count - 1) / ((performance.now() - first) / 1000), latencyUs };
  });
}

/** from-gst through the bridge to a subscriber in this process. */
async function fromGstBridge(live: boolean, frames: number): Promise<Run> {
  const socket = name("bridge");
  const stream = name("from");
  return await withGst(sinkPipeline(socket, live, frames), async () => {
    using publisher = publish(stream);
    using subscription = await subscribe<{ pts: number }>(stream, {
      timeout: 5000,
      policy: "queue",
      depth: 4,
    });
    const bridge = await GstSourceBridge.connect(`@${socket}`, { timeout: 10_000 });
    const running = bridge.run(publisher);
    const latencyUs: number[] = [];
    let first = 0, count = 0;
    try {
      while (count < frames) {
        const frame = await subscription.receive({ timeout: 10_000 });
        const now = monotonicNanos();
        if (count++ === 0) first = performance.now();
        latencyUs.push((now - frame.meta!.pts) / 1000);
        frame.close();
      }
      await withTimeout(running, 10_000, "from-gst to reach EOS");
    } finally {
      bridge.close();
    }
    return { fps: (count - 1) / ((performance.now() - first) / 1000), latencyUs };
  });
}

/**
 * A 1080p BGRA publisher sending `frames` frames from a pool, every
 * `intervalMs` (0: flat out), once its subscriber's SUBSCRIBE arrived
 * (frames before that would go out under the newest-frame policy).
 */
async function produce(
  stream: string,
  frames: number,
  intervalMs: number,
  ready: Promise<unknown>,
) {
  using publisher = publish(stream);
  using pool = new SurfacePool({ width: WIDTH, height: HEIGHT, format: "BGRA", maxSurfaces: 8 });
  await ready;
  const until = performance.now() + 5000;
  while (!publisher.subscribers.some((s) => s.state === "subscribed")) {
    if (performance.now() > until) throw new Error("the subscriber never subscribed");
    await new Promise((r) => setTimeout(r, 2));
  }
  for (let i = 0; i < frames; i++) {
    using surface = await pool.acquire({ timeout: 5000 });
    await publisher.send(surface, undefined, { timeout: 5000 });
    if (intervalMs) await new Promise((r) => setTimeout(r, intervalMs));
  }
  await new Promise((r) => setTimeout(r, 200));
}

/** to-gst, direct: publisher → subscriber closing each frame. */
async function toGstDirect(frames: number, intervalMs: number): Promise<Run> {
  const stream = name("direct");
  let subscribed!: () => void;
  const ready = new Promise<void>((r) => subscribed = r);
  const producing = produce(stream, frames, intervalMs, ready);
  await new Promise((r) => setTimeout(r, 50));
  using subscription = await subscribe(stream, { timeout: 5000, policy: "queue", depth: 4 });
  subscribed();
  const latencyUs: number[] = [];
  let first = 0, count = 0;
  while (count < frames) {
    const frame = await subscription.receive({ timeout: 10_000 });
    latencyUs.push(nowMicros() - frame.timestamp);
    if (count++ === 0) first = performance.now();
    frame.close();
  }
  const fps = (count - 1) / ((performance.now() - first) / 1000);
  await producing;
  return { fps, latencyUs };
}

/**
 * to-gst through the bridge into `unixfdsrc ! fakesink`, counted when
 * GStreamer gave a frame back. Frames the bridge dropped (it holds at most
 * 8 for GStreamer) are counted apart.
 */
async function toGstBridge(frames: number, intervalMs: number): Promise<Run & { dropped: number }> {
  const stream = name("to");
  const socket = name("src");
  const latencyUs: number[] = [];
  let first = 0, last = 0, count = 0;
  const bridge = GstSinkBridge.listen(`@${socket}`, {
    onReleased: (timestamp) => {
      if (timestamp !== undefined) latencyUs.push(nowMicros() - timestamp);
      last = performance.now();
      if (count++ === 0) first = last;
    },
  });
  try {
    return await withGst(
      [
        "unixfdsrc",
        `socket-path=${socket}`,
        "socket-type=abstract",
        "!",
        "fakesink",
        "sync=false",
        "enable-last-sample=false", // else it keeps each buffer until the next one arrives
      ],
      async () => {
        await bridge.waitForClient(10_000);
        let subscribed!: () => void;
        const ready = new Promise<void>((r) => subscribed = r);
        const producing = produce(stream, frames, intervalMs, ready);
        await new Promise((r) => setTimeout(r, 50));
        const subscription = await subscribe(stream, { timeout: 5000, policy: "queue", depth: 4 });
        const running = bridge.run(subscription).catch(() => {});
        subscribed();
        await withTimeout(producing, 60_000, "the producer");
        subscription.close();
        await running;
        if (bridge.stats.copies !== 0) throw new Error("expected the zero-copy path");
        return {
          fps: (count - 1) / ((last - first) / 1000),
          latencyUs,
          dropped: bridge.stats.dropped,
        };
      },
    );
  } finally {
    bridge.close();
  }
}

const us = (v: number) => `${(v / 1000).toFixed(2)} ms`;
function summary(run: Run) {
  return {
    fps: Math.round(run.fps),
    p50_us: Math.round(percentile(run.latencyUs, 50)),
    p99_us: Math.round(percentile(run.latencyUs, 99)),
  };
}

console.log(
  `GStreamer bridge, ${WIDTH}x${HEIGHT} BGRA (${FRAMES} frames flat out, ${LIVE_FRAMES} at 30/s)`,
);

async function stage<T>(what: string, run: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await run();
  } finally {
    console.log(`  ${what}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
}

const results = {
  from_gst: {
    direct_fps:
      summary(await stage("from-gst direct, flat out", () => fromGstDirect(false, FRAMES))).fps,
    bridge_fps:
      summary(await stage("from-gst bridge, flat out", () => fromGstBridge(false, FRAMES))).fps,
    direct_latency: summary(
      await stage("from-gst direct, 30/s", () => fromGstDirect(true, LIVE_FRAMES)),
    ),
    bridge_latency: summary(
      await stage("from-gst bridge, 30/s", () => fromGstBridge(true, LIVE_FRAMES)),
    ),
  },
  to_gst: {
    direct_fps: summary(await stage("to-gst direct, flat out", () => toGstDirect(FRAMES, 0))).fps,
    bridge_fps: summary(await stage("to-gst bridge, flat out", () => toGstBridge(FRAMES, 0))).fps,
    direct_latency: summary(await stage("to-gst direct, 30/s", () => toGstDirect(LIVE_FRAMES, 33))),
    bridge_roundtrip: summary(
      await stage("to-gst bridge, 30/s", () => toGstBridge(LIVE_FRAMES, 33)),
    ),
  },
};
const f = results.from_gst, t = results.to_gst;
console.log(
  `from-gst  frames/s   direct unixfd client ${f.direct_fps}   through the bridge to a subscriber ${f.bridge_fps}`,
);
console.log(
  `from-gst  latency    direct p50 ${us(f.direct_latency.p50_us)} p99 ${
    us(f.direct_latency.p99_us)
  }` +
    `   bridge p50 ${us(f.bridge_latency.p50_us)} p99 ${us(f.bridge_latency.p99_us)}` +
    `   added p50 ${us(f.bridge_latency.p50_us - f.direct_latency.p50_us)}`,
);
console.log(
  `to-gst    frames/s   direct subscriber ${t.direct_fps}   through the bridge into GStreamer ${t.bridge_fps}`,
);
console.log(
  `to-gst    latency    direct p50 ${us(t.direct_latency.p50_us)} p99 ${
    us(t.direct_latency.p99_us)
  }` +
    `   bridge round trip to RELEASE p50 ${us(t.bridge_roundtrip.p50_us)} p99 ${
      us(t.bridge_roundtrip.p99_us)
    }`,
);
const jsonPath = option("--json");
if (jsonPath) await Deno.writeTextFile(jsonPath, JSON.stringify(results, null, 2) + "\n");
