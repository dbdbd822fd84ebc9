/**
 * The surfaceport wire header and metadata encoding, shared by every
 * platform: it is the payload of a `SOCK_SEQPACKET` message on Linux (next to
 * one fd in `SCM_RIGHTS`) and rides inline after the port descriptor in a
 * mach message on macOS. `docs/protocol.md` is the normative description.
 *
 * @module
 */

import {
  formatOfFourcc,
  fourccOf,
  type PlaneGeometry,
  type SurfaceGeometry,
  validateGeometry,
} from "../core/geometry.ts";
import { ProtocolError } from "../core/errors.ts";

/** The four bytes every message starts with: ASCII `SPRT`. */
export const WIRE_MAGIC = 0x54525053; // "SPRT" read as a little-endian u32
/** The protocol version this library speaks. */
export const WIRE_VERSION = 1;
/** Message type: a surface, with exactly one handle (fd or port). */
export const MESSAGE_SURFACE = 1;
/** Size of the fixed header in bytes (a multiple of 8). */
export const HEADER_SIZE = 136;
/** Plane records in the header; unused ones are zero. */
export const MAX_PLANES = 3;
/** Offset of the first plane record. */
const PLANES_OFFSET = 64;
/** Bytes per plane record. */
const PLANE_RECORD_SIZE = 24;
/** The largest sequence number and timestamp magnitude on the wire: `Number.MAX_SAFE_INTEGER`. */
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** The default and largest metadata size a channel accepts: 64 KiB. */
export const DEFAULT_MAX_META_BYTES = 65536;

/** How the metadata bytes are to be read (header `flags` bits 0-1). */
export const META_NONE = 0;
/** Metadata is raw bytes, handed back as a `Uint8Array`. */
export const META_BYTES = 1;
/** Metadata is UTF-8 JSON, handed back parsed. */
export const META_JSON = 2;

/** The decoded fixed header. */
export interface WireHeader {
  /** Message type (only {@link MESSAGE_SURFACE} so far). */
  type: number;
  /** The surface's layout, as the sender describes it. */
  geometry: SurfaceGeometry;
  /** How to read the metadata: {@link META_NONE}, {@link META_BYTES} or {@link META_JSON}. */
  metaKind: number;
  /** Length of the metadata that follows the header. */
  metaLength: number;
  /** The sender's per-channel sequence number, starting at 0; at most 2^53-1 (a number: no BigInt per message). */
  sequence: number;
  /** The sender's timestamp, microseconds since the Unix epoch (CLOCK_REALTIME); |t| ≤ 2^53-1. */
  timestamp: number;
}

/**
 * Writes the fixed header for a surface message into `view` (at least
 * {@link HEADER_SIZE} bytes). Layout (little-endian):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | magic `SPRT` |
 * | 4 | 2 | version (1) |
 * | 6 | 2 | type (1 = surface) |
 * | 8 | 2 | header size (136) |
 * | 10 | 2 | flags: bits 0-1 metadata kind |
 * | 12 | 4 | pixel format fourcc (e.g. 0x42475241 for BGRA) |
 * | 16 | 4 | width |
 * | 20 | 4 | height |
 * | 24 | 4 | plane count (1-3) |
 * | 28 | 4 | metadata length |
 * | 32 | 8 | sequence number |
 * | 40 | 8 | timestamp, µs since the Unix epoch (i64) |
 * | 48 | 8 | alloc size: bytes of the shared memory |
 * | 56 | 8 | reserved, zero |
 * | 64 + 24·i | 24 | plane i: offset u64, bytesPerRow u32, width u32, height u32, bytesPerElement u32 |
 */
