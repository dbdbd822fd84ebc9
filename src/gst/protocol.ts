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

/** Reads a u64 that must fit a JS number exactly (a size or an offset), without a BigInt. */
function safeU64(view: DataView, at: number, what: string): number {
  const low = view.getUint32(at, true);
  const high = view.getUint32(at + 4, true);
  if (high > MAX_SAFE_HIGH) {
    throw new GstProtocolError(
      "SHORT_PAYLOAD",
      `${what} ${view.getBigUint64(at, true)} is out of range`,
    );
  }
  return high * 2 ** 32 + low;
}

/** The high word of `Number.MAX_SAFE_INTEGER` (2^53 - 1): a u64 fits a number iff its high word is at most this. */
const MAX_SAFE_HIGH = 0x1fffff;

/** A decoded command header. */
export interface GstCommandHeader {
  /** The command code. */
  command: number;
  /** Bytes of payload that follow. */
  payloadSize: number;
}

/** Decodes the 8-byte command header; rejects payloads over `maxPayload`. */
export function decodeCommandHeader(
  bytes: Uint8Array,
  maxPayload: number = DEFAULT_MAX_PAYLOAD,
): GstCommandHeader {
  if (bytes.length < COMMAND_HEADER_SIZE) {
    throw new GstProtocolError("SHORT_PAYLOAD", `command header has ${bytes.length} of 8 bytes`);
  }
  const header = { command: 0, payloadSize: 0 };
  decodeCommandHeaderInto(
    new DataView(bytes.buffer, bytes.byteOffset, COMMAND_HEADER_SIZE),
    maxPayload,
    header,
  );
  return header;
}

/**
 * {@link decodeCommandHeader} for the hot path: reads the header at the
 * start of `view` (at least 8 bytes) into `into`, allocating nothing.
 */
export function decodeCommandHeaderInto(
  view: DataView,
  maxPayload: number,
  into: GstCommandHeader,
): void {
  const command = view.getUint32(0, true);
  const payloadSize = view.getUint32(4, true);
  if (payloadSize > maxPayload) {
    throw new GstProtocolError(
      "PAYLOAD_TOO_LARGE",
      `command ${command} announces ${payloadSize} payload bytes, over the limit of ${maxPayload}`,
    );
  }
  into.command = command;
  into.payloadSize = payloadSize;
}

/** Decodes serialized metas (`count` of them) from `bytes`. */
export function decodeMetas(bytes: Uint8Array, count: number): GstSerializedMeta[] {
  const slots: MetaSlot[] = [];
  scanMetas(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), count, slots);
  return slots.map((slot) => ({ name: slot.name, version: slot.version, payload: slot.payload }));
}

/**
 * A serialized meta found in a payload: its name and version, and where its
 * own payload lies (read lazily, so finding a meta allocates no view).
 * Rewritten in place by {@link GstNewBufferRecord}.
 */
class MetaSlot implements GstSerializedMeta {
  name = "";
  version = 0;
  bytes: Uint8Array = EMPTY;
  start = 0;
  end = 0;

  get payload(): Uint8Array {
    return this.bytes.subarray(this.start, this.end);
  }
}

const EMPTY = new Uint8Array(0);
const EMPTY_VIEW = new DataView(EMPTY.buffer);
/** The one meta name the bridge reads, compared as bytes: no string is decoded for it. */
const VIDEO_META_NAME = "GstVideoMeta";
const VIDEO_META_NAME_BYTES = encoder.encode(VIDEO_META_NAME);

/** Whether `bytes[at, at + length)` spells `name`. */
function bytesEqual(bytes: Uint8Array, at: number, length: number, name: Uint8Array): boolean {
  if (length !== name.length) return false;
  for (let i = 0; i < length; i++) if (bytes[at + i] !== name[i]) return false;
  return true;
}

/**
 * Finds `count` serialized metas in `bytes` (`view` over the same bytes),
 * checking each as {@link decodeMetas} says, into `slots` (reused: grown as
 * needed, its first `count` rewritten). Allocates nothing for a
 * `GstVideoMeta` (its name is the constant); another name is decoded.
 */
function scanMetas(bytes: Uint8Array, view: DataView, count: number, slots: MetaSlot[]): void {
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
    if (bytesEqual(bytes, at + 8, nameLength, VIDEO_META_NAME_BYTES)) {
      name = VIDEO_META_NAME;
    } else {
      try {
        name = decoder.decode(bytes.subarray(at + 8, at + 8 + nameLength));
      } catch {
        throw new GstProtocolError("BAD_META", `meta ${i}: name is not UTF-8`);
      }
    }
    const slot = slots[i] ??= new MetaSlot();
    slot.name = name;
    slot.version = bytes[at + headerSize - 1];
    slot.bytes = bytes;
    slot.start = at + headerSize;
    slot.end = at + total;
    at += total;
  }
}

