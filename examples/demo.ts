/**
 * The main demo: streams an animated test card from a SurfacePool to a
 * consumer process for a few seconds. The consumer verifies every frame,
 * reports frames per second and handoff latency, and saves its last frame
 * as a PNG.
 *
 * Usage: deno task demo [--seconds 4] [--width 1280] [--height 720] [--fps 60]
 *
 * Frames are paced at `--fps` like a camera would; `--fps 0` sends as fast
 * as the pool allows (then the latency includes time frames wait in the
 * consumer's queue while it verifies the ones before).
 *
 * @module
 */

import { listen, Surface, SurfacePool } from "../mod.ts";
import { paint } from "./frames.ts";

// Say which permission is missing before anything fails deep inside a call.
const missing = (["ffi", "run", "read", "write"] as const).filter((name) =>
  Deno.permissions.querySync({ name }).state !== "granted"
);
if (missing.length) {
  console.error(
    `the demo needs ${missing.map((name) => `--allow-${name}`).join(" ")} ` +
      "(it calls libc through FFI, spawns a consumer process and writes a PNG): " +
      "run it with deno task demo",
  );
  Deno.exit(1);
}

function option(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const seconds = option("seconds", 4);
const width = option("width", 1280);
const height = option("height", 720);
const fps = option("fps", 60);
const png = "out/demo-last-frame.png";
const name = `demo-${Deno.pid}`;

using listener = listen(name);
const consumerScript = new URL("./consumer.ts", import.meta.url).pathname;
const consumer = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "--allow-ffi",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    consumerScript,
    name,
    png,
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();

try {
  using channel = await listener.accept({ timeout: 30000 });
  using pool = new SurfacePool({ width, height, format: "BGRA", maxSurfaces: 8 });
  const ids = new Set<number>();
  const encoder = new TextEncoder();
  const terminal = Deno.stdout.isTerminal();
  const started = performance.now();
  let t = 0, lastProgress = 0;
  while (performance.now() - started < seconds * 1000) {
    if (fps > 0) {
      const due = started + (t * 1000) / fps;
      if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
    }
    using surface = await pool.acquire({ timeout: 5000 });
    ids.add(surface.id);
    paint(surface, t);
    await channel.send(surface, { t });
    t++;
    const now = performance.now();
    // On a terminal a line that rewrites itself four times a second; in a pipe or a log file
    // (no carriage returns there) one plain line a second.
    if (now - lastProgress > (terminal ? 250 : 1000)) {
      lastProgress = now;
      const rate = Math.round(t / ((now - started) / 1000));
      const progress =
        `streaming ${width}x${height} BGRA: ${t} frames, ${rate} fps, pool ${pool.stats.allocated} surfaces`;
      await Deno.stdout.write(encoder.encode(terminal ? `\r${progress}   ` : `${progress}\n`));
    }
  }
  using end = Surface.create({ width: 2, height: 2 });
  await channel.send(end, { end: true });
  const output = new TextDecoder().decode((await consumer.output()).stdout);
  const line = output.split("\n").find((l) => l.startsWith("summary "));
  if (!line) throw new Error(`the consumer printed no summary:\n${output}`);
  const summary = JSON.parse(line.slice(8));
  console.log(`${terminal ? "\n" : ""}
sent            ${t} frames of ${width}x${height} BGRA in ${seconds} s (${
    fps > 0 ? `paced at ${fps} fps` : "unpaced"
  })
received        ${summary.frames} frames, ${summary.wrongFrames} with wrong pixels (verified pixel for pixel)
throughput      ${summary.framesPerSecond} frames/s at the consumer
handoff latency p50 ${summary.latencyP50Micros} µs, p99 ${summary.latencyP99Micros} µs (send to receipt)
pool            ${ids.size} distinct surfaces for ${t} frames (maxSurfaces 8)
last frame      ${
    summary.png ? `${Deno.realPathSync(summary.png)} (frame ${summary.pngFrame})` : "(none)"
  }`);
  if (summary.wrongFrames !== 0 || summary.frames !== t) Deno.exitCode = 1;
} finally {
  try {
    consumer.kill("SIGKILL");
  } catch {
    // already exited
  }
  await consumer.status;
}
