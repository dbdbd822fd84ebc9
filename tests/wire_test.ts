import assert from "node:assert/strict";
import { ProtocolError } from "../mod.ts";
import { computeGeometry } from "../src/core/geometry.ts";
import {
  decodeHeader,
  decodeMeta,
  encodeHeader,
  encodeMeta,
  HEADER_SIZE,
  HeaderDecoder,
  HeaderEncoder,
  META_BYTES,
  META_JSON,
  META_NONE,
} from "../src/wire/wire.ts";

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
}

function header(meta: Uint8Array = new Uint8Array(0), kind = META_NONE): Uint8Array {
  const geometry = computeGeometry(64, 32, "420v");
  const message = new Uint8Array(HEADER_SIZE + meta.length);
  encodeHeader(
    new DataView(message.buffer),
    geometry,
    kind,
    meta.length,
    0x001f030405060708n,
    1_700_000_000_123_456,
  );
  message.set(meta, HEADER_SIZE);
  return message;
}

Deno.test("wire: golden bytes of a 64x32 420v header", () => {
  const bytes = header();
  assert.equal(bytes.length, 136);
  assert.equal(
    hex(bytes.subarray(0, 64)),
    [
      "53 50 52 54", // magic "SPRT"
      "01 00", // version 1
      "01 00", // type 1: surface
      "88 00", // header size 136
      "00 00", // flags: no metadata
      "76 30 32 34", // fourcc 0x34323076 "420v", little-endian
      "40 00 00 00", // width 64
      "20 00 00 00", // height 32
      "02 00 00 00", // 2 planes
      "00 00 00 00", // metadata length 0
      "08 07 06 05 04 03 1f 00", // sequence (at most 2^53-1)
      "40 22 20 18 24 0a 06 00", // timestamp 1700000000123456 µs
      "00 10 00 00 00 00 00 00", // alloc size 4096
      "00 00 00 00 00 00 00 00", // reserved
    ].join(" "),
  );
  assert.equal(
    hex(bytes.subarray(64, 136)),
    [
      "00 00 00 00 00 00 00 00 40 00 00 00 40 00 00 00 20 00 00 00 01 00 00 00", // Y: offset 0, bpr 64, 64x32, bpe 1
      "00 08 00 00 00 00 00 00 40 00 00 00 20 00 00 00 10 00 00 00 02 00 00 00", // CbCr: offset 2048, bpr 64, 32x16, bpe 2
      "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", // unused
    ].join(" "),
  );
});

Deno.test("wire: header round trip", () => {
  const decoded = decodeHeader(header(), 1 << 30);
  assert.deepEqual(decoded.geometry, computeGeometry(64, 32, "420v"));
  assert.equal(decoded.sequence, 0x001f030405060708);
  assert.equal(decoded.timestamp, 1_700_000_000_123_456);
  assert.equal(decoded.metaKind, META_NONE);
});

Deno.test("wire: metadata encodings", () => {
  assert.deepEqual(encodeMeta(undefined), { kind: META_NONE, bytes: new Uint8Array(0) });
  assert.equal(encodeMeta(new Uint8Array([1, 2])).kind, META_BYTES);
  const json = encodeMeta({ pts: 1, tags: ["a"] });
  assert.equal(json.kind, META_JSON);
  assert.deepEqual(decodeMeta(json.kind, json.bytes), { pts: 1, tags: ["a"] });
  assert.equal(decodeMeta(META_JSON, encodeMeta(null).bytes), null);
  // An empty Uint8Array is bytes of length 0 (kind 1), and comes back as one, not as undefined.
  assert.deepEqual(encodeMeta(new Uint8Array(0)), { kind: META_BYTES, bytes: new Uint8Array(0) });
  assert.deepEqual(decodeMeta(META_BYTES, new Uint8Array(0)), new Uint8Array(0));
  // A byte-order mark is not JSON (RFC 8259 §8.1): refused, not skipped.
  assert.throws(
    () => decodeMeta(META_JSON, new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d])),
    ProtocolError,
  );
  assert.deepEqual(decodeMeta(META_JSON, new TextEncoder().encode("{}")), {});
  assert.throws(() => encodeMeta(() => 1), TypeError);
  assert.throws(() => encodeMeta(10n), TypeError);
  assert.throws(() => decodeMeta(META_JSON, new Uint8Array([0xff])), ProtocolError);
  const raw = new Uint8Array([9, 8]);
  const back = decodeMeta(META_BYTES, raw) as Uint8Array;
  assert.deepEqual(back, raw);
  assert.notEqual(back.buffer, raw.buffer, "a copy");
});

