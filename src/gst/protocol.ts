/**
 * GStreamer's `unixfdsink` / `unixfdsrc` protocol (GStreamer 1.24+,
 * `gst/unixfd/` in gst-plugins-bad), as read from GStreamer 1.26.2: the
 * wire facts, the decoded types and errors, and the encoders (decoding is
 * `decode.ts`). Pure bytes: no system calls, so the codec is fuzzed on its own.
 *
 * The transport is a `SOCK_STREAM` Unix socket. Each message is one
 * `sendmsg`: an 8-byte command header `{u32 type, u32 payload_size}` in the
 * sender's native byte order (little-endian on every platform surfaceport
 * runs on), the payload, and the descriptors of a new buffer as
 * `SCM_RIGHTS` on the same call (so they arrive with the header's bytes).
 *
 * | type | name | payload | direction |
 * |---|---|---|---|
 * | 0 | NEW_BUFFER | 56-byte record, `n_memory` × `{u64 size, u64 offset}`, `n_meta` serialized GstMetas | sink → src, one fd per memory |
 * | 1 | RELEASE_BUFFER | `{u64 id}` | src → sink |
 * | 2 | CAPS | NUL-terminated caps string | sink → src, first message and on change |
 * | 3 | EOS | none | sink → src |
 *
 * Unknown types are ignored by both GStreamer elements (the protocol may
 * grow); this codec reports them as `{ type: "unknown" }`.
 *
 * @module
 */

import { SurfaceportError } from "../core/errors.ts";

/** The command codes of the unixfd protocol. */
export const GST_COMMAND = {
  NEW_BUFFER: 0,
  RELEASE_BUFFER: 1,
  CAPS: 2,
  EOS: 3,
} as const;

/** Bytes of the command header `{u32 type, u32 payload_size}`. */
export const COMMAND_HEADER_SIZE = 8;
/** Bytes of the fixed NEW_BUFFER record (`NewBufferPayload` without its memories). */
export const NEW_BUFFER_SIZE = 56;
/** Bytes of one `MemoryPayload {u64 size, u64 offset}`. */
export const MEMORY_RECORD_SIZE = 16;
/** Bytes of the RELEASE_BUFFER payload `{u64 id}`. */
export const RELEASE_BUFFER_SIZE = 8;
/** The largest payload this codec accepts by default: far above any real caps string or buffer record. */
export const DEFAULT_MAX_PAYLOAD = 1 << 20;
/** `GST_CLOCK_TIME_NONE`: an absent timestamp or duration. */
export const CLOCK_TIME_NONE = 0xffffffffffffffffn;

/** GStreamer's `GstVideoFormat` values for the formats the bridge maps. */
export const GST_VIDEO_FORMAT = {
  I420: 2,
  RGBA: 11,
  BGRA: 12,
  NV12: 23,
  GRAY8: 25,
} as const;

/** Why a unixfd message was rejected. */
export type GstProtocolErrorReason =
  | "PAYLOAD_TOO_LARGE"
  | "SHORT_PAYLOAD"
  | "BAD_MEMORY_TYPE"
  | "FD_COUNT"
  | "UNEXPECTED_FDS"
  | "BAD_CAPS"
  | "BAD_META"
  | "WRONG_DIRECTION"
  | "DUPLICATE_ID";

/**
 * The GStreamer side sent something that is not a valid unixfd message.
 * Every descriptor that came with it has been closed. The stream cannot be
 * resynchronised: the bridge drops the connection.
 */
export class GstProtocolError extends SurfaceportError {
  /** Which check failed. */
  readonly reason: GstProtocolErrorReason;

  /** Creates the error for a failed check. */
  constructor(reason: GstProtocolErrorReason, message: string) {
    super("PROTOCOL", `unixfd ${reason}: ${message}`);
    this.name = "GstProtocolError";
    this.reason = reason;
  }
}

/** One memory of a buffer: `size` bytes at `offset` inside the descriptor's file. */
export interface GstMemoryRecord {
  /** Bytes of the memory. */
  readonly size: number;
  /** Offset of the memory's first byte inside the file the descriptor refers to. */
  readonly offset: number;
}