/** A {@link GstVideoMetaRecord} that the hot path rewrites in place. */
interface MutableVideoMeta {
  flags: number;
  format: number;
  width: number;
  height: number;
  offsets: number[];
  strides: number[];
}

function newVideoMeta(): MutableVideoMeta {
  return { flags: 0, format: 0, width: 0, height: 0, offsets: [], strides: [] };
}

/**
 * Decodes a GstVideoMeta payload of `version` at `[start, end)` of `view`
 * into `into`; false for another version or a short one.
 */
function decodeVideoMetaAt(
  view: DataView,
  start: number,
  end: number,
  version: number,
  into: MutableVideoMeta,
): boolean {
  if (version !== 0) return false;
  const length = end - start;
  if (length < 20) return false;
  const planes = view.getUint32(start + 16, true);
  if (planes < 1 || planes > 4 || length < 36 + planes * 16) return false;
  for (let i = 0; i < planes; i++) {
    const high = view.getUint32(start + 20 + 8 * i + 4, true);
    if (high > MAX_SAFE_HIGH) return false;
  }
  // Lengths change only when the plane count does (a reset would drop the backing store).
  if (into.offsets.length !== planes) into.offsets.length = into.strides.length = planes;
  for (let i = 0; i < planes; i++) {
    const at = start + 20 + 8 * i;
    into.offsets[i] = view.getUint32(at + 4, true) * 2 ** 32 + view.getUint32(at, true);
    into.strides[i] = view.getInt32(start + 20 + 8 * planes + 4 * i, true);
  }
  into.flags = view.getInt32(start, true);
  into.format = view.getInt32(start + 4, true);
  into.width = view.getUint32(start + 8, true);
  into.height = view.getUint32(start + 12, true);
  return true;
}

/** Decodes a GstVideoMeta payload (version 0); `undefined` for another version or a short one. */
export function decodeVideoMeta(meta: GstSerializedMeta): GstVideoMetaRecord | undefined {
  const bytes = meta.payload;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const record = newVideoMeta();
  return decodeVideoMetaAt(view, 0, bytes.length, meta.version, record) ? record : undefined;
}

/**
 * A RELEASE_BUFFER decoded in place (the to-gst hot path): what
 * {@link decodeClientMessage} returns when given one, rewritten by each
 * decode. {@link idNumber} reads the id without a BigInt.
 */
export class GstReleaseRecord {
  /** The message type. */
  readonly type = "release-buffer";
  #low = 0;
  #high = 0;

