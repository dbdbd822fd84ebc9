/**
 * The numbered test pattern of the network tests: the frames the sender
 * publishes (each paints its number in a band and carries its own timestamp
 * and metadata) and the checks on the far side (pixels exactly in raw mode,
 * within a tolerance when compressed; the timestamp and metadata those of
 * the very frame the pixels show).
 *
 * @module
 */

import assert from "node:assert/strict";
import { publish, type Subscription, SurfacePool, toRGBA } from "../mod.ts";
import type { NetworkFrameMeta } from "../src/gst/network.ts";
import { within } from "./gst_helpers.ts";
import { paintBGRA, sleep } from "./helpers.ts";

/** The pattern's width and height. */
export const W = 128;
export const H = 96;
/** The timestamp the sender gives frame n: odd µs, so a rounding or a frame off shows. */
export const T0 = 1_796_000_000_000_007;
/** µs between frames' timestamps. */
const PERIOD = 33_333;
/** Frame n's timestamp (µs). */
export const timestampOf = (n: number): number => T0 + n * PERIOD;

/** Frame n's number in the top band: 8 bits, 16 px wide each, white for 1. */
function bit(n: number, x: number): boolean {
  return ((n >> (x >> 4)) & 1) === 1;
}

/** Raw: every byte below the band depends on the position and the frame. */
export function texture(n: number, x: number, y: number): [number, number, number] {
  if (y < 32) return bit(n, x) ? [235, 235, 235] : [16, 16, 16];
  return [(x * 4 + n) & 255, (y * 5 + n * 3) & 255, (x + y * 2 + 40) & 255];
}

/** Compressed: flat areas, red left and blue right below the band. */
export function flat(n: number, x: number, y: number): [number, number, number] {
  if (y < 32) return bit(n, x) ? [235, 235, 235] : [16, 16, 16];
  return x < W / 2 ? [220, 30, 30] : [30, 40, 210];
}

/** Frame n's metadata: JSON for even n, bytes for odd n (both kinds cross). */
function metaOf(n: number): unknown {
  return n % 2 === 0 ? { n, text: "é" } : new Uint8Array([n & 255, n >> 8, 7]);
}

/** Publishes frames n = 0, 1, ... at ~30/s, frame n with timestamp {@link timestampOf}(n). */
export async function publishFrames(
  name: string,
  paint: (n: number, x: number, y: number) => [number, number, number],
  signal: AbortSignal,
): Promise<void> {
  using publisher = publish(name);
  using pool = new SurfacePool({ width: W, height: H, format: "BGRA", maxSurfaces: 8 });
  for (let n = 0; !signal.aborted; n++) {
    {
      using surface = await pool.acquire({ timeout: 2000 });
      paintBGRA(surface, (x, y) => paint(n, x, y));
      await publisher.send(surface, metaOf(n), { timestamp: timestampOf(n) });
    }
    await sleep(33);
  }
}

/** The frame number painted in a received frame's band (RGBA), or -1 if a bit is unclear. */
function numberOf(rgba: Uint8Array): number {
  let n = 0;
  for (let b = 0; b < 8; b++) {
    const value = rgba[(16 * W + b * 16 + 8) * 4 + 1];
    if (value > 170) n |= 1 << b;
    else if (value > 80) return -1;
  }
  return n;
}

/** The sender's frame numbers modulo 256 whose timestamp `timestamp` is (-1 if none). */
export function numberOfTimestamp(timestamp: number): number {
  const n = (timestamp - T0) / PERIOD;
  return Number.isInteger(n) && n >= 0 ? n % 256 : -1;
}

/** A frame as the far side received it: its pixels, the number they show, its timestamp and metadata. */
export interface Received {
  rgba: Uint8Array;
  n: number;
  timestamp: number;
  meta: NetworkFrameMeta;
}

/** The next frame of `frames` (within 10 s), read out. */
export async function receiveOne(frames: Subscription): Promise<Received> {
  using frame = await within(frames.receive(), 10000, "a frame over the network");
  assert.deepEqual([frame.surface.width, frame.surface.height], [W, H]);
  const rgba = toRGBA(frame.surface);
  return {
    rgba,
    n: numberOf(rgba),
    timestamp: frame.timestamp,
    meta: frame.meta as NetworkFrameMeta,
  };
}

/** The far side's frame has exactly the timestamp (and metadata) the sender gave the frame it shows. */
export function checkTimestamp(got: Received): void {
  assert.deepEqual(got.meta.timestamp, got.timestamp, "meta.timestamp is the frame's timestamp");
  // A record may come after its frame on a loaded machine (counted as missing): when it is
  // there it must be this frame's.
  checkSenderMeta(got, false);
  assert.deepEqual(
    numberOfTimestamp(got.timestamp),
    got.n,
    `frame ${got.n} arrived with timestamp ${got.timestamp}, the sender's for frame ${
      (got.timestamp - T0) / PERIOD
    }`,
  );
}

/** Whatever sender metadata a frame came with is that of the frame its timestamp names. */
export function checkSenderMeta(got: Received, required = true): void {
  const n = (got.timestamp - T0) / PERIOD;
  const { meta, metaBytes } = got.meta;
  if (meta === undefined && metaBytes === undefined) {
    assert(!required, `frame ${n} arrived without its metadata`);
    return;
  }
  if (n % 2 === 0) assert.deepEqual(meta, metaOf(n), `metadata of frame ${n}`);
  else {
    const bytes = Uint8Array.from(atob(metaBytes ?? ""), (c) => c.charCodeAt(0));
    assert.deepEqual(bytes, metaOf(n), `metadata bytes of frame ${n}`);
  }
}

/** Raw: every pixel exactly as painted. */
export function checkExact(got: Received): void {
  assert(got.n >= 0, "the frame number is unreadable");
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const want = texture(got.n, x, y);
      const k = (y * W + x) * 4;
      for (let c = 0; c < 3; c++) {
        if (got.rgba[k + c] !== want[c]) {
          throw new Error(
            `pixel (${x},${y}) of frame ${got.n}: got ${got.rgba.slice(k, k + 3)}, sent ${want}`,
          );
        }
      }
    }
  }
}

/** Compressed: the centres of the flat areas within 24 levels. */
export function checkColours(got: Received): void {
  assert(got.n >= 0, "the frame number is unreadable");
  let worst = 0;
  for (const [cx, cy] of [[W / 4, 64], [(3 * W) / 4, 64], [8, 16], [W - 8, 16]]) {
    for (let y = cy - 4; y < cy + 4; y++) {
      for (let x = cx - 4; x < cx + 4; x++) {
        const want = flat(got.n, x, y);
        for (let c = 0; c < 3; c++) {
          worst = Math.max(worst, Math.abs(got.rgba[(y * W + x) * 4 + c] - want[c]));
        }
      }
    }
  }
  assert(worst <= 24, `a colour of frame ${got.n} is off by ${worst} levels (tolerance 24)`);
}