/** A serialized GstMeta: `[u32 total][u32 name_len][name NUL][u8 version][payload]`, all LE. */
export interface GstSerializedMeta {
  /** The meta's type name, e.g. `"GstVideoMeta"`. */
  readonly name: string;
  /** The serialization version. */
  readonly version: number;
  /** The meta's own payload (a view into the message). */
  readonly payload: Uint8Array;
}

/** A decoded `GstVideoMeta` (serialization version 0): the layout of a frame's planes. */
export interface GstVideoMetaRecord {
  /** `GstVideoFrameFlags`. */
  readonly flags: number;
  /** `GstVideoFormat`. */
  readonly format: number;
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** Offset of each plane from the start of the buffer's data. */
  readonly offsets: readonly number[];
  /** Bytes per row of each plane. */
  readonly strides: readonly number[];
}

/** A NEW_BUFFER message. */
export interface GstNewBuffer {
  /** The sink's handle for the buffer, to be returned in RELEASE_BUFFER. */
  readonly id: bigint;
  /** Presentation time, ns on the sender's `CLOCK_MONOTONIC`, or {@link CLOCK_TIME_NONE}. */
  readonly pts: bigint;
  /** Decoding time, like {@link pts}. */
  readonly dts: bigint;
  /** Duration in ns, or {@link CLOCK_TIME_NONE}. */
  readonly duration: bigint;
  /** `GST_BUFFER_OFFSET` (for video: the frame number). */
  readonly offset: bigint;
  /** `GST_BUFFER_OFFSET_END`. */
  readonly offsetEnd: bigint;
  /** `GstBufferFlags`. */
  readonly flags: number;
  /** `"memfd"` (any fd memory: memfd, shm) or `"dmabuf"`. */
  readonly memoryType: "memfd" | "dmabuf";
  /** The memories, one descriptor each, in order. */
  readonly memories: readonly GstMemoryRecord[];
  /** The serialized metas, in order. */
  readonly metas: readonly GstSerializedMeta[];
  /** The first GstVideoMeta among {@link metas}, decoded, if there is one. */
  readonly videoMeta: GstVideoMetaRecord | undefined;
}

/** A decoded unixfd message. */
export type GstMessage =
  | { readonly type: "new-buffer"; readonly buffer: GstNewBuffer; readonly fds: number[] }
  | { readonly type: "release-buffer"; readonly id: bigint }
  | { readonly type: "caps"; readonly caps: string }
  | { readonly type: "eos" }
  | { readonly type: "unknown"; readonly command: number };

const encoder = new TextEncoder();

// --- encoding (the bridge as a sink, and tests) -----------------------------

/** Writes a command header for `command` with `payloadSize` into `out` at 0. */
export function encodeCommandHeader(out: Uint8Array, command: number, payloadSize: number): void {
  const view = new DataView(out.buffer, out.byteOffset, COMMAND_HEADER_SIZE);
  view.setUint32(0, command, true);
  view.setUint32(4, payloadSize, true);
}

/** What {@link encodeNewBuffer} writes. */
export interface GstNewBufferFields {
  /** The handle the client returns in RELEASE_BUFFER. */
  id: bigint;
  /** Presentation time in ns (`CLOCK_MONOTONIC`), default none. */
  pts?: bigint;
  /** Decoding time in ns, default none. */
  dts?: bigint;
  /** Duration in ns, default none. */
  duration?: bigint;
  /** Frame number, default none. */
  offset?: bigint;
  /** End offset, default none. */
  offsetEnd?: bigint;
  /** `GstBufferFlags`, default 0. */
  flags?: number;
  /** Memory type, default `"memfd"`. */
  memoryType?: "memfd" | "dmabuf";
  /** The memories, one descriptor each. */
  memories: readonly GstMemoryRecord[];
  /** Serialized metas to append (already encoded), default none. */
  metas?: readonly Uint8Array[];
}

/**
 * Encodes a whole NEW_BUFFER message (header and payload) into `out` (or a
 * new array if it is too small) and returns the used bytes.
 */
