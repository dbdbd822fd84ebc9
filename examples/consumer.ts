/**
 * The demo's consumer: connects to the producer's channel, verifies every
 * frame pixel for pixel, measures handoff latency (send timestamp to
 * receipt), and writes the last frame it received as a PNG (it keeps the
 * previous frame open until the next one arrives, so the last one is still
 * there to convert at the end).
 *
 * Usage: deno run --allow-ffi --allow-write examples/consumer.ts NAME PNG_PATH
 *
 * @module
 */

import { encode } from "fast-png";
import { connect, type Frame, nowMicros, toRGBA } from "../mod.ts";
import { countWrongPixels } from "./frames.ts";

const [name, pngPath] = Deno.args;
const channel = await connect(name, { timeout: 10000 });

const latencies: number[] = [];
let frames = 0, wrongFrames = 0;
let last: Frame | undefined;
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
  last?.close();
  last = frame;
}
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
if (last) {
  await Deno.mkdir(new URL(".", `file://${Deno.realPathSync(".")}/${pngPath}`), { recursive: true })
    .catch(() => {});
  const { width, height } = last.surface;
  await Deno.writeFile(pngPath, encode({ width, height, data: toRGBA(last), channels: 4 }));
  last.close();
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
      pngFrame: last ? (last.meta as { t: number }).t : null,
    }),
);
channel.close();
