/**
 * One camera, two consumers: a publisher streams an animated test card at
 * 60 fps from a `SurfacePool` to a fast "preview" process and a
 * deliberately slow "model" process (it takes 50 ms per frame). Both
 * subscribe with the default `policy: "latest"`: the preview sees (nearly)
 * every frame, the model sees the newest one each time it is ready — and
 * the camera never waits for either. Each consumer checks every frame it
 * gets pixel for pixel and reports what it saw; the camera reports how
 * long its `send`s took and what each subscriber got.
 *
 * Usage:
 *   deno run --allow-ffi --allow-read --allow-write --allow-run --allow-env \
 *     examples/fanout.ts [--seconds 3] [--slow-ms 50]
 *
 * @module
 */

import { publish, subscribe, SurfacePool } from "../mod.ts";
import { countWrongPixels, paint } from "./frames.ts";

function option(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const WIDTH = 320, HEIGHT = 240, FPS = 60;

/** A consumer process: `fanout.ts --consumer ROLE NAME WORK_MS`. */
async function consume(role: string, name: string, workMs: number): Promise<void> {
  using subscription = await subscribe<{ t: number; end?: boolean }>(name, { timeout: 10000 });
  let frames = 0, wrong = 0, last = -1, gaps = 0;
  for await (const frame of subscription) {
    using _ = frame;
    if (frame.meta?.end) break;
    frames++;
    if (countWrongPixels(frame.surface, frame.meta!.t) !== 0) wrong++;
    if (last >= 0 && frame.sequence > last + 1) gaps++;
    last = frame.sequence;
    // The "work": a slow consumer keeps the frame (so the pool cannot reuse it) meanwhile.
    if (workMs > 0) await new Promise((resolve) => setTimeout(resolve, workMs));
  }
  const { dropped } = subscription.stats;
  console.log(
    `${role}: ${frames} frames, ${wrong} with wrong pixels, ${dropped} skipped ` +
      `(${gaps} gaps), last frame ${last}`,
  );
}

/** The camera: publishes for `seconds`, with two consumer processes. */
async function camera(seconds: number, slowMs: number): Promise<void> {
  const name = `fanout-${Deno.pid}`;
  using publisher = publish<{ t: number; end?: boolean }>(name);
  using pool = new SurfacePool({ width: WIDTH, height: HEIGHT, format: "BGRA", maxSurfaces: 6 });
  const self = new URL(import.meta.url).pathname;
  const spawn = (role: string, workMs: number) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        self,
        "--consumer",
        role,
        name,
        String(workMs),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  const consumers = [spawn("preview", 0), spawn("model", slowMs)];
  try {
    const deadline = performance.now() + 10000;
    while (publisher.subscribers.filter((s) => s.state === "subscribed").length < 2) {
      if (performance.now() > deadline) throw new Error("the consumers did not subscribe");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const frames = Math.round(seconds * FPS);
    const sendMs: number[] = [];
    const start = performance.now();
    for (let t = 0; t < frames; t++) {
      // Pace like a camera: frame t is due at start + t / FPS.
      const due = start + (t * 1000) / FPS;
      if (due > performance.now()) {
        await new Promise((resolve) => setTimeout(resolve, due - performance.now()));
      }
      using surface = await pool.acquire({ timeout: 1000 });
      paint(surface, t);
      const before = performance.now();
      await publisher.send(surface, { t });
      sendMs.push(performance.now() - before);
    }
    const bySubscriber = publisher.subscribers.map((s) => `${s.sent} sent / ${s.dropped} dropped`);
    sendMs.sort((a, b) => a - b);
    console.log(
      `camera: ${frames} frames at ${FPS} fps, send p50 ${
        sendMs[sendMs.length >> 1].toFixed(3)
      } ms (max ${sendMs[sendMs.length - 1].toFixed(2)} ms), ` +
        `per subscriber: ${bySubscriber.join(", ")}`,
    );
    // The end marker is the newest frame, so even the slow consumer gets it next.
    using surface = await pool.acquire({ timeout: 1000 });
    await publisher.send(surface, { t: -1, end: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exits = await Promise.race([
      Promise.all(consumers.map((c) => c.status)),
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 10000)),
    ]);
    clearTimeout(timer);
    if (!exits || exits.some((s) => !s.success)) throw new Error("a consumer failed");
  } finally {
    for (const consumer of consumers) {
      try {
        consumer.kill("SIGKILL");
      } catch {
        // exited
      }
      await consumer.status;
    }
  }
}

if (Deno.args[0] === "--consumer") {
  await consume(Deno.args[1], Deno.args[2], Number(Deno.args[3]));
} else {
  await camera(option("seconds", 3), option("slow-ms", 50));
}