export function encodeNewBuffer(fields: GstNewBufferFields, out?: Uint8Array): Uint8Array {
  const metas = fields.metas ?? [];
  let metaBytes = 0;
  for (const meta of metas) metaBytes += meta.length;
  if (fields.memories.length > 255) throw new RangeError("a buffer has at most 255 memories");
  if (metas.length > 0xffff) throw new RangeError("a buffer has at most 65535 metas");
  const payloadSize = NEW_BUFFER_SIZE + MEMORY_RECORD_SIZE * fields.memories.length + metaBytes;
  const total = COMMAND_HEADER_SIZE + payloadSize;
  const bytes = out && out.length >= total ? out.subarray(0, total) : new Uint8Array(total);
  encodeCommandHeader(bytes, GST_COMMAND.NEW_BUFFER, payloadSize);
  const view = new DataView(bytes.buffer, bytes.byteOffset + COMMAND_HEADER_SIZE, payloadSize);
  view.setBigUint64(0, fields.id, true);
  view.setBigUint64(8, fields.pts ?? CLOCK_TIME_NONE, true);
  view.setBigUint64(16, fields.dts ?? CLOCK_TIME_NONE, true);
  view.setBigUint64(24, fields.duration ?? CLOCK_TIME_NONE, true);
  view.setBigUint64(32, fields.offset ?? CLOCK_TIME_NONE, true);
  view.setBigUint64(40, fields.offsetEnd ?? CLOCK_TIME_NONE, true);
  view.setUint32(48, fields.flags ?? 0, true);
  view.setUint8(52, fields.memoryType === "dmabuf" ? 1 : 0);
  view.setUint8(53, fields.memories.length);
  view.setUint16(54, metas.length, true);
  for (let i = 0; i < fields.memories.length; i++) {
    const at = NEW_BUFFER_SIZE + MEMORY_RECORD_SIZE * i;
    view.setBigUint64(at, BigInt(fields.memories[i].size), true);
    view.setBigUint64(at + 8, BigInt(fields.memories[i].offset), true);
  }
  let at = COMMAND_HEADER_SIZE + NEW_BUFFER_SIZE + MEMORY_RECORD_SIZE * fields.memories.length;
  for (const meta of metas) {
    bytes.set(meta, at);
    at += meta.length;
  }
  return bytes;
}

/** Encodes a CAPS message (header, caps text, NUL). */
export function encodeCaps(caps: string): Uint8Array {
  const text = encoder.encode(caps);
  if (text.includes(0)) throw new TypeError("a caps string must not contain NUL");
  const bytes = new Uint8Array(COMMAND_HEADER_SIZE + text.length + 1);
  encodeCommandHeader(bytes, GST_COMMAND.CAPS, text.length + 1);
  bytes.set(text, COMMAND_HEADER_SIZE);
  return bytes;
}

/** Encodes an EOS message. */
export function encodeEos(): Uint8Array {
  const bytes = new Uint8Array(COMMAND_HEADER_SIZE);
  encodeCommandHeader(bytes, GST_COMMAND.EOS, 0);
  return bytes;
}

/** Encodes a RELEASE_BUFFER message for `id` into `out` (16 bytes) or a new array. */
export function encodeRelease(id: bigint, out: Uint8Array = new Uint8Array(16)): Uint8Array {
  encodeCommandHeader(out, GST_COMMAND.RELEASE_BUFFER, RELEASE_BUFFER_SIZE);
  new DataView(out.buffer, out.byteOffset + COMMAND_HEADER_SIZE, 8).setBigUint64(0, id, true);
  return out.subarray(0, COMMAND_HEADER_SIZE + RELEASE_BUFFER_SIZE);
}

/** Serializes a GstMeta frame around `payload` (`gst_meta_serialize`'s format), for tests and peers. */
export function encodeMeta(name: string, version: number, payload: Uint8Array): Uint8Array {
  const nameBytes = encoder.encode(name);
  const total = 8 + nameBytes.length + 2 + payload.length;
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, total, true);
  view.setUint32(4, nameBytes.length, true);
  bytes.set(nameBytes, 8);
  bytes[8 + nameBytes.length] = 0;
  bytes[9 + nameBytes.length] = version;
  bytes.set(payload, 10 + nameBytes.length);
  return bytes;
}
