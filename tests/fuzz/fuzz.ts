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
 * Adding a decoder is one entry in {@link TARGETS}.
 *
 * @module
 */

import { ProtocolError } from "../../src/core/errors.ts";
import { GST_TARGETS } from "./gst_targets.ts";
import { computeGeometry, PIXEL_FORMATS, validateGeometry } from "../../src/core/geometry.ts";
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
import {
  decodeReceived,
  encodeHandshake,
  encodePortMessage,
  MSG_ID_HELLO,
  MSG_ID_SURFACE,
} from "../../src/darwin/messages.ts";
import {
  DARWIN,
  decodeMachMsgAuditTrailer,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  encodeMachMsgAuditTrailer,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
} from "../../src/darwin/structs.ts";
import {
  decodeHeader,
  decodeMeta,
  encodeHeader,
  encodeMeta,
  HEADER_SIZE,
  HeaderDecoder,
  META_BYTES,
  META_JSON,
  META_NONE,
  WIRE_MAGIC,
} from "../../src/wire/wire.ts";

// --- PRNG -----------------------------------------------------------------------

/** xorshift32: tiny, fast and the same on every machine for a given seed. */
export class Xorshift {
  #state: number;

  /** Seeds the generator (0 is replaced: xorshift never leaves state 0). */
  constructor(seed: number) {
    this.#state = (seed >>> 0) || 0x9e3779b9;
  }

  /** The next 32-bit unsigned value. */
  next(): number {
    let x = this.#state;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state;
  }

  /** An integer in `[0, n)`. */
  below(n: number): number {
    return n <= 1 ? 0 : this.next() % n;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }
}

// --- mutation -----------------------------------------------------------------

/** A field of a seed layout worth hitting with extreme values. */
export interface Field {
  offset: number;
  size: 1 | 2 | 4 | 8;
}

const EXTREMES_64 = [
  0n,
  1n,
  2n,
  7n,
  8n,
  15n,
  16n,
  17n,
  136n,
  4096n,
  0x7fn,
  0x80n,
  0xffn,
  0x7fffn,
  0x8000n,
  0xffffn,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x100000000n,
  (1n << 53n) - 1n,
  1n << 53n,
  0x7fffffffffffffffn,
  0x8000000000000000n,
  0xffffffffffffffffn,
];

function writeExtreme(bytes: Uint8Array, field: Field, rng: Xorshift): void {
  if (field.offset + field.size > bytes.length) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mask = (1n << BigInt(8 * field.size)) - 1n;
  let value = rng.pick(EXTREMES_64);
  if (rng.chance(0.25)) value = mask - value; // near the top of the field
  if (rng.chance(0.2)) value += BigInt(rng.below(5)) - 2n; // off by a little
  value &= mask;
  switch (field.size) {
    case 1:
      view.setUint8(field.offset, Number(value));
      break;
    case 2:
      view.setUint16(field.offset, Number(value), true);
      break;
    case 4:
      view.setUint32(field.offset, Number(value), true);
      break;
    case 8:
      view.setBigUint64(field.offset, value, true);
      break;
  }
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x20, 0x22, 0x5b, 0x7b];

/**
 * One mutated copy of `seed`: one to four mutations, each a bit flip, a
 * byte set, a field-targeted extreme, a truncation, an extension, a
 * chunk copy, an insertion or a deletion.
 */
export function mutate(seed: Uint8Array, fields: readonly Field[], rng: Xorshift): Uint8Array {
  let bytes = seed.slice();
  const rounds = 1 + rng.below(4);
  for (let round = 0; round < rounds; round++) {
    const kind = rng.below(10);
    if (kind <= 1 && bytes.length > 0) {
      // bit flips
      for (let i = 1 + rng.below(4); i > 0; i--) {
        bytes[rng.below(bytes.length)] ^= 1 << rng.below(8);
      }
    } else if (kind === 2 && bytes.length > 0) {
      bytes[rng.below(bytes.length)] = rng.chance(0.5)
        ? rng.pick(INTERESTING_BYTES)
        : rng.below(256);
    } else if (kind <= 4 && fields.length > 0) {
      writeExtreme(bytes, rng.pick(fields), rng);
    } else if (kind === 5) {
      // truncation, biased towards the interesting short lengths
      const length = rng.chance(0.3)
        ? rng.below(Math.min(bytes.length + 1, 24))
        : rng.below(bytes.length + 1);
      bytes = bytes.slice(0, length);
    } else if (kind === 6) {
      // extension with random or zero bytes
      const extra = new Uint8Array(rng.chance(0.5) ? 1 + rng.below(8) : 1 + rng.below(300));
      if (rng.chance(0.5)) { for (let i = 0; i < extra.length; i++) extra[i] = rng.below(256); }
      const longer = new Uint8Array(bytes.length + extra.length);
      longer.set(bytes);
      longer.set(extra, bytes.length);
      bytes = longer;
    } else if (kind === 7 && bytes.length > 1) {
      // copy a chunk over another place
      const length = 1 + rng.below(Math.min(16, bytes.length));
      const from = rng.below(bytes.length - length + 1);
      const to = rng.below(bytes.length - length + 1);
      bytes.copyWithin(to, from, from + length);
    } else if (kind === 8) {
      // insert a few bytes (shifts every later field)
      const at = rng.below(bytes.length + 1);
      const count = 1 + rng.below(8);
      const longer = new Uint8Array(bytes.length + count);
      longer.set(bytes.subarray(0, at));
      for (let i = 0; i < count; i++) longer[at + i] = rng.below(256);
      longer.set(bytes.subarray(at), at + count);
      bytes = longer;
    } else if (bytes.length > 0) {
      // delete a few bytes
      const at = rng.below(bytes.length);
      const count = 1 + rng.below(Math.min(8, bytes.length - at));
      const shorter = new Uint8Array(bytes.length - count);
      shorter.set(bytes.subarray(0, at));
      shorter.set(bytes.subarray(at + count), at);
      bytes = shorter;
    }
  }
  return bytes;
}

