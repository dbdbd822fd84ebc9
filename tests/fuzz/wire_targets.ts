/**
 * Fuzz targets for the wire codec (`src/wire/wire.ts`): the header every
 * message carries and its metadata, as a peer wrote them.
 *
 * - `wire.decodeHeader` throws nothing but `ProtocolError`, and whatever it
 *   accepts is a sound message (geometry valid, sizes within the limits,
 *   lengths consistent); the receive path's cached `HeaderDecoder` accepts
 *   and refuses exactly the same, with the same fields.
 * - `wire.decodeMeta` throws nothing but `ProtocolError` and never aliases
 *   the received bytes.
 *
 * @module
 */

import { computeGeometry, PIXEL_FORMATS, validateGeometry } from "../../src/core/geometry.ts";
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
import { fail, type FuzzTarget, protocolOnly } from "./contracts.ts";
import type { Field, Xorshift } from "./mutate.ts";

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

/** The wire codec's targets, in the order `TARGETS` (fuzz.ts) runs them. */
export const WIRE_TARGETS: readonly FuzzTarget[] = [
  { name: "wire.decodeHeader", seeds: headerSeeds, fields: HEADER_FIELDS, run: runHeader },
  { name: "wire.decodeMeta", seeds: metaSeeds, fields: [], run: runMeta },
];