Deno.test("wire: malformed headers are ProtocolErrors with a reason", () => {
  const cases: [string, (b: Uint8Array, v: DataView) => Uint8Array][] = [
    ["SHORT_MESSAGE", (b) => b.subarray(0, 4)],
    ["BAD_MAGIC", (b, v) => (v.setUint8(0, 0), b)],
    ["BAD_VERSION", (b, v) => (v.setUint16(4, 2, true), b)],
    ["BAD_TYPE", (b, v) => (v.setUint16(6, 9, true), b)],
    ["SHORT_MESSAGE", (b) => b.subarray(0, 100)],
    ["BAD_HEADER", (b, v) => (v.setUint16(8, 100, true), b)],
    ["BAD_HEADER", (b, v) => (v.setUint16(8, 200, true), b)],
    ["BAD_META", (b, v) => (v.setUint16(10, 3, true), b)],
    ["BAD_META", (b, v) => (v.setUint16(10, 2, true), b)], // JSON of length 0
    ["BAD_HEADER", (b, v) => (v.setBigUint64(56, 1n, true), b)], // reserved
    ["BAD_HEADER", (b, v) => (v.setUint32(132, 1, true), b)], // plane record 2 of a 2-plane format
    ["BAD_HEADER", (b, v) => (v.setBigUint64(32, 1n << 53n, true), b)], // sequence 2^53
    ["BAD_HEADER", (b, v) => (v.setBigUint64(32, (1n << 64n) - 1n, true), b)], // sequence 2^64-1
    ["BAD_HEADER", (b, v) => (v.setBigInt64(40, 1n << 53n, true), b)], // timestamp 2^53
    ["BAD_HEADER", (b, v) => (v.setBigInt64(40, -(1n << 53n), true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setBigUint64(88, 0n, true), b)], // chroma over luma
    ["BAD_GEOMETRY", (b, v) => (v.setBigUint64(88, 2047n, true), b)], // one byte of overlap
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(12, 0x11111111, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(24, 0, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(24, 4, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(24, 1, true), b)],
    ["TOO_LARGE", (b, v) => (v.setUint32(28, 1 << 20, true), b)],
    ["SHORT_MESSAGE", (b, v) => (v.setUint32(28, 4, true), b)],
    ["TOO_LARGE", (b, v) => (v.setBigUint64(48, 1n << 40n, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setBigUint64(48, 100n, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(16, 0xffffffff, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(16, 63, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(72, 10, true), b)], // bytesPerRow shorter than a row
    ["BAD_GEOMETRY", (b, v) => (v.setBigUint64(88, 4000n, true), b)], // plane 1 overruns
    ["BAD_GEOMETRY", (b, v) => (v.setBigUint64(88, 1n << 62n, true), b)],
    ["BAD_GEOMETRY", (b, v) => (v.setUint32(108, 1, true), b)], // wrong bytesPerElement
  ];
  for (const [reason, mutate] of cases) {
    const bytes = header();
    const mutated = mutate(bytes, new DataView(bytes.buffer));
    assert.throws(() => decodeHeader(mutated, 1 << 30), (e: unknown) => {
      assert.ok(e instanceof ProtocolError, String(e));
      assert.equal(e.reason, reason, e.message);
      return true;
    });
  }
});

Deno.test("wire: HeaderEncoder writes what encodeHeader writes, reusing one buffer", () => {
  const geometry = computeGeometry(64, 32, "420v");
  const other = computeGeometry(640, 480, "BGRA");
  const encoder = new HeaderEncoder();
  for (
    const [g, kind, length, sequence, timestamp] of [
      [geometry, META_NONE, 0, 0, 1_700_000_000_123_456],
      [geometry, META_JSON, 17, 2 ** 40 + 3, -5],
      [other, META_BYTES, 3, 7, 0],
      [geometry, META_NONE, 0, 8, 2 ** 52],
    ] as const
  ) {
    const expected = new Uint8Array(HEADER_SIZE);
    encodeHeader(new DataView(expected.buffer), g, kind, length, BigInt(sequence), timestamp);
    const encoded = encoder.encode(g, kind, length, sequence, timestamp);
    assert.equal(encoded, encoder.header, "the same buffer every time");
    assert.equal(hex(encoded), hex(expected));
  }
});

Deno.test("wire: HeaderDecoder reuses a checked geometry and still checks every message", () => {
  const buffer = new Uint8Array(HEADER_SIZE + 64 + 1);
  const decoder = new HeaderDecoder(buffer, 1 << 30, 64);
  buffer.set(header());
  const first = decoder.decode(HEADER_SIZE);
  assert.ok(Object.isFrozen(first.geometry) && Object.isFrozen(first.geometry.planes[0]));
  const meta = new TextEncoder().encode('{"a":1}');
  buffer.set(header(meta, META_JSON));
  const second = decoder.decode(HEADER_SIZE + meta.length);
  assert.equal(second.geometry, first.geometry, "same geometry bytes: the same checked object");
  assert.deepEqual(
    { ...second, geometry: undefined },
    {
      ...decodeHeader(buffer.subarray(0, HEADER_SIZE + meta.length), 1 << 30, 64),
      geometry: undefined,
    },
  );
  // Per-message fields are checked on the fast path too.
  assert.throws(() => decoder.decode(HEADER_SIZE + meta.length - 1), ProtocolError);
  new DataView(buffer.buffer).setUint32(28, 65, true);
  assert.throws(() => decoder.decode(HEADER_SIZE + 65), ProtocolError);
  new DataView(buffer.buffer).setUint16(10, 3, true);
  assert.throws(() => decoder.decode(HEADER_SIZE + meta.length), ProtocolError);
  // A changed geometry goes through the full decoder.
  buffer.set(header());
  new DataView(buffer.buffer).setUint32(16, 63, true); // odd width for 4:2:0
  assert.throws(() => decoder.decode(HEADER_SIZE), ProtocolError);
});

Deno.test("wire: a wrong headerSize is reported as what the field says (was: 'header is 136 bytes, expected 136')", () => {
  const bytes = header();
  new DataView(bytes.buffer).setUint16(8, 200, true);
  assert.throws(
    () => decodeHeader(bytes, 1 << 30),
    /headerSize field says 200, version 1 headers are 136 bytes/,
  );
  assert.throws(
    () => decodeHeader(bytes.subarray(0, 60), 1 << 30),
    /message of 60 bytes is shorter than the 136-byte header/,
  );
});

Deno.test("wire: the edges of the rules are accepted (sequence 2^53-1, negative timestamps, empty bytes, planes in any memory order, slack allocSize)", () => {
  const bytes = header(new Uint8Array(0), META_BYTES);
  const v = new DataView(bytes.buffer);
  v.setBigUint64(32, (1n << 53n) - 1n, true);
  v.setBigInt64(40, -(1n << 53n) + 1n, true);
  const decoded = decodeHeader(bytes, 1 << 30);
  assert.equal(Number(decoded.sequence), Number.MAX_SAFE_INTEGER);
  assert.equal(decoded.timestamp, -Number.MAX_SAFE_INTEGER);
  assert.equal(decoded.metaKind, META_BYTES);
  assert.equal(decoded.metaLength, 0);
  // CbCr first, Y after it; allocSize 100 bytes more than the planes need and not a page multiple.
  v.setBigUint64(64, 1024n, true); // Y at 1024 (64 x 32 rows of 64)
  v.setBigUint64(88, 0n, true); // CbCr at 0 (16 rows of 64)
  v.setBigUint64(48, 1024n + 2048n + 100n, true);
  const moved = decodeHeader(bytes, 1 << 30).geometry;
  assert.equal(moved.planes[0].offset, 1024);
  assert.equal(moved.planes[1].offset, 0);
  assert.equal(moved.allocSize, 3172);
  // The last row counts in full: a last row without its padding is past allocSize.
  v.setBigUint64(48, 1024n + 2048n - 1n, true);
  assert.throws(() => decodeHeader(bytes, 1 << 30), /overruns allocSize/);
});
