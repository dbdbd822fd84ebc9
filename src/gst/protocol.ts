/**
 * A codec for GStreamer's `unixfdsink` / `unixfdsrc` protocol (GStreamer
 * 1.24+, `gst/unixfd/` in gst-plugins-bad), as read from GStreamer 1.26.2.
 * Pure bytes in, typed values out: no system calls, so it is fuzzed on its own.
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

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** Reads a u64 that must fit a JS number exactly (a size or an offset). */
function safeU64(view: DataView, at: number, what: string): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new GstProtocolError("SHORT_PAYLOAD", `${what} ${value} is out of range`);
  }
  return Number(value);
}

/** Decodes the 8-byte command header; rejects payloads over `maxPayload`. */
export function decodeCommandHeader(
  bytes: Uint8Array,
  maxPayload: number = DEFAULT_MAX_PAYLOAD,
): { command: number; payloadSize: number } {
  if (bytes.length < COMMAND_HEADER_SIZE) {
    throw new GstProtocolError("SHORT_PAYLOAD", `command header has ${bytes.length} of 8 bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, COMMAND_HEADER_SIZE);
  const command = view.getUint32(0, true);
  const payloadSize = view.getUint32(4, true);
  if (payloadSize > maxPayload) {
    throw new GstProtocolError(
      "PAYLOAD_TOO_LARGE",
      `command ${command} announces ${payloadSize} payload bytes, over the limit of ${maxPayload}`,
    );
  }
  return { command, payloadSize };
}

/** Decodes serialized metas (`count` of them) from `bytes`. */
export function decodeMetas(bytes: Uint8Array, count: number): GstSerializedMeta[] {
  const metas: GstSerializedMeta[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (bytes.length - at < 10) {
      throw new GstProtocolError(
        "BAD_META",
        `meta ${i} of ${count}: only ${bytes.length - at} bytes left`,
      );
    }
    const total = view.getUint32(at, true);
    const nameLength = view.getUint32(at + 4, true);
    const headerSize = 8 + nameLength + 2;
    if (total < headerSize || total > bytes.length - at) {
      throw new GstProtocolError(
        "BAD_META",
        `meta ${i}: size ${total} does not fit (header ${headerSize}, ${bytes.length - at} left)`,
      );
    }
    if (bytes[at + 8 + nameLength] !== 0) {
      throw new GstProtocolError("BAD_META", `meta ${i}: name is not NUL-terminated`);
    }
    let name: string;
    try {
      name = decoder.decode(bytes.subarray(at + 8, at + 8 + nameLength));
    } catch {
      throw new GstProtocolError("BAD_META", `meta ${i}: name is not UTF-8`);
    }
    metas.push({
      name,
      version: bytes[at + headerSize - 1],
      payload: bytes.subarray(at + headerSize, at + total),
    });
    at += total;
  }
  return metas;
}

/** Decodes a GstVideoMeta payload (version 0); `undefined` for another version or a short one. */
export function decodeVideoMeta(meta: GstSerializedMeta): GstVideoMetaRecord | undefined {
  if (meta.version !== 0) return undefined;
  const bytes = meta.payload;
  if (bytes.length < 20) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const planes = view.getUint32(16, true);
  if (planes < 1 || planes > 4 || bytes.length < 36 + planes * 16) {
    return undefined;
  }
  const offsets: number[] = [];
  const strides: number[] = [];
  for (let i = 0; i < planes; i++) {
    const offset = view.getBigUint64(20 + 8 * i, true);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    offsets.push(Number(offset));
    strides.push(view.getInt32(20 + 8 * planes + 4 * i, true));
  }
  return {
    flags: view.getInt32(0, true),
    format: view.getInt32(4, true),
    width: view.getUint32(8, true),
    height: view.getUint32(12, true),
    offsets,
    strides,
  };
}

/**
 * Decodes one message as the client (`unixfdsrc` side) receives it from a
 * sink: `payload` is exactly `payloadSize` bytes and `fds` every descriptor
 * that arrived with it. On success the descriptors are handed to the
 * returned NEW_BUFFER message (and none arrive with any other message); on
 * a throw the caller still owns them and must close them.
 */
export function decodeSinkMessage(
  command: number,
  payload: Uint8Array,
  fds: readonly number[],
): GstMessage {
  if (command !== GST_COMMAND.NEW_BUFFER && fds.length > 0) {
    throw new GstProtocolError(
      "UNEXPECTED_FDS",
      `command ${command} came with ${fds.length} descriptors; only NEW_BUFFER carries any`,
    );
  }
  switch (command) {
    case GST_COMMAND.NEW_BUFFER:
      return { type: "new-buffer", buffer: decodeNewBuffer(payload, fds.length), fds: [...fds] };
    case GST_COMMAND.CAPS:
      return { type: "caps", caps: decodeCaps(payload) };
    case GST_COMMAND.EOS:
      return { type: "eos" };
    case GST_COMMAND.RELEASE_BUFFER:
      throw new GstProtocolError("WRONG_DIRECTION", "a sink never sends RELEASE_BUFFER");
    default:
      return { type: "unknown", command };
  }
}

/**
 * Decodes one message as the server (`unixfdsink` side) receives it from a
 * client: only RELEASE_BUFFER (and unknown commands, ignored) are valid.
 */
export function decodeClientMessage(
  command: number,
  payload: Uint8Array,
  fds: readonly number[],
): GstMessage {
  if (fds.length > 0) {
    throw new GstProtocolError(
      "UNEXPECTED_FDS",
      `a client sent ${fds.length} descriptors with command ${command}`,
    );
  }
  switch (command) {
    case GST_COMMAND.RELEASE_BUFFER: {
      if (payload.length < RELEASE_BUFFER_SIZE) {
        throw new GstProtocolError(
          "SHORT_PAYLOAD",
          `RELEASE_BUFFER has ${payload.length} of ${RELEASE_BUFFER_SIZE} bytes`,
        );
      }
      const view = new DataView(payload.buffer, payload.byteOffset, RELEASE_BUFFER_SIZE);
      return { type: "release-buffer", id: view.getBigUint64(0, true) };
    }
    case GST_COMMAND.NEW_BUFFER:
    case GST_COMMAND.CAPS:
    case GST_COMMAND.EOS:
      throw new GstProtocolError("WRONG_DIRECTION", `a client never sends command ${command}`);
    default:
      return { type: "unknown", command };
  }
}

function decodeCaps(payload: Uint8Array): string {
  if (payload.length < 1 || payload[payload.length - 1] !== 0) {
    throw new GstProtocolError("BAD_CAPS", "caps string is not NUL-terminated");
  }
  const text = payload.subarray(0, payload.length - 1);
  if (text.includes(0)) throw new GstProtocolError("BAD_CAPS", "caps string contains a NUL");
  try {
    return decoder.decode(text);
  } catch {
    throw new GstProtocolError("BAD_CAPS", "caps string is not UTF-8");
  }
}

function decodeNewBuffer(payload: Uint8Array, fdCount: number): GstNewBuffer {
  if (payload.length < NEW_BUFFER_SIZE) {
    throw new GstProtocolError(
      "SHORT_PAYLOAD",
      `NEW_BUFFER has ${payload.length} of ${NEW_BUFFER_SIZE} bytes`,
    );
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const type = view.getUint8(52);
  const memoryCount = view.getUint8(53);
  const metaCount = view.getUint16(54, true);
  if (type > 1) throw new GstProtocolError("BAD_MEMORY_TYPE", `unknown memory type ${type}`);
  const fixed = NEW_BUFFER_SIZE + MEMORY_RECORD_SIZE * memoryCount;
  if (payload.length < fixed) {
    throw new GstProtocolError(
      "SHORT_PAYLOAD",
      `NEW_BUFFER with ${memoryCount} memories needs ${fixed} bytes, has ${payload.length}`,
    );
  }
  if (fdCount !== memoryCount) {
    throw new GstProtocolError(
      "FD_COUNT",
      `NEW_BUFFER has ${memoryCount} memories but came with ${fdCount} descriptors`,
    );
  }
  const memories: GstMemoryRecord[] = [];
  for (let i = 0; i < memoryCount; i++) {
    const at = NEW_BUFFER_SIZE + MEMORY_RECORD_SIZE * i;
    memories.push({
      size: safeU64(view, at, `memory ${i} size`),
      offset: safeU64(view, at + 8, `memory ${i} offset`),
    });
  }
  const metas = decodeMetas(payload.subarray(fixed), metaCount);
  let videoMeta: GstVideoMetaRecord | undefined;
  for (const meta of metas) {
    if (meta.name === "GstVideoMeta") {
      videoMeta = decodeVideoMeta(meta);
      if (!videoMeta) {
        throw new GstProtocolError(
          "BAD_META",
          "GstVideoMeta is malformed or of an unknown version",
        );
      }
      break;
    }
  }
  return {
    id: view.getBigUint64(0, true),
    pts: view.getBigUint64(8, true),
    dts: view.getBigUint64(16, true),
    duration: view.getBigUint64(24, true),
    offset: view.getBigUint64(32, true),
    offsetEnd: view.getBigUint64(40, true),
    flags: view.getUint32(48, true),
    memoryType: type === 1 ? "dmabuf" : "memfd",
    memories,
    metas,
    videoMeta,
  };
}

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
