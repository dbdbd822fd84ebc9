/**
 * `surfaceport testcard NAME`: publishes an animated test card, to try the
 * other commands (and a consumer) without a camera. The card: eight
 * vertical 75% colour bars over the top two thirds (white, yellow, cyan,
 * green, magenta, red, blue, black), and over the bottom third a white box
 * that moves right by 4 pixels per frame on black.
 *
 * @module
 */

import {
  canonicalFormat,
  defaultMatrix,
  PIXEL_FORMATS,
  PoolExhaustedError,
  rangeOf,
  type Surface,
  SurfacePool,
  SystemCallError,
  YCBCR_MATRICES,
} from "../mod.ts";
import { type Command, integerOption, parseCommandArgs, UsageError } from "./command.ts";
import { openProducer } from "./source.ts";

/** The bars of the card, left to right, as 8-bit RGB. */
export const CARD_BARS: readonly (readonly [number, number, number])[] = [
  [191, 191, 191],
  [191, 191, 0],
  [0, 191, 191],
  [0, 191, 0],
  [191, 0, 191],
  [191, 0, 0],
  [0, 0, 191],
  [0, 0, 0],
];

/** Where the bars end: the first row of the bottom third (even, for 4:2:0). */
export function cardSplit(height: number): number {
  return Math.floor((height * 2) / 3) & ~1;
}

/** Width of the moving box, and its left edge in frame `t`. */
export function cardBox(width: number, t: number): { x: number; width: number } {
  const box = Math.max(2, Math.floor(width / 8) & ~1);
  return { x: ((t * 4) % Math.max(1, width - box)) & ~1, width: box };
}

/** The RGB of pixel (x, y) of frame `t`. */
export function cardPixel(
  x: number,
  y: number,
  t: number,
  width: number,
  height: number,
): [number, number, number] {
  if (y < cardSplit(height)) {
    return [...CARD_BARS[Math.min(7, Math.floor((x * 8) / width))]] as [number, number, number];
  }
  const box = cardBox(width, t);
  return x >= box.x && x < box.x + box.width ? [255, 255, 255] : [0, 0, 0];
}

/** 8-bit RGB to Y'CbCr code values of `range` with the luma coefficients of `matrix`. */
function encodeYCbCr(
  r: number,
  g: number,
  b: number,
  kr: number,
  kb: number,
  full: boolean,
): [number, number, number] {
  const y = (kr * r + (1 - kr - kb) * g + kb * b) / 255;
  const pb = (b / 255 - y) / (2 * (1 - kb));
  const pr = (r / 255 - y) / (2 * (1 - kr));
  const q = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
  return full
    ? [q(255 * y), q(128 + 255 * pb), q(128 + 255 * pr)]
    : [q(16 + 219 * y), q(128 + 224 * pb), q(128 + 224 * pr)];
}

/**
 * Paints frame `t` of the card into `surface`, any format (YCbCr with the
 * default matrix of its height, the range of its format). Each region's
 * row is computed once and copied down.
 */
export function paintCard(surface: Surface, t: number): void {
  const { width, height, format, planes } = surface;
  const { kr, kb } = YCBCR_MATRICES[defaultMatrix(height)];
  const range = rangeOf(format);
  const split = cardSplit(height);
  for (const [top, bottom] of [[0, split], [split, height]]) {
    if (top >= bottom) continue;
    const rgb = new Uint8Array(width * 3);
    for (let x = 0; x < width; x++) rgb.set(cardPixel(x, top, t, width, height), x * 3);
    const rows: Uint8Array[] = planes.map((p) => new Uint8Array(p.width * p.bytesPerElement));
    for (let x = 0; x < width; x++) {
      const [r, g, b] = [rgb[x * 3], rgb[x * 3 + 1], rgb[x * 3 + 2]];
      if (format === "BGRA") rows[0].set([b, g, r, 255], x * 4);
      else if (format === "RGBA") rows[0].set([r, g, b, 255], x * 4);
      else if (format === "L008") rows[0][x] = encodeYCbCr(r, g, b, kr, kb, true)[0];
      else {
        const [yy, cb, cr] = encodeYCbCr(r, g, b, kr, kb, range === "full");
        rows[0][x] = yy;
        if ((x & 1) === 0) {
          // Chroma of the 2-pixel pair: average of both pixels' chroma.
          const [r2, g2, b2] = [rgb[x * 3 + 3], rgb[x * 3 + 4], rgb[x * 3 + 5]];
          const [, cb2, cr2] = encodeYCbCr(r2, g2, b2, kr, kb, range === "full");
          const u = (cb + cb2 + 1) >> 1, v = (cr + cr2 + 1) >> 1;
          if (format === "y420") {
            rows[1][x >> 1] = u;
            rows[2][x >> 1] = v;
          } else {
            rows[1][x] = u;
            rows[1][x + 1] = v;
          }
        }
      }
    }
    for (let p = 0; p < planes.length; p++) {
      const plane = planes[p];
      const bytes = surface.bytes(p);
      const subsampled = plane.height !== height;
      const from = subsampled ? top >> 1 : top, to = subsampled ? bottom >> 1 : bottom;
      for (let y = from; y < to; y++) bytes.set(rows[p], y * plane.bytesPerRow);
    }
  }
}

