/**
 * The Deno side of `deno task bench`: one process (pinned by `bench/run.ts`
 * when the run pins) that measures one round of surfaceport and the copy
 * baseline against peers it spawns (`bench/peer.ts`), and prints one JSON
 * line of results. `bench/run.ts` starts one per round, between the rounds
 * of the C floors.
 *
 * `deno run ... bench/driver.ts '{"peerCpu":1,"quick":false}'`
 *
 * @module
 */

import { listen, Surface, SurfacePool } from "../mod.ts";
import { setDoorbellEnabled } from "../src/linux/doorbell.ts";
import { cpuUsage } from "node:process";
import { allocatedBytes, Child, denoStreamPingPong, percentile, sizeKey, SIZES } from "./common.ts";

interface DriverConfig {
  /** The core to pin peers to, or null for none. */
  peerCpu: number | null;
  /** Fewer iterations (for a smoke test). */
  quick: boolean;
  /** spinMicros of the low-latency mode. */
  spinMicros: number;
}

const config: DriverConfig = {
  peerCpu: null,
  quick: false,
  spinMicros: 200,
  ...JSON.parse(Deno.args[0] ?? "{}"),
};
const here = new URL(".", import.meta.url);
const peerScript = new URL("peer.ts", here).pathname;
const PEER_FLAGS = [
  "run",
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
];
const WAIT_MS = 15_000;

function spawnPeer(args: string[]): Child {
  return new Child(
    Deno.execPath(),
    [...PEER_FLAGS, peerScript, ...args],
    config.peerCpu ?? undefined,
  );
}

function channelName(tag: string): string {
  return `bench-${Deno.pid}-${tag}-${Math.random().toString(36).slice(2, 8)}`;
}

/** One session of round trips: latency samples, and the bytes each side allocated per round trip. */
interface RoundtripSession {
  samples: Float64Array;
  allocatedDriver: number;
  allocatedPeer: number | null;
}

/**
 * How parked waits wait: "poll", the default, on the shared poll (the peer
 * has no doorbell: neither side rings the other); "bell" with the doorbell
 * switched on in the peer too (both run with --allow-net).
 */
type Parking = "bell" | "poll";

/**
 * CPU milliseconds per second this process uses while one receive is parked
 * for 2 s on an idle channel (the peer connected, sending nothing).
 */