export function encodeHeader(
  view: DataView,
  geometry: SurfaceGeometry,
  metaKind: number,
  metaLength: number,
  sequence: bigint,
  timestamp: number,
): void {
  view.setUint32(0, WIRE_MAGIC, true);
  view.setUint16(4, WIRE_VERSION, true);
  view.setUint16(6, MESSAGE_SURFACE, true);
  view.setUint16(8, HEADER_SIZE, true);
  view.setUint16(10, metaKind & 3, true);
  view.setUint32(12, fourccOf(geometry.format), true);
  view.setUint32(16, geometry.width, true);
  view.setUint32(20, geometry.height, true);
  view.setUint32(24, geometry.planes.length, true);
  view.setUint32(28, metaLength, true);
  view.setBigUint64(32, sequence, true);
  view.setBigInt64(40, BigInt(Math.trunc(timestamp)), true);
  view.setBigUint64(48, BigInt(geometry.allocSize), true);
  view.setBigUint64(56, 0n, true);
  for (let i = 0; i < MAX_PLANES; i++) {
    const at = PLANES_OFFSET + i * PLANE_RECORD_SIZE;
    const plane = geometry.planes[i];
    view.setBigUint64(at, BigInt(plane?.offset ?? 0), true);
    view.setUint32(at + 8, plane?.bytesPerRow ?? 0, true);
    view.setUint32(at + 12, plane?.width ?? 0, true);
    view.setUint32(at + 16, plane?.height ?? 0, true);
    view.setUint32(at + 20, plane?.bytesPerElement ?? 0, true);
  }
}

/**
 * Decodes and checks the header at the start of `message` (the whole
 * received payload). Throws {@link ProtocolError} for anything that is not a
 * well-formed surface message within `maxBytes` / `maxMetaBytes`.
 */