// --- targets ------------------------------------------------------------------

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

function fail(message: string): never {
  throw new FuzzFailure(message);
}

/** Runs `decode`; only `ProtocolError` may escape. Returns `"ok"` or `"protocol:REASON"`. */
function protocolOnly(decode: () => void): string {
  try {
    decode();
    return "ok";
  } catch (error) {
    if (error instanceof ProtocolError) return `protocol:${error.reason}`;
    fail(`threw ${describe(error)} instead of ProtocolError`);
  }
}

/** Runs a fixed-layout reader: nothing may escape on `size` bytes, only RangeError below. */
function fixedLayout(input: Uint8Array, size: number, decode: (view: DataView) => unknown): string {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  try {
    decode(view);
    return "ok";
  } catch (error) {
    if (error instanceof RangeError && input.length < size) return "short:RangeError";
    fail(`threw ${describe(error)} on ${input.length} bytes (struct is ${size})`);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

// wire header -------------------------------------------------------------------

const HEADER_FIELDS: Field[] = [
  { offset: 0, size: 4 },
  { offset: 4, size: 2 },
  { offset: 6, size: 2 },
  { offset: 8, size: 2 },
  { offset: 10, size: 2 },
  { offset: 12, size: 4 },
  { offset: 16, size: 4 },
  { offset: 20, size: 4 },
  { offset: 24, size: 4 },
  { offset: 28, size: 4 },
  { offset: 32, size: 8 },
  { offset: 40, size: 8 },
  { offset: 48, size: 8 },
  { offset: 56, size: 8 },
  ...[0, 1, 2].flatMap((i) => [
    { offset: 64 + 24 * i, size: 8 as const },
    { offset: 72 + 24 * i, size: 4 as const },
    { offset: 76 + 24 * i, size: 4 as const },
    { offset: 80 + 24 * i, size: 4 as const },
    { offset: 84 + 24 * i, size: 4 as const },
  ]),
];

function headerSeeds(): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  const sizes: [number, number][] = [[1, 1], [2, 2], [64, 32], [1920, 1080], [32768, 2]];
  for (const format of PIXEL_FORMATS) {
    for (const [w, h] of sizes) {
      let geometry;
      try {
        geometry = computeGeometry(w, h, format);
      } catch {
        continue; // odd sizes of 4:2:0 formats
      }
      for (const meta of [undefined, new Uint8Array([1, 2, 3]), { pts: 1, tags: ["a"] }]) {
        const encoded = encodeMeta(meta);
        const message = new Uint8Array(HEADER_SIZE + encoded.bytes.length);
        encodeHeader(
          new DataView(message.buffer),
          geometry,
          encoded.kind,
          encoded.bytes.length,
          7n,
          1e15,
        );
        message.set(encoded.bytes, HEADER_SIZE);
        seeds.push(message);
      }
    }
  }
  return seeds;
}

const MAX_BYTES_CHOICES = [1 << 30, 4096, 1, Number.MAX_SAFE_INTEGER];
const MAX_META_CHOICES = [65536, 0, 3, 16];

function runHeader(input: Uint8Array, rng: Xorshift): string {
  const maxBytes = rng.pick(MAX_BYTES_CHOICES);
  const maxMeta = rng.pick(MAX_META_CHOICES);
  let header: ReturnType<typeof decodeHeader> | undefined;
  const outcome = protocolOnly(() => {
    header = decodeHeader(input, maxBytes, maxMeta);
  });
  if (header) {
    // Whatever is accepted must be safe to map and to slice.
    const problem = validateGeometry(header.geometry);
    if (problem) fail(`accepted an unsound geometry: ${problem}`);
    if (header.geometry.allocSize > maxBytes) fail(`accepted allocSize over ${maxBytes}`);
    if (header.metaLength > maxMeta) fail(`accepted metadata over ${maxMeta}`);
    if (input.length !== HEADER_SIZE + header.metaLength) fail("accepted a length mismatch");
    if (![META_NONE, META_BYTES, META_JSON].includes(header.metaKind)) fail("bad metaKind");
    if (new DataView(input.buffer, input.byteOffset).getUint32(0, true) !== WIRE_MAGIC) {
      fail("accepted a bad magic");
    }
    // The metadata decoder must then also hold to its contract on the accepted bytes.
    protocolOnly(() => decodeMeta(header!.metaKind, input.subarray(HEADER_SIZE)));
  }
  compareHeaderDecoder(input, maxBytes, maxMeta, outcome, header);
  return outcome;
}

/**
 * The receive path's cached decoder must accept and refuse exactly what
 * decodeHeader does, with the same fields. It is primed first with the
 * input's own geometry bytes under valid per-message fields, so that the
 * input itself takes its fast path (geometry reused, per-message fields
 * checked) whenever that priming header is valid.
 */
function compareHeaderDecoder(
  input: Uint8Array,
  maxBytes: number,
  maxMeta: number,
  outcome: string,
  header: ReturnType<typeof decodeHeader> | undefined,
): void {
  const buffer = new Uint8Array(HEADER_SIZE + maxMeta + 1);
  if (input.length > buffer.length) return; // a channel sees MSG_TRUNC first
  const decoder = new HeaderDecoder(buffer, maxBytes, maxMeta);
  if (input.length >= HEADER_SIZE) {
    buffer.set(input.subarray(0, HEADER_SIZE));
    const view = new DataView(buffer.buffer);
    view.setUint16(10, 0, true); // flags: no metadata
    view.setUint32(28, 0, true); // metadata length
    protocolOnly(() => decoder.decode(HEADER_SIZE));
  }
  buffer.fill(0);
  buffer.set(input);
  let cached: ReturnType<typeof decodeHeader> | undefined;
  const cachedOutcome = protocolOnly(() => {
    cached = decoder.decode(input.length);
  });
  if (cachedOutcome !== outcome) {
    fail(`HeaderDecoder: ${cachedOutcome}, decodeHeader: ${outcome}`);
  }
  if (header) {
    const plain = JSON.stringify({ ...header, sequence: String(header.sequence) });
    const fast = JSON.stringify({ ...cached!, sequence: String(cached!.sequence) });
    if (plain !== fast) fail(`HeaderDecoder decoded ${fast}, decodeHeader ${plain}`);
  }
}

// metadata ----------------------------------------------------------------------

function metaSeeds(): Uint8Array[] {
  const values: unknown[] = [
    null,
    0,
    -1.5e300,
    "text ü 🎥",
    [1, [2, [3]]],
    { a: { b: { c: [true, false, null] } }, s: '\\u0000"' },
  ];
  const seeds = values.map((v) => encodeMeta(v).bytes);
  seeds.push(new TextEncoder().encode("[".repeat(2000) + "]".repeat(2000)));
  seeds.push(new Uint8Array([0xf0, 0x9f, 0x8e, 0xa5, 0x22]));
  return seeds;
}

function runMeta(input: Uint8Array, rng: Xorshift): string {
  const kind = rng.pick([META_NONE, META_BYTES, META_JSON, META_JSON]);
  return protocolOnly(() => {
    const value = decodeMeta(kind, input);
    if (kind === META_BYTES && (value as Uint8Array).buffer === input.buffer) {
      fail("decodeMeta aliased the received bytes");
    }
  });
}

// Linux control messages ----------------------------------------------------------

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

// macOS mach messages ---------------------------------------------------------------

function withTrailer(message: Uint8Array, size: number): Uint8Array {
  const bytes = new Uint8Array(size + MACH_MSG_AUDIT_TRAILER_SIZE + 16);
  bytes.set(message.subarray(0, size));
  encodeMachMsgAuditTrailer(new DataView(bytes.buffer), size, {
    type: 0,
    size: MACH_MSG_AUDIT_TRAILER_SIZE,
    seqno: 3,
    sender: [501, 20],
    audit: [0, 501, 20, 501, 20, 4242, 100001, 7],
  });
  return bytes;
}

function machSeeds(): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  for (const geometry of [computeGeometry(64, 32, "BGRA"), computeGeometry(64, 32, "y420")]) {
    for (const meta of [undefined, { pts: 1 }]) {
      const encoded = encodeMeta(meta);
      const payload = new Uint8Array(HEADER_SIZE + encoded.bytes.length);
      encodeHeader(
        new DataView(payload.buffer),
        geometry,
        encoded.kind,
        encoded.bytes.length,
        0n,
        0,
      );
      payload.set(encoded.bytes, HEADER_SIZE);
      const buffer = new Uint8Array(512);
      const size = encodePortMessage(
        buffer,
        0,
        0,
        MSG_ID_SURFACE,
        0x1103,
        DARWIN.MACH_MSG_TYPE_PORT_SEND,
        payload,
      );
      seeds.push(withTrailer(buffer, size));
    }
  }
  const hello = new Uint8Array(64);
  const size = encodeHandshake(hello, MSG_ID_HELLO, 0x707, 0x11, 0x903, 0x12, WIRE_MAGIC, 1);
  seeds.push(withTrailer(hello, size));
  return seeds;
}

