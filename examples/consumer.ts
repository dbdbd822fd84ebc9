/**
 * The demo's consumer: connects to the producer's channel, verifies every
 * frame pixel for pixel, measures handoff latency (send timestamp to
 * receipt), and writes the last frame it received as a PNG.
 *
 * Usage: deno run --allow-ffi --allow-write examples/consumer.ts NAME PNG_PATH
 *
 * @module
 */

import { encode } from "fast-png";
import { connect, nowMicros } from "../mod.ts";
import { countWrongPixels, toRgba } from "./frames.ts";

const [name, pngPath] = Deno.args;
const channel = await connect(name, { timeout: 10000 });

const latencies: number[] = [];
let frames = 0, wrongFrames = 0;
let last: Uint8Array | undefined, lastSize = [0, 0];
const started = performance.now();

for await (const frame of channel) {
  const latency = nowMicros() - frame.timestamp;
  const meta = frame.meta as { t?: number; end?: boolean };
  if (meta.end) {
    frame.close();
    break;
  }
  latencies.push(latency);
  frames++;
  if (countWrongPixels(frame.surface, meta.t!) !== 0) wrongFrames++;
  if (meta.t! % 30 === 0) {
    last = toRgba(frame.surface);
    lastSize = [frame.surface.width, frame.surface.height];
  }
  frame.close();
}
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
if (last) {
  await Deno.mkdir(new URL(".", `file://${Deno.realPathSync(".")}/${pngPath}`), { recursive: true })
    .catch(() => {});
  await Deno.writeFile(
    pngPath,
    encode({ width: lastSize[0], height: lastSize[1], data: last, channels: 4 }),
  );
}
console.log(
  "summary " +
    JSON.stringify({
      frames,
      wrongFrames,
      framesPerSecond: Math.round(frames / seconds),
      latencyP50Micros: at(0.5),
      latencyP99Micros: at(0.99),
      png: last ? pngPath : null,
    }),
);
channel.close();