export function decodeHeader(
  message: Uint8Array,
  maxBytes: number,
  maxMetaBytes: number = DEFAULT_MAX_META_BYTES,
): WireHeader {
  if (message.length < 8) {
    throw new ProtocolError("SHORT_MESSAGE", `message of ${message.length} bytes has no header`);
  }
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  if (view.getUint32(0, true) !== WIRE_MAGIC) {
    throw new ProtocolError("BAD_MAGIC", `message does not start with "SPRT"`);
  }
  const version = view.getUint16(4, true);
  if (version !== WIRE_VERSION) {
    throw new ProtocolError(
      "BAD_VERSION",
      `protocol version ${version}, this side speaks ${WIRE_VERSION}`,
    );
  }
  const type = view.getUint16(6, true);
  if (type !== MESSAGE_SURFACE) throw new ProtocolError("BAD_TYPE", `unknown message type ${type}`);
  if (message.length < HEADER_SIZE) {
    throw new ProtocolError(
      "SHORT_MESSAGE",
      `message of ${message.length} bytes is shorter than the ${HEADER_SIZE}-byte header`,
    );
  }
  const headerSize = view.getUint16(8, true);
  if (headerSize !== HEADER_SIZE) {
    throw new ProtocolError(
      "BAD_HEADER",
      `headerSize field says ${headerSize}, version ${WIRE_VERSION} headers are ${HEADER_SIZE} bytes`,
    );
  }
  const flags = view.getUint16(10, true);
  const metaKind = flags & 3;
  if (flags & ~3 || metaKind === 3) {
    throw new ProtocolError("BAD_META", `unknown flags 0x${flags.toString(16)}`);
  }
  const fourcc = view.getUint32(12, true);
  const format = formatOfFourcc(fourcc);
  if (!format) {
    throw new ProtocolError("BAD_GEOMETRY", `unknown pixel format fourcc 0x${fourcc.toString(16)}`);
  }
  const planeCount = view.getUint32(24, true);
  if (planeCount < 1 || planeCount > MAX_PLANES) {
    throw new ProtocolError("BAD_GEOMETRY", `plane count ${planeCount} is not 1 to ${MAX_PLANES}`);
  }
  const metaLength = view.getUint32(28, true);
  if (metaLength > maxMetaBytes) {
    throw new ProtocolError("TOO_LARGE", `metadata of ${metaLength} bytes exceeds ${maxMetaBytes}`);
  }
  if (message.length !== HEADER_SIZE + metaLength) {
    throw new ProtocolError(
      "SHORT_MESSAGE",
      `message is ${message.length} bytes, header says ${HEADER_SIZE + metaLength}`,
    );
  }
  // Kind 1 may be empty (an empty Uint8Array round-trips); kind 2 may not (no JSON text is empty).
  if (
    (metaKind === META_NONE && metaLength !== 0) || (metaKind === META_JSON && metaLength === 0)
  ) {
    throw new ProtocolError("BAD_META", `metadata kind ${metaKind} with length ${metaLength}`);
  }
  if (view.getBigUint64(56, true) !== 0n) {
    throw new ProtocolError("BAD_HEADER", "the reserved field (bytes 56-63) is not zero");
  }
  const sequence = view.getBigUint64(32, true);
  if (sequence > MAX_SAFE) {
    throw new ProtocolError("BAD_HEADER", `sequence ${sequence} is over 2^53-1`);
  }
  const timestamp = view.getBigInt64(40, true);
  if (timestamp > MAX_SAFE || timestamp < -MAX_SAFE) {
    throw new ProtocolError("BAD_HEADER", `timestamp ${timestamp} is outside ±(2^53-1)`);
  }
  const allocSize = view.getBigUint64(48, true);
  if (allocSize > BigInt(maxBytes)) {
    throw new ProtocolError(
      "TOO_LARGE",
      `surface of ${allocSize} bytes exceeds the limit of ${maxBytes}`,
    );
  }
  const planes: PlaneGeometry[] = [];
  for (let i = 0; i < planeCount; i++) {
    const at = PLANES_OFFSET + i * PLANE_RECORD_SIZE;
    const offset = view.getBigUint64(at, true);
    if (offset > allocSize) {
      throw new ProtocolError(
        "BAD_GEOMETRY",
        `plane ${i} offset ${offset} is past allocSize ${allocSize}`,
      );
    }
    planes.push({
      offset: Number(offset),
      bytesPerRow: view.getUint32(at + 8, true),
      width: view.getUint32(at + 12, true),
      height: view.getUint32(at + 16, true),
      bytesPerElement: view.getUint32(at + 20, true),
    });
  }
  const geometry: SurfaceGeometry = {
    width: view.getUint32(16, true),
    height: view.getUint32(20, true),
    format,
    planes,
    allocSize: Number(allocSize),
  };
  const problem = validateGeometry(geometry);
  if (problem) throw new ProtocolError("BAD_GEOMETRY", problem);
  for (let at = PLANES_OFFSET + planeCount * PLANE_RECORD_SIZE; at < HEADER_SIZE; at += 8) {
    if (view.getBigUint64(at, true) !== 0n) {
      throw new ProtocolError(
        "BAD_HEADER",
        `plane records past planeCount ${planeCount} are not all zero (byte ${at})`,
      );
    }
  }
  return {
    type,
    geometry,
    metaKind,
    metaLength,
    sequence: Number(sequence),
    timestamp: Number(timestamp),
  };
}

const TWO_32 = 0x1_0000_0000;
const MAX_SAFE_NUMBER = Number.MAX_SAFE_INTEGER;

/** Writes the i64 `value` (an integer, |value| < 2^53) at `offset` without a BigInt. */
function setInt64(view: DataView, offset: number, value: number): void {
  const high = Math.floor(value / TWO_32);
  view.setUint32(offset, value - high * TWO_32, true);
  view.setInt32(offset + 4, high, true);
}

/**
 * Writes a channel's headers into one reusable buffer, for the send hot path:
 * the geometry part (format, size, planes) is rewritten only when the
 * surface's geometry object changes (a pool's surfaces share one), the rest
 * per message, with no DataView, BigInt or buffer allocated per send.
 */
export class HeaderEncoder {
  /** The header of the last {@link encode}: valid until the next call. */
  readonly header: Uint8Array = new Uint8Array(HEADER_SIZE);
  readonly #view = new DataView(this.header.buffer);
  #geometry: SurfaceGeometry | undefined;

