/**
 * A deterministic test pattern for surfaces, shared by the demo and the
 * tests: every byte of every plane is a function of its position and a
 * frame seed, so a receiver can verify a frame byte for byte without being
 * sent a copy.
 *
 * @module
 */

import type { Surface } from "../mod.ts";

/** The byte the pattern puts at `index` of plane `plane` for `seed`. */
function patternByte(index: number, plane: number, seed: number): number {
  return (index * 7 + (index >>> 11) * 13 + plane * 101 + seed * 31) & 0xff;
}

/** Fills every plane of `surface` with the pattern for `seed`. */
export function fillPattern(surface: Surface, seed: number): void {
  for (let p = 0; p < surface.planes.length; p++) {
    const bytes = surface.bytes(p);
    for (let i = 0; i < bytes.length; i++) bytes[i] = patternByte(i, p, seed);
  }
}

/**
 * Checks every byte of every plane against the pattern for `seed`; returns
 * a description of the first mismatch, or `undefined` if all match.
 */
export function verifyPattern(surface: Surface, seed: number): string | undefined {
  for (let p = 0; p < surface.planes.length; p++) {
    const bytes = surface.bytes(p);
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== patternByte(i, p, seed)) {
        return `plane ${p} byte ${i}: ${bytes[i]} != ${patternByte(i, p, seed)} (seed ${seed})`;
      }
    }
  }
  return undefined;
}
