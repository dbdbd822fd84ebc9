/**
 * The surfaceport measurements of `bench/driver.ts`, written against
 * `node:` modules only so that Node and Bun run them as they are (`bench/run.ts`
 * runs this under each beside the Deno driver, in the same rounds as the C
 * floors): 1920x1080 round trips in the default and the low-latency mode,
 * pipelined handoffs per second, and the cost of one wait off the main thread
 * (a `nonblocking` `poll` that returns at once: the hop to the worker and back).
 *
 *   <runtime> bench/runtime_driver.ts '{"peerCpu":1,"quick":false}'
 *   <runtime> bench/runtime_driver.ts echo|sink NAME SPIN_MICROS
 *
 * Prints one JSON line (the driver) or `ready` (a peer).
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";
import { connect, listen, PeerClosedError, Surface, SurfacePool } from "../mod.ts";
import { runtime } from "../ffi/runtime.ts";
import { libc } from "../ffi/linux.ts";

const WAIT_MS = 15_000;
const [mode, name, spinArg] = process.argv.slice(2);
const say = (line: string) => process.stdout.write(`${line}\n`);

async function echo(name: string, spinMicros: number): Promise<void> {
  const channel = await connect(name, { timeout: WAIT_MS, spinMicros });
  say("ready");
  try {
    for (;;) {
      const frame = await channel.receive();
      const bytes = frame.surface.bytes();
      bytes[bytes.length - 1]++;
      await channel.send(frame.surface, undefined, { timeout: WAIT_MS });
      frame.close();
    }
  } catch (error) {
    if (!(error instanceof PeerClosedError)) throw error;
  } finally {
    channel.close();
  }
}

async function sink(name: string, spinMicros: number): Promise<void> {
  const channel = await connect(name, { timeout: WAIT_MS, spinMicros });
  say("ready");
  try {
    for await (const frame of channel) {
      const bytes = frame.surface.bytes();
      bytes[bytes.length - 1]++;
      frame.close();
    }
  } finally {
    channel.close();
  }
}

/** A peer process of this script under this runtime (pinned to `cpu` with taskset if given). */
function startPeer(args: string[], cpu: number | null) {
  const self = new URL(import.meta.url).pathname;
  const command = runtime.name === "deno"
    ? [process.execPath, "run", "-A", self, ...args]
    : [process.execPath, ...(runtime.name === "node" ? ["--no-warnings"] : []), self, ...args];
  const argv = cpu === null ? command : ["taskset", "-c", String(cpu), ...command];
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("peer: no ready line")), WAIT_MS);
    child.stdout!.on("data", (chunk: Uint8Array) => {
      if (new TextDecoder().decode(chunk).includes("ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on("exit", () => reject(new Error("peer exited")));
  });
  const stopped = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return {
    ready,
    async stop() {
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await stopped;
      clearTimeout(timer);
    },
  };
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

let counter = 0;
const channelName = (tag: string) => `bench-${runtime.name}-${process.pid}-${tag}-${counter++}`;

async function roundtrip(
  spinMicros: number,
  iterations: number,
  warmup: number,
  cpu: number | null,
) {
  const name = channelName("rt");
  const listener = listen(name, { spinMicros });
  const peer = startPeer(["echo", name, String(spinMicros)], cpu);
  const surface = Surface.create({ width: 1920, height: 1080 });
  try {
    const channel = await listener.accept({ timeout: WAIT_MS });
    try {
      await peer.ready;
      surface.bytes().fill(0x80);
      const samples = new Float64Array(iterations);
      const options = { timeout: WAIT_MS };
      for (let i = -warmup; i < iterations; i++) {
        const t0 = performance.now();
        await channel.send(surface, undefined, options);
        const frame = await channel.receive(options);
        frame.close();
        if (i >= 0) samples[i] = (performance.now() - t0) * 1000;
      }
      samples.sort();
      return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
    } finally {
      channel.close();
    }
  } finally {
    surface.close();
    listener.close();
    await peer.stop();
  }
}

async function pipelined(spinMicros: number, milliseconds: number, cpu: number | null) {
  const name = channelName("pipe");
  const listener = listen(name, { spinMicros });
  const peer = startPeer(["sink", name, String(spinMicros)], cpu);
  const pool = new SurfacePool({ width: 1920, height: 1080, maxSurfaces: 4 });
  try {
    const channel = await listener.accept({ timeout: WAIT_MS });
    try {
      await peer.ready;
      const run = async (ms: number) => {
        let count = 0;
        const start = performance.now();
        let now = start;
        while (now < start + ms) {
          const surface = await pool.acquire({ timeout: WAIT_MS });
          await channel.send(surface, undefined, { timeout: WAIT_MS });
          surface.close();
          count++;
          now = performance.now();
        }
        return count / ((now - start) / 1000);
      };
      await run(200);
      return await run(milliseconds);
    } finally {
      channel.close();
    }
  } finally {
    pool.close();
    listener.close();
    await peer.stop();
  }
}

/** One `nonblocking` poll of a ready descriptor: the hop off the main thread and back (µs). */
async function offThreadHop(iterations: number) {
  const lib = libc();
  const fd = lib.eventfd(1, 0x80000 /* EFD_CLOEXEC */);
  const fds = runtime.sharedBytes(8);
  new DataView(fds.buffer).setInt32(0, fd, true);
  new DataView(fds.buffer).setInt16(4, 1, /* POLLIN */ true);
  const samples = new Float64Array(iterations);
  try {
    for (let i = -100; i < iterations; i++) {
      const t0 = performance.now();
      await lib.poll_wait(fds, 1n, 0);
      if (i >= 0) samples[i] = (performance.now() - t0) * 1000;
    }
  } finally {
    lib.close(fd);
  }
  samples.sort();
  return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

if (mode === "echo") {
  await echo(name, Number(spinArg));
} else if (mode === "sink") {
  await sink(name, Number(spinArg));
} else {
  const config = {
    peerCpu: null as number | null,
    quick: false,
    spinMicros: 200,
    ...JSON.parse(mode ?? "{}"),
  };
  const iterations = config.quick ? 200 : 2000;
  const warmup = config.quick ? 20 : 10_000;
  const result = {
    runtime: `${runtime.name} ${runtime.version}`,
    spinMicros: config.spinMicros,
    roundtrip: {
      default: await roundtrip(0, iterations, warmup, config.peerCpu),
      lowLatency: await roundtrip(config.spinMicros, iterations, warmup, config.peerCpu),
    },
    pipelined: {
      default: await pipelined(0, config.quick ? 300 : 1500, config.peerCpu),
      lowLatency: await pipelined(config.spinMicros, config.quick ? 300 : 1500, config.peerCpu),
    },
    offThreadHop: await offThreadHop(config.quick ? 200 : 2000),
  };
  say(JSON.stringify(result));
}