  /**
   * Encodes a surface header into {@link header} and returns it. `sequence`
   * and `timestamp` are integers below 2^53 in magnitude.
   */
  encode(
    geometry: SurfaceGeometry,
    metaKind: number,
    metaLength: number,
    sequence: number,
    timestamp: number,
  ): Uint8Array {
    this.#geometry = encodeHeaderOver(
      this.#view,
      this.#geometry,
      geometry,
      metaKind,
      metaLength,
      sequence,
      timestamp,
    );
    return this.header;
  }
}

/**
 * Writes a surface header into `view`, which holds a header for `written`
 * (the geometry last written there, or `undefined`): the geometry part is
 * rewritten only when `geometry` is another object, the rest always, with
 * no BigInt. `sequence` and `timestamp` are integers below 2^53 in
 * magnitude. Returns `geometry`, what `view` now holds. For buffers reused
 * from frame to frame ({@link HeaderEncoder}, a publisher's messages).
 */
export function encodeHeaderOver(
  view: DataView,
  written: SurfaceGeometry | undefined,
  geometry: SurfaceGeometry,
  metaKind: number,
  metaLength: number,
  sequence: number,
  timestamp: number,
): SurfaceGeometry {
  if (geometry !== written) encodeHeader(view, geometry, metaKind, metaLength, 0n, 0);
  view.setUint16(10, metaKind & 3, true);
  view.setUint32(28, metaLength, true);
  setInt64(view, 32, sequence);
  setInt64(view, 40, Math.trunc(timestamp));
  return geometry;
}

/** Words of a header the {@link HeaderDecoder} compares with the last one: all but flags, metadata length, sequence and timestamp. */
const GEOMETRY_WORDS = [0, 1, 3, 4, 5, 6, ...Array.from({ length: 22 }, (_, i) => 12 + i)];

/**
 * Decodes the headers arriving in one receive buffer, for the receive hot
 * path: when the geometry part of a header (every byte but the flags,
 * metadata length, sequence and timestamp) equals that of the last header
 * that passed {@link decodeHeader}, its checked, frozen geometry is reused
 * and only the per-message fields are read and checked, in decodeHeader's
 * order and with its reasons (keep the two in step: the fuzz harness
 * compares them input by input); otherwise the header goes through
 * {@link decodeHeader} in full. Either way the same messages are accepted
 * and refused.
 */
