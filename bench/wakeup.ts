/**
 * Where a parked round trip's time goes (issue 24): the wake-up alone against
 * the work around it, interleaved in rounds on the same pinning, so that the
 * ratios hold on a shared machine.
 *
 * `taskset -c 0 deno run --allow-all bench/wakeup.ts [ROUNDS] [ITERATIONS]`
 *
 * Each round runs, producer side on core 0 (this process must be started on
 * it) and the peer on core 1:
 *
 * - the C floors (`bench/floor.c`): `roundtrip` 640x480 (the blocking floor of
 *   the default mode: two descriptor handoffs), and the 1-byte ping-pongs
 *   `pingpong-stream` (blocking `read`), `pingpong-stream-epoll` (the
 *   reactor's way: `read`, `epoll_wait`, `read`) and `pingpong-seqpacket`;
 * - Deno's own stream ping-pong (`Deno.connect` / `Deno.listen`, one byte,
 *   no FFI: `bench/peer.ts copy` with 1-byte frames);
 * - the park alone: 16-byte control messages back and forth over the Linux
 *   backend's own connection (`bench/peer.ts control`: no descriptor, no
 *   surface, no `Frame`), on the shared poll (on its thread, and as
 *   nonblocking calls) and with the doorbell;
 * - surfaceport's default mode (`spinMicros` 0), 640x480 round trips, the
 *   same three ways.
 *
 * Prints one line per measurement and round, and the ratios to the same
 * round's blocking C floor.
 *
 * @module
 */

import { listen, Surface } from "../mod.ts";
import { setDoorbellEnabled } from "../src/linux/doorbell.ts";
import { setPollThreadEnabled } from "../src/linux/poller.ts";
import { linuxBackend } from "../src/linux/backend.ts";
import {
  Child,
  CONTROL_LIMITS,
  CONTROL_MESSAGE,
  denoStreamPingPong,
  percentile,
} from "./common.ts";
import { buildFloor, runFloor } from "./floors.ts";

const rounds = Number(Deno.args[0] ?? 3);
const iterations = Number(Deno.args[1] ?? 3000);
const warmup = 3000;
const cpus = { producer: 0, consumer: 1 };
const peerScript = new URL("peer.ts", import.meta.url).pathname;
const PEER_FLAGS = [
  "run",
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
];
const WAIT_MS = 15_000;

function peer(args: string[]): Child {
  return new Child(Deno.execPath(), [...PEER_FLAGS, peerScript, ...args], cpus.consumer);
}

/** How a park waits: the shared poll on its thread, as nonblocking calls, or the doorbell. */
type Parking = "poll" | "call" | "bell";

async function library(parking: Parking): Promise<number[]> {
  setPollThreadEnabled(parking !== "call");
  const name = `wakeup-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const listener = listen(name);
  const child = peer(["echo", name, "0", "0", parking]);
  const surface = Surface.create({ width: 640, height: 480 });
  try {
    using channel = await listener.accept({ timeout: WAIT_MS });
    await child.readLine(WAIT_MS);
    const options = { timeout: WAIT_MS };
    const samples: number[] = [];
    for (let i = -warmup; i < iterations; i++) {
      const t0 = performance.now();
      await channel.send(surface, undefined, options);
      (await channel.receive(options)).close();
      if (i >= 0) samples.push((performance.now() - t0) * 1000);
    }
    return samples;
  } finally {
    surface.close();
    listener.close();
    await child.stop();
  }
}

async function control(parking: Parking): Promise<number[]> {
  setPollThreadEnabled(parking !== "call");
  const name = `wakeup-ctl-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const listener = linuxBackend.listen(name, () => true, CONTROL_LIMITS);
  const child = peer(["control", name, "0", "0", parking]);
  try {
    const connection = await listener.accept();
    try {
      await child.readLine(WAIT_MS);
      const samples: number[] = [];
      for (let i = -warmup; i < iterations; i++) {
        const t0 = performance.now();
        await connection.sendControl(CONTROL_MESSAGE, t0 + WAIT_MS);
        await connection.receiveControl(t0 + WAIT_MS);
        if (i >= 0) samples.push((performance.now() - t0) * 1000);
      }
      return samples;
    } finally {
      connection.close();
    }
  } finally {
    listener.close();
    await child.stop();
  }
}

setDoorbellEnabled(true); // this side may be rung; the peer decides ("poll" peers never ring)
const dir = await Deno.makeTempDir({ prefix: "surfaceport-wakeup-" });
try {
  const { exe, skipped } = await buildFloor(dir, "cc");
  if (!exe) throw new Error(skipped);
  const floor = async (mode: string) => {
    const r = await runFloor(exe, [mode, "640", "480", String(iterations), "500"], cpus);
    return { p50: r.p50_us, p99: r.p99_us };
  };
  const stats = (samples: number[]) => ({
    p50: percentile(samples, 50),
    p99: percentile(samples, 99),
  });
  for (let round = 0; round < rounds; round++) {
    const results: [string, { p50: number; p99: number }][] = [
      ["C roundtrip (blocking floor)", await floor("roundtrip")],
      ["C pingpong-stream", await floor("pingpong-stream")],
      ["C pingpong-stream-epoll", await floor("pingpong-stream-epoll")],
      ["C pingpong-seqpacket", await floor("pingpong-seqpacket")],
      ["Deno stream ping-pong", stats(await denoStreamPingPong(peer, iterations, warmup, WAIT_MS))],
      ["park alone, shared poll", stats(await control("poll"))],
      ["park alone, poll as calls", stats(await control("call"))],
      ["park alone, doorbell", stats(await control("bell"))],
      ["default, shared poll", stats(await library("poll"))],
      ["default, poll as calls", stats(await library("call"))],
      ["default, doorbell", stats(await library("bell"))],
    ];
    const base = results[0][1];
    console.log(
      `round ${round + 1} (load ${(await Deno.readTextFile("/proc/loadavg")).split(" ")[0]})`,
    );
    for (const [what, { p50, p99 }] of results) {
      console.log(
        `  ${what.padEnd(30)} p50 ${p50.toFixed(1).padStart(6)} µs  p99 ${
          p99.toFixed(0).padStart(5)
        } µs   p50/floor ${(p50 / base.p50).toFixed(2)}  p99/floor ${(p99 / base.p99).toFixed(2)}`,
      );
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