async function idleCpu(parking: Parking): Promise<number> {
  const name = channelName("idle");
  const listener = listen(name);
  const peer = spawnPeer(["echo", name, "0", "0", parking]);
  using surface = Surface.create({ width: 64, height: 64 });
  try {
    using channel = await listener.accept({ timeout: WAIT_MS });
    await peer.readLine(WAIT_MS);
    for (let i = 0; i < 3; i++) {
      await channel.send(surface); // the doorbells bind during these
      (await channel.receive({ timeout: WAIT_MS })).close();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    const start = cpuUsage();
    const t0 = performance.now();
    await channel.receive({ timeout: 2000 }).catch(() => {});
    const used = cpuUsage(start);
    return (used.user + used.system) / 1000 / ((performance.now() - t0) / 1000);
  } finally {
    listener.close();
    await peer.stop();
  }
}

/** Round trips of one surface: send, the peer touches the last byte and sends it back. */
async function roundtrip(
  width: number,
  height: number,
  spinMicros: number,
  iterations: number,
  warmup: number,
  parking: Parking,
): Promise<RoundtripSession> {
  const name = channelName("rt");
  const listener = listen(name, { spinMicros });
  // Allocation is measured over the second half of the timed round trips, on both sides: the
  // first thousands of frames of a fresh process also allocate for V8's own warm-up (feedback,
  // compiled code), which is not a per-frame cost.
  const measureFrom = Math.floor(iterations / 2);
  const peer = spawnPeer([
    "echo",
    name,
    String(spinMicros),
    String(warmup + measureFrom),
    parking,
  ]);
  const surface = Surface.create({ width, height });
  try {
    const channel = await listener.accept({ timeout: WAIT_MS });
    let samples: Float64Array, allocatedDriver: number;
    try {
      await peer.readLine(WAIT_MS);
      surface.bytes().fill(0x80);
      // Preallocated, so the measuring loop allocates nothing of its own.
      samples = new Float64Array(iterations);
      const options = { timeout: WAIT_MS };
      let allocatedAtStart = 0;
      for (let i = -warmup; i < iterations; i++) {
        if (i === measureFrom) allocatedAtStart = allocatedBytes();
        const t0 = performance.now();
        await channel.send(surface, undefined, options);
        const frame = await channel.receive(options);
        frame.close();
        const t1 = performance.now();
        if (i >= 0) samples[i] = (t1 - t0) * 1000;
      }
      allocatedDriver = (allocatedBytes() - allocatedAtStart) / (iterations - measureFrom);
    } finally {
      channel.close();
    }
    // The peer reports its own allocation once it sees the hang-up.
    const report = JSON.parse(await peer.readLine(WAIT_MS));
    return { samples, allocatedDriver, allocatedPeer: report.allocated_per_frame };
  } finally {
    surface.close();
    listener.close();
    await peer.stop();
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** The copy baseline: a frame's bytes through Deno's Unix stream socket, the peer answers one byte. */
async function copyFrames(width: number, height: number, iterations: number): Promise<number[]> {
  const bytes = width * height * 4;
  const path = await Deno.makeTempFile({ prefix: "surfaceport-bench-", suffix: ".sock" });
  await Deno.remove(path);
  const peer = spawnPeer(["copy", path, String(bytes)]);
  try {
    await peer.readLine(WAIT_MS);
    const conn = await Deno.connect({ transport: "unix", path });
    try {
      const frame = new Uint8Array(bytes).fill(0x80);
      const ack = new Uint8Array(1);
      const samples: number[] = [];
      for (let i = -2; i < iterations; i++) {
        const t0 = performance.now();
        await writeAll(conn, frame);
        let n: number | null = 0;
        const deadline = setTimeout(() => conn.close(), WAIT_MS);
        try {
          n = await conn.read(ack);
        } finally {
          clearTimeout(deadline);
        }
        if (n !== 1) throw new Error("copy peer did not answer");
        const t1 = performance.now();
        if (i >= 0) samples.push((t1 - t0) * 1000);
      }
      return samples;
    } finally {
      try {
        conn.close();
      } catch {
        // closed by the timeout
      }
    }
  } finally {
    await peer.stop();
    await Deno.remove(path).catch(() => {});
  }
}

/** Pipelined handoffs per second: acquire from a pool, send, close; the peer closes each frame. */
async function pipelined(
  spinMicros: number,
  milliseconds: number,
  parking: Parking,
): Promise<number> {
  const name = channelName("pipe");
  const listener = listen(name, { spinMicros });
  const peer = spawnPeer(["sink", name, String(spinMicros), "0", parking]);
  const pool = new SurfacePool({ width: 1920, height: 1080, maxSurfaces: 4 });
  try {
    const channel = await listener.accept({ timeout: WAIT_MS });
    try {
      await peer.readLine(WAIT_MS);
      const run = async (ms: number) => {
        let count = 0;
        const start = performance.now();
        const end = start + ms;
        let now = start;
        while (now < end) {
          const surface = await pool.acquire({ timeout: WAIT_MS });
          await channel.send(surface, undefined, { timeout: WAIT_MS });
          surface.close();
          count++;
          now = performance.now();
        }
        return count / ((now - start) / 1000);
      };
      await run(200); // warm-up
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

// One round of every measurement; bench/run.ts runs several rounds, interleaved with the C
// floors, so that a burst of noise from the rest of the machine hits every series alike.
const iterations = config.quick ? 200 : 2000;
// Long enough that V8 has tiered the whole round trip up: a fresh process's first ~10,000 frames
// also allocate feedback and compiled code, which is start-up cost, not a per-frame cost.
const warmup = config.quick ? 20 : 20_000;
// This process may be rung (its peers decide: a "poll" peer neither rings nor is rung).
setDoorbellEnabled(true);
const MODES = [
  ["default", 0, "poll"],
  ["doorbell", 0, "bell"],
  ["lowLatency", config.spinMicros, "poll"],
] as const;
const summary = (samples: ArrayLike<number>) => {
  const list = Array.from(samples);
  return {
    p50: percentile(list, 50),
    p99: percentile(list, 99),
    mean: list.reduce((a, b) => a + b, 0) / list.length,
  };
};
const result = {
  spinMicros: config.spinMicros,
  roundtrip: {} as Record<string, Record<string, ReturnType<typeof summary>>>,
  allocated: {} as Record<string, Record<string, { driver: number; peer: number | null }>>,
  copy: {} as Record<string, ReturnType<typeof summary>>,
  streamPingPong: {} as ReturnType<typeof summary>,
  pipelined: {} as Record<string, number>,
  idleCpuMsPerS: {} as Record<Parking, number>,
};
for (const [mode, spin, parking] of MODES) {
  result.roundtrip[mode] = {};
  result.allocated[mode] = {};
  for (const [width, height] of SIZES) {
    const session = await roundtrip(width, height, spin, iterations, warmup, parking);
    result.roundtrip[mode][sizeKey(width, height)] = summary(session.samples);
    result.allocated[mode][sizeKey(width, height)] = {
      driver: session.allocatedDriver,
      peer: session.allocatedPeer,
    };
  }
  result.pipelined[mode] = await pipelined(spin, config.quick ? 300 : 1500, parking);
}
for (const parking of ["bell", "poll"] as const) {
  result.idleCpuMsPerS[parking] = await idleCpu(parking);
}
result.streamPingPong = summary(
  await denoStreamPingPong(spawnPeer, iterations, config.quick ? 20 : 3000, WAIT_MS),
);
for (const [width, height] of SIZES) {
  const frames = Math.round((config.quick ? 2e8 : 1.5e9) / (width * height * 4));
  const samples = await copyFrames(width, height, Math.max(5, Math.min(frames, 200)));
  result.copy[sizeKey(width, height)] = summary(samples);
}
console.log(JSON.stringify(result));