export class HeaderDecoder {
  readonly #buffer: Uint8Array;
  readonly #view: DataView;
  readonly #words: Uint32Array;
  readonly #maxBytes: number;
  readonly #maxMetaBytes: number;
  readonly #last = new Uint32Array(HEADER_SIZE / 4);
  #geometry: SurfaceGeometry | undefined;
  /** What the fast path returns: valid until the next {@link decode}. */
  readonly #header: WireHeader = {
    type: MESSAGE_SURFACE,
    geometry: undefined as unknown as SurfaceGeometry,
    metaKind: 0,
    metaLength: 0,
    sequence: 0,
    timestamp: 0.5, // a double from the start: later timestamps are stored in place
  };

  /** `buffer`: the receive buffer (8-byte aligned, at least {@link HEADER_SIZE} bytes). */
  constructor(buffer: Uint8Array, maxBytes: number, maxMetaBytes: number) {
    this.#buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    this.#words = new Uint32Array(buffer.buffer, buffer.byteOffset, HEADER_SIZE / 4);
    this.#maxBytes = maxBytes;
    this.#maxMetaBytes = maxMetaBytes;
  }

  /**
   * Decodes and checks the message of `length` bytes at the start of the
   * buffer. The result may be a record this decoder rewrites on the next
   * call: read what you need from it before decoding again.
   */
  decode(length: number): WireHeader {
    const geometry = this.#geometry;
    if (geometry !== undefined && length >= HEADER_SIZE && this.#sameGeometry()) {
      const view = this.#view;
      const flags = view.getUint16(10, true);
      const metaKind = flags & 3;
      if (flags & ~3 || metaKind === 3) {
        throw new ProtocolError("BAD_META", `unknown flags 0x${flags.toString(16)}`);
      }
      const metaLength = view.getUint32(28, true);
      if (metaLength > this.#maxMetaBytes) {
        throw new ProtocolError(
          "TOO_LARGE",
          `metadata of ${metaLength} bytes exceeds ${this.#maxMetaBytes}`,
        );
      }
      if (length !== HEADER_SIZE + metaLength) {
        throw new ProtocolError(
          "SHORT_MESSAGE",
          `message is ${length} bytes, header says ${HEADER_SIZE + metaLength}`,
        );
      }
      // Kind 1 may be empty (an empty Uint8Array round-trips); kind 2 may not (no JSON text is empty).
      if (
        (metaKind === META_NONE && metaLength !== 0) ||
        (metaKind === META_JSON && metaLength === 0)
      ) {
        throw new ProtocolError("BAD_META", `metadata kind ${metaKind} with length ${metaLength}`);
      }
      // (The reserved field is among the compared bytes: zero, as decodeHeader checked.)
      if (view.getUint32(36, true) >= 0x200000) {
        throw new ProtocolError(
          "BAD_HEADER",
          `sequence ${view.getBigUint64(32, true)} is over 2^53-1`,
        );
      }
      const timestampHigh = view.getInt32(44, true);
      const timestamp = timestampHigh * TWO_32 + view.getUint32(40, true);
      if (timestampHigh < -0x200000 || timestampHigh >= 0x200000 || timestamp < -MAX_SAFE_NUMBER) {
        throw new ProtocolError(
          "BAD_HEADER",
          `timestamp ${view.getBigInt64(40, true)} is outside ±(2^53-1)`,
        );
      }
      // One record per decoder, rewritten in place: no object, BigInt or number box per message.
      const header = this.#header;
      header.geometry = geometry;
      header.metaKind = metaKind;
      header.metaLength = metaLength;
      header.sequence = view.getUint32(36, true) * TWO_32 + view.getUint32(32, true);
      header.timestamp = timestamp;
      return header;
    }
    const header = decodeHeader(
      this.#buffer.subarray(0, length),
      this.#maxBytes,
      this.#maxMetaBytes,
    );
    for (const plane of header.geometry.planes) Object.freeze(plane);
    Object.freeze(header.geometry.planes);
    Object.freeze(header.geometry);
    this.#last.set(this.#words);
    this.#geometry = header.geometry;
    return header;
  }

  #sameGeometry(): boolean {
    const words = this.#words, last = this.#last;
    if ((words[2] & 0xffff) !== (last[2] & 0xffff)) return false; // header size; not the flags
    for (let k = 0; k < GEOMETRY_WORDS.length; k++) {
      const i = GEOMETRY_WORDS[k];
      if (words[i] !== last[i]) return false;
    }
    return true;
  }
}

const encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF in the text, so JSON.parse refuses it as RFC 8259 says a sender must not add one.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Metadata a sender may attach: raw bytes, or any JSON-serialisable value. */
export type Meta = Uint8Array | unknown;

const NO_META = { kind: META_NONE, bytes: new Uint8Array(0) } as const;

/**
 * Encodes `meta` for the wire: `undefined` → none, `Uint8Array` → bytes
 * (an empty one too: it arrives as an empty `Uint8Array`), anything else →
 * JSON.
 */
export function encodeMeta(meta: Meta): { kind: number; bytes: Uint8Array } {
  if (meta === undefined) return NO_META;
  if (meta instanceof Uint8Array) return { kind: META_BYTES, bytes: meta };
  const json = JSON.stringify(meta);
  if (json === undefined) {
    throw new TypeError(`metadata must be a Uint8Array or JSON-serialisable, got ${typeof meta}`);
  }
  return { kind: META_JSON, bytes: encoder.encode(json) };
}

/** Decodes metadata bytes as `kind` says; the bytes are copied, never aliased. */
export function decodeMeta(kind: number, bytes: Uint8Array): unknown {
  if (kind === META_NONE) return undefined;
  if (kind === META_BYTES) return bytes.slice();
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (error) {
    throw new ProtocolError(
      "BAD_META",
      `metadata is not valid UTF-8 JSON: ${(error as Error).message}`,
    );
  }
}

/** Microseconds since the Unix epoch, with sub-millisecond resolution. */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}
