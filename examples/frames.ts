/**
 * The demo's animated test card: every pixel is a function of its position
 * and the frame number, so the consumer can verify each frame exactly.
 *
 * @module
 */

import type { Surface } from "../mod.ts";

/** The BGRA pixel (as a little-endian u32) at `(x, y)` of frame `t`. */
export function pixel(x: number, y: number, t: number): number {
  const b = (x + t * 4) & 0xff;
  const g = (y + t * 2) & 0xff;
  const r = ((x ^ y) + t) & 0xff;
  const bar = ((x + t * 8) % 256) < 16 ? 0xff : 0;
  return (0xff << 24 | (r | bar) << 16 | (g | bar) << 8 | b) >>> 0;
}

function rows(surface: Surface): Uint32Array {
  const bytes = surface.bytes();
  return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** Paints frame `t` into a BGRA surface. */
export function paint(surface: Surface, t: number): void {
  const pixels = rows(surface);
  const stride = surface.planes[0].bytesPerRow / 4;
  for (let y = 0; y < surface.height; y++) {
    const row = y * stride;
    for (let x = 0; x < surface.width; x++) pixels[row + x] = pixel(x, y, t);
  }
}

/** Counts the pixels of a BGRA surface that differ from frame `t`. */
export function countWrongPixels(surface: Surface, t: number): number {
  const pixels = rows(surface);
  const stride = surface.planes[0].bytesPerRow / 4;
  let wrong = 0;
  for (let y = 0; y < surface.height; y++) {
    const row = y * stride;
    for (let x = 0; x < surface.width; x++) if (pixels[row + x] !== pixel(x, y, t)) wrong++;
  }
  return wrong;
}
