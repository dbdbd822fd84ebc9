/**
 * Latency and bandwidth of `cli send` / `cli receive` (every mode) and of a
 * round trip through PipeWire (`to-pipewire` then `from-pipewire`), and of
 * from-pipewire alone behind a native producer that hands memfds (`pwdirect`:
 * no copy; tests/fixtures/pipewire_memfd_producer.ts), at
 * 1920×1080 NV12 30/s by default, against a plain surfaceport hop measured in
 * the same run (the floor). Needs root (network namespaces), the GStreamer
 * chroot with its extras (scripts/gst-chroot.sh), and runs ~10 s a mode.
 *
 * Frames are a detailed texture that moves every frame (so the encoders work
 * as on camera content). Latency: each frame carries its number in 16 large
 * black/white blocks of its luma (they survive VP8 and H.264); the receiving subscriber, in this
 * process, looks the number up in the send times. Bandwidth: bytes the
 * sender's veth transmitted.
 * The namespaces, the PipeWire daemon and the memfd producer, and their
 * removal however the run ends, are `bench/network_setup.ts`.
 *
 *   deno run -A bench/network.ts [--width 1920 --height 1080 --seconds 8 --modes raw,vp8,h264,srt,pipewire,pwdirect]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { publish, subscribe, SurfacePool } from "../mod.ts";
import {
  CHROOT,
  command,
  onSignal,
  removeMade,
  removeStale,
  run,
  startMemfdProducer,
  undoable,
  withNet,
  withPipeWire,
} from "./network_setup.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    width: { type: "string", default: "1920" },
    height: { type: "string", default: "1080" },
    seconds: { type: "string", default: "8" },
    modes: { type: "string", default: "floor,raw,vp8,h264,srt,pipewire,pwdirect" },
    bitrate: { type: "string", default: "4000" },
  },
});
const W = Number(values.width);
const H = Number(values.height);
const SECONDS = Number(values.seconds);
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const BLOCK = 32;
// Each frame's number is 16 blocks side by side in its top rows: a narrower frame would cut it
// off, and every latency would come from a misread number.
if (!(W >= 16 * BLOCK && H >= BLOCK && W % 2 === 0 && H % 2 === 0 && SECONDS > 2)) {
  console.error(
    `bench/network.ts: --width ${values.width} --height ${values.height} --seconds ` +
      `${values.seconds}: needs an even width of at least ${16 * BLOCK} (the frame number's ` +
      `blocks), an even height of at least ${BLOCK}, and more than 2 s (the first 2 are warm-up)`,
  );
  Deno.exit(2);
}

function spawn(prefix: string[], args: string[], env: Record<string, string> = {}) {
  const words = [...prefix, Deno.execPath(), "run", "-A", MAIN, ...args];
  return command(words[0], words.slice(1), {
    env: { SURFACEPORT_GST_LAUNCH: `chroot ${CHROOT} gst-launch-1.0`, ...env },
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function stopChild(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, 5000);
  await child.status;
  clearTimeout(timer);
}

function writeNumber(y: Uint8Array, stride: number, n: number): void {
  for (let bit = 0; bit < 16; bit++) {
    const value = (n >> bit) & 1 ? 235 : 16;
    for (let row = 0; row < BLOCK; row++) {
      y.fill(value, row * stride + bit * BLOCK, row * stride + (bit + 1) * BLOCK);
    }
  }
}

function readNumber(y: Uint8Array, stride: number): number {
  let n = 0;
  for (let bit = 0; bit < 16; bit++) {
    if (y[(BLOCK >> 1) * stride + bit * BLOCK + (BLOCK >> 1)] > 128) n |= 1 << bit;
  }
  return n;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;
}

/** A detailed texture that moves every frame, so the encoders have real work (camera-like). */
const TEXTURE = new Uint8Array(W * 4 + 4096).map((_, i) =>
  (i * 7 + ((i >> 3) * 13) ^ (i >> 5)) & 255
);

function paintTexture(
  plane: Uint8Array,
  stride: number,
  rowBytes: number,
  rows: number,
  n: number,
) {
  for (let row = 0; row < rows; row++) {
    const offset = (n * 8 + row * 13) % 4096;
    plane.set(TEXTURE.subarray(offset, offset + rowBytes), row * stride);
  }
}

