/**
 * Decoding of GStreamer's unixfd protocol (`protocol.ts` has the wire
 * facts, the types and the encoders): every check a hostile peer's bytes
 * get, as fresh values ({@link decodeSinkMessage},
 * {@link decodeClientMessage}) or, on the bridges' hot paths, into records
 * rewritten in place ({@link GstNewBufferRecord}, {@link GstReleaseRecord}:
 * no object, array, BigInt or string per message). Pure bytes in, typed
 * values out: no system calls, so it is fuzzed on its own.
 *
 * @module
 */

import {
  CLOCK_TIME_NONE,
  COMMAND_HEADER_SIZE,
  DEFAULT_MAX_PAYLOAD,
  GST_COMMAND,
  type GstMessage,
  type GstNewBuffer,
  GstProtocolError,
  type GstVideoMetaRecord,
  MEMORY_RECORD_SIZE,
  NEW_BUFFER_SIZE,
  RELEASE_BUFFER_SIZE,
} from "./protocol.ts";
import {
  decodeVideoMetaAt,
  type MetaSlot,
  newVideoMeta,
  scanMetas,
  VIDEO_META_NAME,
} from "./meta_decode.ts";

const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);
const EMPTY_VIEW = new DataView(EMPTY.buffer);

/**
 * Reads memory `memory`'s size (or with `offset`, its offset), a u64 that
 * must fit a JS number exactly, without a BigInt. The message is built only
 * when it is thrown: a template string per call was ~30 B per frame.
 */
function safeU64(view: DataView, at: number, memory: number, offset: boolean): number {
  const low = view.getUint32(at, true);
  const high = view.getUint32(at + 4, true);
  if (high > MAX_SAFE_HIGH) {
    throw new GstProtocolError(
      "SHORT_PAYLOAD",
      `memory ${memory} ${offset ? "offset" : "size"} ${
        view.getBigUint64(at, true)
      } is out of range`,
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
      memory.size = safeU64(view, at, i, false);
      memory.offset = safeU64(view, at + 8, i, true);
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