const MACH_FIELDS: Field[] = [
  { offset: 0, size: 4 },
  { offset: 4, size: 4 },
  { offset: 8, size: 4 },
  { offset: 12, size: 4 },
  { offset: 20, size: 4 },
  { offset: 24, size: 4 }, // descriptor count
  { offset: 28, size: 4 }, // port name
  { offset: 38, size: 1 }, // disposition
  { offset: 39, size: 1 }, // descriptor type
  { offset: 40, size: 4 },
  { offset: 68, size: 4 }, // wire header metadata length
];

function runMachReceived(input: Uint8Array): string {
  let layout: ReturnType<typeof decodeReceived>;
  try {
    layout = decodeReceived(input);
  } catch (error) {
    fail(`decodeReceived threw ${describe(error)}`);
  }
  if (!layout) return "undefined";
  const { header } = layout;
  if (header.size < MACH_MSG_HEADER_SIZE) fail(`accepted msgh_size ${header.size}`);
  if (header.size + MACH_MSG_AUDIT_TRAILER_SIZE > input.length) {
    fail(`accepted msgh_size ${header.size} with a trailer past ${input.length} bytes`);
  }
  if (layout.inlineOffset > header.size) {
    fail(`inline data at ${layout.inlineOffset} > ${header.size}`);
  }
  if (layout.ports.length + layout.otherDescriptors !== layout.descriptorCount) {
    fail("descriptors found do not add up to the count");
  }
  if (layout.ports.some((p) => p.type !== DARWIN.MACH_MSG_PORT_DESCRIPTOR)) {
    fail("a non-port descriptor was reported as a port");
  }
  return layout.descriptorCount === 0
    ? "simple"
    : `descriptors:${Math.min(layout.descriptorCount, 3)}`;
}

