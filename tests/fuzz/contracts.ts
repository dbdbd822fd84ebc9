/**
 * What a fuzz target is ({@link FuzzTarget}), how it reports a broken
 * contract ({@link FuzzFailure}), and the two contracts most decoders hold
 * to: only `ProtocolError` escapes ({@link protocolOnly}), and a
 * fixed-layout struct reader throws nothing on a buffer of its struct's
 * size and only `DataView`'s `RangeError` on a shorter one
 * ({@link fixedLayout}).
 *
 * @module
 */

import { ProtocolError } from "../../src/core/errors.ts";
import type { Field, Xorshift } from "./mutate.ts";

/** A decoder under fuzz. */
export interface FuzzTarget {
  /** Name used in reports and with `--only`. */
  name: string;
  /** Valid encodings to start from. */
  seeds: () => Uint8Array[];
  /** Fields of the seeds' layout that get extreme values. */
  fields: readonly Field[];
  /**
   * Runs the decoder on `input`. Throws {@link FuzzFailure} when an
   * invariant breaks; returns how the input was classified (for stats).
   */
  run: (input: Uint8Array, rng: Xorshift) => string;
}

/** A broken decoder contract. */
export class FuzzFailure extends Error {}

/** Throws {@link FuzzFailure}: an invariant broke. */
export function fail(message: string): never {
  throw new FuzzFailure(message);
}

/** Runs `decode`; only `ProtocolError` may escape. Returns `"ok"` or `"protocol:REASON"`. */
export function protocolOnly(decode: () => void): string {
  try {
    decode();
    return "ok";
  } catch (error) {
    if (error instanceof ProtocolError) return `protocol:${error.reason}`;
    fail(`threw ${describe(error)} instead of ProtocolError`);
  }
}

/** Runs a fixed-layout reader: nothing may escape on `size` bytes, only RangeError below. */
export function fixedLayout(
  input: Uint8Array,
  size: number,
  decode: (view: DataView) => unknown,
): string {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  try {
    decode(view);
    return "ok";
  } catch (error) {
    if (error instanceof RangeError && input.length < size) return "short:RangeError";
    fail(`threw ${describe(error)} on ${input.length} bytes (struct is ${size})`);
  }
}

/** `Class: message` of what was thrown, for a report. */
export function describe(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}
