/**
 * A deterministic mutation fuzzer for every decoder that reads bytes a peer
 * (or the kernel on a peer's behalf) wrote: the wire header and metadata,
 * the Linux control-message, msghdr and statx decoders, and the macOS mach
 * message decoders.
 *
 * Each target starts from valid encodings (seeds), mutates them with a
 * seeded xorshift PRNG — bit flips, byte sets, field-targeted extreme
 * values, truncation, extension, splices — and asserts the contract:
 *
 * - `decodeHeader` / `decodeMeta` throw nothing but `ProtocolError`, and
 *   whatever they accept is a sound message (geometry valid, sizes within
 *   the limits, lengths consistent).
 * - `decodeControl` and `decodeReceived` (mach) never throw at all: they
 *   read untrusted buffers and report problems in their result, whose
 *   bounds are checked.
 * - The fixed-layout struct readers (`decodeMsghdr`, `decodeStatx`,
 *   `decodeMachMsgHeader`, ...) read kernel-written buffers of their
 *   struct's size. They never throw on a buffer of that size; on a shorter
 *   one they throw the `RangeError` of `DataView` and nothing else.
 *
 * Anything else thrown, or a broken invariant, is a finding: the run stops
 * and reports the target, iteration, seed and input bytes in hex, so the
 * case reproduces with `deno task fuzz --seed S --only TARGET`.
 *
 * Adding a decoder is one entry in the target list of its layer
 * (`wire_targets.ts`, `linux_targets.ts`, `darwin_targets.ts`,
 * `gst_targets.ts`); the mutations are in `mutate.ts`, the shared contracts
 * in `contracts.ts`.
 *
 * @module
 */

import { DARWIN_TARGETS } from "./darwin_targets.ts";
import { FuzzFailure, type FuzzTarget } from "./contracts.ts";
import { GST_TARGETS } from "./gst_targets.ts";
import { LINUX_TARGETS } from "./linux_targets.ts";
import { mutate, Xorshift } from "./mutate.ts";
import { WIRE_TARGETS } from "./wire_targets.ts";

/**
 * Every decoder under fuzz, in a fixed order: a target's PRNG is seeded
 * from the run's seed and its index here, so reordering changes the inputs
 * a seed gives.
 */
export const TARGETS: readonly FuzzTarget[] = [
  ...WIRE_TARGETS,
  ...LINUX_TARGETS,
  ...DARWIN_TARGETS,
  // GStreamer's unixfd protocol, as the bridge reads it (see gst_targets.ts for the contracts).
  ...GST_TARGETS,
];

/** What one target's run did. */
export interface TargetReport {
  name: string;
  inputs: number;
  /** How many inputs ended in each outcome (`ok`, `protocol:REASON`, `malformed`, ...). */
  outcomes: Record<string, number>;
  milliseconds: number;
}

/** Options of {@link fuzz}. */
export interface FuzzOptions {
  /** Mutated inputs per target (plus every seed and every truncation of every seed). */
  iterations: number;
  /** PRNG seed; the same seed gives the same inputs. */
  seed: number;
  /** Only targets whose name includes this. */
  only?: string;
}

/**
 * Runs every target: first each seed unmutated and truncated at every
 * length, then `iterations` mutated inputs. Throws {@link FuzzFailure} with
 * a reproducer on the first broken contract.
 */
export function fuzz(options: FuzzOptions): TargetReport[] {
  const reports: TargetReport[] = [];
  for (const [index, target] of TARGETS.entries()) {
    if (options.only && !target.name.includes(options.only)) continue;
    const rng = new Xorshift((options.seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
    const seeds = target.seeds();
    const outcomes: Record<string, number> = {};
    let inputs = 0;
    const started = performance.now();
    const one = (input: Uint8Array, iteration: number) => {
      let outcome: string;
      try {
        outcome = target.run(input, rng);
      } catch (error) {
        const hex = [...input].map((b) => b.toString(16).padStart(2, "0")).join("");
        throw new FuzzFailure(
          `${target.name}: ${error instanceof Error ? error.message : error}\n` +
            `  seed ${options.seed}, iteration ${iteration}, ${input.length} bytes: ${hex}`,
          { cause: error },
        );
      }
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      inputs++;
    };
    for (const seed of seeds) {
      for (let length = 0; length <= seed.length; length++) one(seed.subarray(0, length), -1);
    }
    for (let i = 0; i < options.iterations; i++) {
      one(mutate(rng.pick(seeds), target.fields, rng), i);
    }
    reports.push({
      name: target.name,
      inputs,
      outcomes,
      milliseconds: performance.now() - started,
    });
  }
  return reports;
}

/** The reports as an aligned text table. */
export function formatReports(reports: readonly TargetReport[]): string {
  const lines = reports.map((r) => {
    const top = Object.entries(r.outcomes).sort((a, b) => b[1] - a[1]).slice(0, 6)
      .map(([k, v]) => `${k} ${v}`).join(", ");
    return `${r.name.padEnd(36)} ${String(r.inputs).padStart(8)} inputs ${
      r.milliseconds.toFixed(0).padStart(6)
    } ms  ${top}`;
  });
  const total = reports.reduce((n, r) => n + r.inputs, 0);
  lines.push(`${"total".padEnd(36)} ${String(total).padStart(8)} inputs`);
  return lines.join("\n");
}