/** Publishes NV12 (or BGRA) frames at 30/s under `name`, recording send times. */
async function produce(
  name: string,
  format: "420v" | "BGRA",
  sent: Map<number, number>,
  signal: AbortSignal,
) {
  using publisher = publish(name);
  using pool = new SurfacePool({ width: W, height: H, format, maxSurfaces: 10 });
  const start = performance.now();
  for (let n = 0; !signal.aborted; n++) {
    {
      using surface = await pool.acquire({ timeout: 5000 });
      const plane = surface.bytes(0);
      const stride = surface.planes[0].bytesPerRow;
      paintTexture(plane, stride, format === "BGRA" ? W * 4 : W, H, n);
      if (format === "BGRA") {
        // Gray blocks in BGRA: every channel the same, so luma equals it.
        for (let bit = 0; bit < 16; bit++) {
          const value = (n >> bit) & 1 ? 235 : 16;
          for (let row = 0; row < BLOCK; row++) {
            plane.fill(value, row * stride + bit * BLOCK * 4, row * stride + (bit + 1) * BLOCK * 4);
          }
        }
      } else {
        writeNumber(plane, stride, n & 0xffff);
        paintTexture(surface.bytes(1), surface.planes[1].bytesPerRow, W, H / 2, n + 7);
      }
      sent.set(n & 0xffff, performance.now());
      await publisher.send(surface, { n });
    }
    const next = start + (n + 1) * (1000 / 30);
    await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
  }
}

async function consume(
  name: string,
  sent: Map<number, number>,
  ms: number,
  bgra: boolean | "memfd",
) {
  using frames = await subscribe(name, { timeout: 30000 });
  const latencies: number[] = [];
  let count = 0;
  const end = performance.now() + ms;
  const warm = performance.now() + 2000;
  while (performance.now() < end) {
    using frame = await frames.receive({ timeout: 10000 });
    const now = performance.now();
    const plane = frame.surface.bytes(0);
    const stride = frame.surface.planes[0].bytesPerRow;
    let n: number;
    if (bgra === "memfd") {
      n = plane[1]; // the memfd producer's frame number, mod 256: green (or, as RGBA, still byte 1)
    } else if (bgra) {
      n = 0;
      for (let bit = 0; bit < 16; bit++) {
        if (plane[(BLOCK >> 1) * stride + (bit * BLOCK + (BLOCK >> 1)) * 4 + 1] > 128) {
          n |= 1 << bit;
        }
      }
    } else n = readNumber(plane, stride);
    const at = sent.get(n);
    // (A time 4 s old or more is a frame number's previous round: the memfd producer counts mod 256.)
    if (now > warm && at !== undefined && now - at < 4000) {
      latencies.push(now - at);
      count++;
    }
  }
  latencies.sort((a, b) => a - b);
  return {
    count,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    fps: count / ((ms - 2000) / 1000),
  };
}

