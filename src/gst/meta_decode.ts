/**
 * The serialized GstMetas of a NEW_BUFFER (`gst_meta_serialize`'s
 * format), and the one the bridge reads: `GstVideoMeta`, the layout of a
 * frame's planes. Found in place ({@link scanMetas} rewrites reused slots
 * and decodes no string for a `GstVideoMeta`), or as fresh values. Pure.
 *
 * @module
 */

import { GstProtocolError, type GstSerializedMeta, type GstVideoMetaRecord } from "./protocol.ts";

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);
/** The high word of `Number.MAX_SAFE_INTEGER` (2^53 - 1). */
const MAX_SAFE_HIGH = 0x1fffff;

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
export class MetaSlot implements GstSerializedMeta {
  name = "";
  version = 0;
  bytes: Uint8Array = EMPTY;
  start = 0;
  end = 0;

  get payload(): Uint8Array {
    return this.bytes.subarray(this.start, this.end);
  }
}

/** The one meta name the bridge reads, compared as bytes: no string is decoded for it. */
export const VIDEO_META_NAME = "GstVideoMeta";
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
export function scanMetas(
  bytes: Uint8Array,
  view: DataView,
  count: number,
  slots: MetaSlot[],
): void {
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
export interface MutableVideoMeta {
  flags: number;
  format: number;
  width: number;
  height: number;
  offsets: number[];
  strides: number[];
}

export function newVideoMeta(): MutableVideoMeta {
  return { flags: 0, format: 0, width: 0, height: 0, offsets: [], strides: [] };
}

/**
 * Decodes a GstVideoMeta payload of `version` at `[start, end)` of `view`
 * into `into`; false for another version or a short one.
 */
export function decodeVideoMetaAt(
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