  /** The id released, as a BigInt (made when read). */
  get id(): bigint {
    return (BigInt(this.#high) << 32n) | BigInt(this.#low);
  }

  /** The id released as a number, or -1 if it is past 2^53 (no buffer of ours has such an id). */
  get idNumber(): number {
    return this.#high > MAX_SAFE_HIGH ? -1 : this.#high * 2 ** 32 + this.#low;
  }

  /** Reads the id from a RELEASE_BUFFER payload (checked to be long enough). */
  decode(payload: Uint8Array): void {
    this.#low = (payload[0] | payload[1] << 8 | payload[2] << 16 | payload[3] << 24) >>> 0;
    this.#high = (payload[4] | payload[5] << 8 | payload[6] << 16 | payload[7] << 24) >>> 0;
  }
}

/** The id of a RELEASE_BUFFER message as a number (-1 past 2^53): no BigInt for a record. */
export function releaseIdNumber(message: { readonly id: bigint }): number {
  if (message instanceof GstReleaseRecord) return message.idNumber;
  return message.id > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(message.id);
}

/**
 * What {@link decodeSinkMessage} rewrites instead of allocating, when given
 * one: the NEW_BUFFER message, its {@link GstNewBufferRecord}, and as its
 * `fds` the very list passed in (the caller's, e.g. the framer's reused one).
 */
export interface ReusedSinkMessage {
  /** The buffer record every NEW_BUFFER is decoded into. */
  readonly record: GstNewBufferRecord;
  /** The message returned for every NEW_BUFFER. */
  readonly message: { readonly type: "new-buffer"; buffer: GstNewBuffer; fds: number[] };
}

/** A fresh {@link ReusedSinkMessage}. */
export function reusedSinkMessage(): ReusedSinkMessage {
  const record = new GstNewBufferRecord();
  return { record, message: { type: "new-buffer", buffer: record, fds: [] } };
}

/**
 * Decodes one message as the client (`unixfdsrc` side) receives it from a
 * sink: `payload` is exactly `payloadSize` bytes and `fds` every descriptor
 * that arrived with it. On success the descriptors are handed to the
 * returned NEW_BUFFER message (and none arrive with any other message); on
 * a throw the caller still owns them and must close them. With `reuse`, a
 * NEW_BUFFER is decoded into it (valid until the next decode into it, and
 * reading `payload` and `fds` as they are) instead of fresh objects.
 */
export function decodeSinkMessage(
  command: number,
  payload: Uint8Array,
  fds: readonly number[],
  reuse?: ReusedSinkMessage,
): GstMessage {
  if (command !== GST_COMMAND.NEW_BUFFER && fds.length > 0) {
    throw new GstProtocolError(
      "UNEXPECTED_FDS",
      `command ${command} came with ${fds.length} descriptors; only NEW_BUFFER carries any`,
    );
  }
  switch (command) {
    case GST_COMMAND.NEW_BUFFER:
      if (reuse) {
        reuse.record.decode(payload, fds.length);
        reuse.message.fds = fds as number[];
        return reuse.message;
      }
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
  reuse?: GstReleaseRecord,
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
      if (reuse) {
        reuse.decode(payload);
        return reuse;
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
  const record = new GstNewBufferRecord();
  record.decode(payload, fdCount);
  return record.snapshot();
}

/** Byte offsets of the u64 fields of the NEW_BUFFER record. */
const FIELD = { id: 0, pts: 8, dts: 16, duration: 24, offset: 32, offsetEnd: 40 } as const;

/**
 * A NEW_BUFFER decoded in place, for the from-gst hot path: every check of
 * {@link decodeSinkMessage}, but one record rewritten by each
 * {@link decode} (valid until the next one, reading the payload it was
 * given), so a frame costs no objects, arrays, views or strings. The u64
 * fields are read when asked for (a BigInt each); {@link numberOrNull} and
 * {@link copyId} read them without one.
 */
export class GstNewBufferRecord implements GstNewBuffer {
  #view: DataView = EMPTY_VIEW;
  #bytes: Uint8Array = EMPTY;
  /** `GstBufferFlags`. */
  flags = 0;
  /** `"memfd"` (any fd memory) or `"dmabuf"`. */
  memoryType: "memfd" | "dmabuf" = "memfd";
  /** The memories, in order (rewritten in place). */
  readonly memories: { size: number; offset: number }[] = [];
  readonly #memorySlots: { size: number; offset: number }[] = [];
  /** The serialized metas, in order (rewritten in place; each payload is read lazily). */
  readonly metas: MetaSlot[] = [];
  readonly #metaSlots: MetaSlot[] = [];
  /** The first GstVideoMeta, decoded (rewritten in place), if there is one. */
  videoMeta: GstVideoMetaRecord | undefined;
  readonly #videoMeta = newVideoMeta();

  /** The sink's handle for the buffer. */
  get id(): bigint {
    return this.#view.getBigUint64(FIELD.id, true);
  }
  /** Presentation time, ns, or {@link CLOCK_TIME_NONE}. */
  get pts(): bigint {
    return this.#view.getBigUint64(FIELD.pts, true);
  }
  /** Decoding time, ns, or {@link CLOCK_TIME_NONE}. */
  get dts(): bigint {
    return this.#view.getBigUint64(FIELD.dts, true);
  }
  /** Duration, ns, or {@link CLOCK_TIME_NONE}. */
  get duration(): bigint {
    return this.#view.getBigUint64(FIELD.duration, true);
  }
  /** `GST_BUFFER_OFFSET`. */
  get offset(): bigint {
    return this.#view.getBigUint64(FIELD.offset, true);
  }
  /** `GST_BUFFER_OFFSET_END`. */
  get offsetEnd(): bigint {
    return this.#view.getBigUint64(FIELD.offsetEnd, true);
  }

  /**
   * A u64 field as a number (`Number(field)`'s rounding), or null when it is
   * all ones ({@link CLOCK_TIME_NONE}): no BigInt made.
   */
  numberOrNull(field: "pts" | "dts" | "duration" | "offset" | "offsetEnd"): number | null {
    const at = FIELD[field];
    const low = this.#view.getUint32(at, true);
    const high = this.#view.getUint32(at + 4, true);
    return low === 0xffffffff && high === 0xffffffff ? null : high * 2 ** 32 + low;
  }

  /** Copies the id's 8 bytes (as the sink sent them) into `out` at `at`. */
  copyId(out: Uint8Array, at: number): void {
    for (let i = 0; i < 8; i++) out[at + i] = this.#bytes[i];
  }

  /**
   * Decodes `payload` (a NEW_BUFFER's, `fdCount` descriptors with it) into
   * this record, checking it as {@link decodeSinkMessage} does. The record
   * reads `payload` until the next call.
   */
  decode(payload: Uint8Array, fdCount: number): void {
    if (payload.length < NEW_BUFFER_SIZE) {
      throw new GstProtocolError(
        "SHORT_PAYLOAD",
        `NEW_BUFFER has ${payload.length} of ${NEW_BUFFER_SIZE} bytes`,
      );
    }
    if (this.#bytes !== payload) {
      // A view per payload buffer, not per message: the framer reuses its buffer.
      this.#bytes = payload;
      this.#view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    }
    const view = this.#view;
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
    const memories = this.memories;
    // Lengths change only when the counts do: resetting an array to 0 drops its backing store.
    if (memories.length !== memoryCount) memories.length = memoryCount;
    for (let i = 0; i < memoryCount; i++) {
      const at = NEW_BUFFER_SIZE + MEMORY_RECORD_SIZE * i;
      const memory = this.#memorySlots[i] ??= { size: 0, offset: 0 };
      memory.size = safeU64(view, at, `memory ${i} size`);
      memory.offset = safeU64(view, at + 8, `memory ${i} offset`);
      memories[i] = memory;
    }
    // The metas are scanned in the payload itself (a view per buffer, cached as above).
    const metaBytes = this.#metaBytes(fixed);
    scanMetas(metaBytes, this.#metaView!, metaCount, this.#metaSlots);
    const metas = this.metas;
    if (metas.length !== metaCount) metas.length = metaCount;
    for (let i = 0; i < metaCount; i++) metas[i] = this.#metaSlots[i];
    this.videoMeta = undefined;
    for (let i = 0; i < metaCount; i++) {
      const meta = metas[i];
      if (meta.name === VIDEO_META_NAME) {
        if (
          !decodeVideoMetaAt(this.#metaView!, meta.start, meta.end, meta.version, this.#videoMeta)
        ) {
          throw new GstProtocolError(
            "BAD_META",
            "GstVideoMeta is malformed or of an unknown version",
          );
        }
        this.videoMeta = this.#videoMeta;
        break;
      }
    }
    this.flags = view.getUint32(48, true);
    this.memoryType = type === 1 ? "dmabuf" : "memfd";
  }

  #metaSource: Uint8Array = EMPTY;
  #metaStart = -1;
  #metaSubarray: Uint8Array = EMPTY;
  #metaView: DataView | undefined;

  /** The metas' bytes (after the memory records), as one view cached per payload buffer and start. */
  #metaBytes(start: number): Uint8Array {
    const payload = this.#bytes;
    if (
      this.#metaSource !== payload || this.#metaStart !== start ||
      this.#metaSubarray.length !== payload.length - start
    ) {
      this.#metaSource = payload;
      this.#metaStart = start;
      this.#metaSubarray = payload.subarray(start);
      this.#metaView = new DataView(
        payload.buffer,
        payload.byteOffset + start,
        payload.length - start,
      );
    }
    return this.#metaSubarray;
  }

  /** A fresh, plain copy of the decoded buffer (what {@link decodeSinkMessage} returns). */
  snapshot(): GstNewBuffer {
    const videoMeta = this.videoMeta;
    return {
      id: this.id,
      pts: this.pts,
      dts: this.dts,
      duration: this.duration,
      offset: this.offset,
      offsetEnd: this.offsetEnd,
      flags: this.flags,
      memoryType: this.memoryType,
      memories: this.memories.map((m) => ({ size: m.size, offset: m.offset })),
      metas: this.metas.map((m) => ({ name: m.name, version: m.version, payload: m.payload })),
      videoMeta: videoMeta && {
        flags: videoMeta.flags,
        format: videoMeta.format,
        width: videoMeta.width,
        height: videoMeta.height,
        offsets: [...videoMeta.offsets],
        strides: [...videoMeta.strides],
      },
    };
  }
}

/** Writes `buffer`'s id as its 8 wire bytes into `out` at `at` (no BigInt for a record). */
export function copyBufferId(buffer: GstNewBuffer, out: Uint8Array, at: number): void {
  if (buffer instanceof GstNewBufferRecord) return buffer.copyId(out, at);
  new DataView(out.buffer, out.byteOffset + at, 8).setBigUint64(0, buffer.id, true);
}

/**
 * A u64 time or offset field of `buffer` as a number, or null when it is
 * {@link CLOCK_TIME_NONE} (no BigInt for a record).
 */
export function bufferNumberOrNull(
  buffer: GstNewBuffer,
  field: "pts" | "dts" | "duration" | "offset" | "offsetEnd",
): number | null {
  if (buffer instanceof GstNewBufferRecord) return buffer.numberOrNull(field);
  const value = buffer[field];
  return value === CLOCK_TIME_NONE ? null : Number(value);
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