/** Every decoder under fuzz. Adding one is one entry here. */
export const TARGETS: readonly FuzzTarget[] = [
  { name: "wire.decodeHeader", seeds: headerSeeds, fields: HEADER_FIELDS, run: runHeader },
  { name: "wire.decodeMeta", seeds: metaSeeds, fields: [], run: runMeta },
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
  { name: "darwin.decodeReceived", seeds: machSeeds, fields: MACH_FIELDS, run: runMachReceived },
  {
    name: "darwin.decodeMachMsgHeader",
    seeds: machSeeds,
    fields: MACH_FIELDS,
    run: (input) => fixedLayout(input, MACH_MSG_HEADER_SIZE, (v) => decodeMachMsgHeader(v, 0)),
  },
  {
    name: "darwin.decodeMachMsgPortDescriptor",
    seeds: machSeeds,
    fields: MACH_FIELDS,
    run: (input) =>
      fixedLayout(
        input,
        MACH_MSG_HEADER_SIZE + 4 + MACH_MSG_PORT_DESCRIPTOR_SIZE,
        (v) => decodeMachMsgPortDescriptor(v, MACH_MSG_HEADER_SIZE + 4),
      ),
  },
  {
    name: "darwin.decodeMachMsgAuditTrailer",
    seeds: () => [withTrailer(new Uint8Array(0), 0)],
    fields: [{ offset: 0, size: 4 }, { offset: 4, size: 4 }, { offset: 24, size: 4 }],
    run: (input) =>
      fixedLayout(input, MACH_MSG_AUDIT_TRAILER_SIZE, (v) => decodeMachMsgAuditTrailer(v, 0)),
  },
  // GStreamer's unixfd protocol, as the bridge reads it (see gst_targets.ts for the contracts).
  ...GST_TARGETS,
];

// --- the driver -------------------------------------------------------------------

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