/** Measures `mode` with sockets in `dir`, adding its line to `results`. */
async function measure(mode: string, dir: string, results: string[]): Promise<void> {
  const sent = new Map<number, number>();
  const stop = new AbortController();
  const source = `${dir}/${mode}-src.sock`;
  const out = `${dir}/${mode}-out.sock`;
  if (mode === "floor") {
    const producing = produce(source, "420v", sent, stop.signal);
    const r = await consume(source, sent, SECONDS * 1000, false);
    stop.abort();
    await producing;
    results.push(
      `floor (publish → subscribe, same host): ${r.fps.toFixed(1)} frames/s  latency p50 ${
        r.p50.toFixed(2)
      } ms  p99 ${r.p99.toFixed(2)} ms`,
    );
    return;
  }
  if (mode === "pwdirect") {
    // A native producer handing memfds → from-pipewire (the same memfds, no copy) → a subscriber.
    await withPipeWire(async (runtime) => {
      const env = {
        XDG_RUNTIME_DIR: runtime,
        SURFACEPORT_PIPEWIRE_SOCKET: `${CHROOT}${runtime}/pipewire-0`,
      };
      const node = `spmemfd${Deno.pid}`;
      const producer = await startMemfdProducer(runtime, node, W, H, sent);
      let from: Deno.ChildProcess | undefined;
      try {
        await new Promise((r) => setTimeout(r, 1500));
        from = spawn([], ["from-pipewire", node, out], env);
        const r = await consume(out, sent, SECONDS * 1000, "memfd");
        results.push(
          `pwdirect (a native producer's BGRA memfds → from-pipewire, no copy): ${
            r.fps.toFixed(1)
          } frames/s  latency p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms`,
        );
      } catch (error) {
        results.push(`${mode}: failed: ${(error as Error).message}`);
      } finally {
        if (from) await stopChild(from);
        await stopChild(producer);
      }
    });
    return;
  }
  if (mode === "pipewire") {
    await withPipeWire(async (runtime) => {
      const env = {
        XDG_RUNTIME_DIR: runtime,
        SURFACEPORT_PIPEWIRE_SOCKET: `${CHROOT}${runtime}/pipewire-0`,
      };
      const producing = produce(source, "BGRA", sent, stop.signal);
      let to: Deno.ChildProcess | undefined;
      let from: Deno.ChildProcess | undefined;
      try {
        to = spawn([], ["to-pipewire", source, "--node-name", `spbench${Deno.pid}`], env);
        await new Promise((r) => setTimeout(r, 1500));
        from = spawn([], ["from-pipewire", `spbench${Deno.pid}`, out], env);
        const r = await consume(out, sent, SECONDS * 1000, true);
        results.push(
          `pipewire round trip (BGRA: to-pipewire → from-pipewire): ${
            r.fps.toFixed(1)
          } frames/s  latency p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms`,
        );
      } catch (error) {
        results.push(`pipewire: failed: ${(error as Error).message}`);
      } finally {
        stop.abort();
        await producing.catch(() => {});
        if (from) await stopChild(from);
        if (to) await stopChild(to);
      }
    });
    return;
  }
  await withNet(async (a, b, dev) => {
    const producing = produce(source, "420v", sent, stop.signal);
    const receiveArgs = mode === "raw"
      ? ["--format", "420v", "--size", `${W}x${H}`]
      : ["--format", "420v"];
    const receiver = spawn(b, ["receive", "10.232.0.2:5004", out, "--mode", mode, ...receiveArgs]);
    const sender = spawn(a, [
      "send",
      source,
      "10.232.0.2:5004",
      "--mode",
      mode,
      "--bitrate",
      values.bitrate!,
    ]);
    const bytes = async () =>
      Number(
        (await run("ip", [
          "netns",
          "exec",
          a.at(-1)!,
          "cat",
          `/sys/class/net/${dev}/statistics/tx_bytes`,
        ])).trim(),
      );
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const before = await bytes();
      const began = performance.now();
      const r = await consume(out, sent, SECONDS * 1000, false);
      const after = await bytes();
      if (!after) console.error(`no tx_bytes for ${dev}`);
      const mbits = (after - before) * 8 / ((performance.now() - began) / 1000) / 1e6;
      results.push(
        `${mode} (veth between namespaces): ${r.fps.toFixed(1)} frames/s  latency p50 ${
          r.p50.toFixed(2)
        } ms  p99 ${r.p99.toFixed(2)} ms  ${mbits.toFixed(1)} Mbit/s on the wire`,
      );
    } catch (error) {
      results.push(`${mode}: failed: ${(error as Error).message}`);
    } finally {
      stop.abort();
      await producing.catch(() => {});
      await stopChild(sender);
      await stopChild(receiver);
    }
  });
}

removeStale();
// No finally runs on a signal: what this run made is removed by onSignal then.
for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, onSignal);
const dir = await Deno.makeTempDir({ prefix: "sp-bench-net-" });
const removeTemp = undoable(() => Deno.removeSync(dir, { recursive: true }));
const results: string[] = [];
try {
  for (const mode of values.modes!.split(",")) await measure(mode, dir, results);
} finally {
  removeTemp();
  removeMade(); // a producer's directory whose stdout has not ended yet
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(signal, onSignal);
}
console.log(
  `${W}x${H} NV12 (PipeWire: BGRA) at 30 frames/s, ${SECONDS} s a mode (first 2 s not counted):`,
);
for (const line of results) console.log(`  ${line}`);
