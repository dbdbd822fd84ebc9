/**
 * Fuzz targets for the Linux decoders (`src/linux/structs.ts`) of what the
 * kernel wrote on a peer's behalf.
 *
 * - `linux.decodeControl` never throws: it reads an untrusted control buffer
 *   with a `msg_controllen` of any value and reports problems in its result,
 *   whose bounds are checked; the receive path's allocation-free
 *   `scanControlRights` finds the same.
 * - `linux.decodeMsghdr` and `linux.decodeStatx` are fixed-layout readers
 *   ({@link fixedLayout}).
 *
 * @module
 */

import {
  CMSGHDR_SIZE,
  cmsgLen,
  cmsgSpace,
  decodeControl,
  decodeMsghdr,
  decodeStatx,
  encodeMsghdr,
  encodeRights,
  MSGHDR_SIZE,
  scanControlRights,
  STATX_SIZE,
} from "../../src/linux/structs.ts";
import { describe, fail, fixedLayout, type FuzzTarget } from "./contracts.ts";
import type { Field, Xorshift } from "./mutate.ts";

function controlSeeds(): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  for (let n = 0; n <= 8; n++) {
    const bytes = new Uint8Array(cmsgSpace(4 * n) + 8);
    encodeRights(new DataView(bytes.buffer), Array.from({ length: n }, (_, i) => 3 + i));
    seeds.push(bytes.subarray(0, cmsgSpace(4 * n)));
  }
  // Two control messages back to back, the second not SCM_RIGHTS.
  const two = new Uint8Array(cmsgSpace(4) + cmsgSpace(12));
  const view = new DataView(two.buffer);
  encodeRights(view, [5]);
  view.setBigUint64(cmsgSpace(4), BigInt(cmsgLen(12)), true);
  view.setInt32(cmsgSpace(4) + 8, 1, true);
  view.setInt32(cmsgSpace(4) + 12, 2, /* SCM_CREDENTIALS */ true);
  seeds.push(two);
  return seeds;
}

const CONTROL_FIELDS: Field[] = [0, 1, 2].flatMap((i) => [
  { offset: i * 24, size: 8 as const },
  { offset: i * 24 + 8, size: 4 as const },
  { offset: i * 24 + 12, size: 4 as const },
  { offset: i * 24 + 16, size: 4 as const },
]);

function runControl(input: Uint8Array, rng: Xorshift): string {
  // msg_controllen is a size_t the kernel wrote: usually the buffer's length, but test any value.
  const length = rng.chance(0.7) ? input.length : rng.pick([
    0,
    1,
    CMSGHDR_SIZE - 1,
    CMSGHDR_SIZE,
    input.length + 1 + rng.below(64),
    Math.max(0, input.length - 1 - rng.below(8)),
    2 ** 53,
    2 ** 64,
  ]);
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  let decoded: ReturnType<typeof decodeControl>;
  try {
    decoded = decodeControl(view, length);
  } catch (error) {
    fail(`decodeControl threw ${describe(error)}`);
  }
  const limit = Math.floor(Math.max(0, Math.min(length, input.length) - CMSGHDR_SIZE) / 4);
  if (decoded.fds.length > limit) {
    fail(`decodeControl found ${decoded.fds.length} fds in ${length} bytes`);
  }
  if (!decoded.fds.every(Number.isInteger)) fail("decodeControl returned a non-integer fd");
  if (typeof decoded.malformed !== "boolean") fail("malformed is not a boolean");
  // The receive path's allocation-free walk must find the same.
  const into = { fds: new Int32Array(Math.floor(input.length / 4)).fill(-1), count: 3 };
  const malformed = scanControlRights(view, length, into);
  const fds = [...into.fds.subarray(0, into.count)];
  if (malformed !== decoded.malformed || fds.join() !== decoded.fds.join()) {
    fail(
      `scanControlRights: ${malformed} [${fds}], decodeControl: ${decoded.malformed} [${decoded.fds}]`,
    );
  }
  return decoded.malformed ? "malformed" : `fds:${Math.min(decoded.fds.length, 9)}`;
}

// Linux fixed structs -------------------------------------------------------------

function msghdrSeeds(): Uint8Array[] {
  const bytes = new Uint8Array(MSGHDR_SIZE);
  encodeMsghdr(new DataView(bytes.buffer), {
    name: 0n,
    nameLength: 0,
    iov: 0x7f0000001000n,
    iovLength: 1,
    control: 0x7f0000002000n,
    controlLength: 48,
    flags: 0x40000008,
  });
  return [bytes];
}

const MSGHDR_FIELDS: Field[] = [
  { offset: 0, size: 8 },
  { offset: 8, size: 4 },
  { offset: 16, size: 8 },
  { offset: 24, size: 8 },
  { offset: 32, size: 8 },
  { offset: 40, size: 8 },
  { offset: 48, size: 4 },
];

function statxSeeds(): Uint8Array[] {
  const bytes = new Uint8Array(STATX_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 0x303, true);
  view.setUint16(28, 0o100777, true);
  view.setBigUint64(32, 12345n, true);
  view.setBigUint64(40, 8192n, true);
  view.setUint32(136, 0, true);
  view.setUint32(140, 1, true);
  return [bytes];
}

const STATX_FIELDS: Field[] = [
  { offset: 0, size: 4 },
  { offset: 28, size: 2 },
  { offset: 32, size: 8 },
  { offset: 40, size: 8 },
  { offset: 136, size: 4 },
  { offset: 140, size: 4 },
];

/** The Linux targets, in the order `TARGETS` (fuzz.ts) runs them. */
export const LINUX_TARGETS: readonly FuzzTarget[] = [
  { name: "linux.decodeControl", seeds: controlSeeds, fields: CONTROL_FIELDS, run: runControl },
  {
    name: "linux.decodeMsghdr",
    seeds: msghdrSeeds,
    fields: MSGHDR_FIELDS,
    run: (input) => fixedLayout(input, MSGHDR_SIZE, decodeMsghdr),
  },
  {
    name: "linux.decodeStatx",
    seeds: statxSeeds,
    fields: STATX_FIELDS,
    run: (input) => fixedLayout(input, 144, /* the last field read ends at 144 */ decodeStatx),
  },
];