/** At most one "pool exhausted" message per this many ms (the count is in each). */
const SKIP_REPORT_MS = 1000;

/** `testcard NAME [--format F] [--width W] [--height H] [--fps N] [--frames N] [--pool N]`. */
export const testcard: Command = {
  summary: "publish an animated test card under NAME (to try the other commands)",
  usage: [
    "usage: surfaceport testcard NAME [--format F] [--width W] [--height H] [--fps N] [--frames N]",
    "                            [--pool N]",
    "",
    "Publishes 75% colour bars with a moving white box until Ctrl-C.",
    `  --format F   ${PIXEL_FORMATS.join(", ")}, or NV12, I420, GRAY8 (default BGRA)`,
    "  --width W    default 640        --height H   default 360",
    "  --fps N      default 30 (0: as fast as the pool allows)",
    "  --frames N   stop after N frames (default: until Ctrl-C)",
    "  --pool N     surfaces in the pool (default: the publisher's surface budget + 1, which",
    "               consumers that stop reading cannot exhaust). When every surface is still",
    "               held, the frame is skipped and counted, never waited for.",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      format: "string",
      width: "string",
      height: "string",
      fps: "string",
      frames: "string",
      pool: "string",
    });
    if (positionals.length !== 1) throw new UsageError("testcard needs exactly one NAME");
    const name = positionals[0];
    const format = canonicalFormat(values.format ?? "BGRA");
    if (!format) throw new UsageError(`unknown --format ${JSON.stringify(values.format)}`);
    const width = integerOption(values, "width", 640, 32768);
    const height = integerOption(values, "height", 360, 32768);
    const fps = integerOption(values, "fps", 30, 1000);
    const frames = integerOption(values, "frames", Number.MAX_SAFE_INTEGER);
    const poolOption = integerOption(values, "pool", 0, 4096);
    if (values.pool !== undefined && poolOption < 1) {
      throw new UsageError("--pool must be at least 1");
    }
    using producer = openProducer(name, {
      onCutOff: (pid, reason) =>
        void io.out(`testcard ${name}: cut off consumer pid ${pid}: ${reason.message}\n`),
    });
    // Sized from what the publisher grants its subscribers, plus the surface painted here.
    const maxSurfaces = poolOption || producer.surfaceBudget + 1;
    using pool = new SurfacePool({ width, height, format, maxSurfaces });
    await io.out(
      `testcard ${name}: ${format} ${width}x${height} at ${
        fps || "max"
      } fps, pool ${maxSurfaces}\n`,
    );
    // A frame's slot: waiting longer for a surface than until the next frame is due only
    // delays that one too; so a frame whose surface is not free in time is skipped.
    const acquireTimeout = fps > 0 ? Math.max(1, Math.floor(1000 / fps)) : 100;
    const started = performance.now();
    let t = 0;
    let sent = 0;
    let skipped = 0;
    let reportedAt = -Infinity;
    const skip = async (why: string) => {
      skipped++;
      const now = performance.now();
      if (now - reportedAt < SKIP_REPORT_MS) return;
      reportedAt = now;
      await io.out(`testcard ${name}: skipped frame ${t} (${skipped} so far): ${why}\n`);
    };
    for (; t < frames && !io.signal.aborted; t++) {
      if (fps > 0) {
        const due = started + (t * 1000) / fps;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      let surface: Surface;
      try {
        surface = await pool.acquire({ timeout: acquireTimeout, signal: io.signal });
      } catch (error) {
        if (io.signal.aborted) break;
        if (!(error instanceof PoolExhaustedError)) throw error;
        await skip(`every surface of the pool of ${maxSurfaces} is still held`);
        continue;
      }
      try {
        paintCard(surface, t);
        await producer.send(surface, { frame: t });
        sent++;
      } catch (error) {
        // e.g. out of descriptors for a capability: this frame is lost, the card goes on.
        if (!(error instanceof SystemCallError)) throw error;
        await skip(error.message);
      } finally {
        surface.close();
      }
    }
    await io.out(`testcard ${name}: sent ${sent} frames, skipped ${skipped}\n`);
    return 0;
  },
};
