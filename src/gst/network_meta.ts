/**
 * The sender's metadata beside the video: stock GStreamer elements carry 64
 * bits per frame across RTP (its timestamp, `timestamp_meta.ts`), so each
 * frame's `meta` travels on a side channel as a record keyed by that
 * timestamp, and the receiver joins them again. Plain data here; the
 * command line carries the records over TCP on the same port number as the
 * video (`cli/network_meta_link.ts`).
 *
 * A record is `[u32 length][i64 timestamp µs][u8 kind][meta]`, little-endian,
 * `length` counting what follows it, `kind` the wire's metadata kind
 * (none, bytes, JSON) and `meta` at most 64 KiB.
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import {
  decodeMeta,
  DEFAULT_MAX_META_BYTES,
  encodeMeta,
  META_BYTES,
  META_JSON,
  META_NONE,
} from "../wire/wire.ts";

/** Bytes of a record before its metadata. */
export const META_RECORD_HEADER = 13;
/** The largest record: a header and 64 KiB of metadata. */
export const MAX_META_RECORD = META_RECORD_HEADER + DEFAULT_MAX_META_BYTES;

/** Encodes the record of a frame with `timestamp` (µs, an integer) and `meta`. */
export function encodeMetaRecord(timestamp: number, meta: unknown): Uint8Array {
  const { kind, bytes } = encodeMeta(meta as Parameters<typeof encodeMeta>[0]);
  if (bytes.length > DEFAULT_MAX_META_BYTES) {
    throw new RangeError(`metadata of ${bytes.length} bytes exceeds ${DEFAULT_MAX_META_BYTES}`);
  }
  const record = new Uint8Array(META_RECORD_HEADER + bytes.length);
  const view = new DataView(record.buffer);
  view.setUint32(0, record.length - 4, true);
  view.setBigInt64(4, BigInt(timestamp), true);
  record[12] = kind;
  record.set(bytes, META_RECORD_HEADER);
  return record;
}

/**
 * Splits a byte stream into records and hands each on; a malformed one
 * throws a `ProtocolError` (the stream cannot be resynchronised: drop the
 * connection). Holds at most one record's bytes.
 */
export class MetaRecordReader {
  #pending = new Uint8Array(0);
  readonly #onRecord: (timestamp: number, meta: unknown) => void;

  /** Calls `onRecord` with each complete record's timestamp and decoded metadata. */
  constructor(onRecord: (timestamp: number, meta: unknown) => void) {
    this.#onRecord = onRecord;
  }

  /** Takes the next bytes of the stream. */
  push(chunk: Uint8Array): void {
    let bytes = chunk;
    if (this.#pending.length > 0) {
      bytes = new Uint8Array(this.#pending.length + chunk.length);
      bytes.set(this.#pending);
      bytes.set(chunk, this.#pending.length);
    }
    let at = 0;
    while (bytes.length - at >= 4) {
      const view = new DataView(bytes.buffer, bytes.byteOffset + at);
      const length = view.getUint32(0, true);
      if (length < META_RECORD_HEADER - 4 || length > MAX_META_RECORD - 4) {
        throw new ProtocolError("BAD_META", `metadata record of ${length} bytes`);
      }
      if (bytes.length - at < 4 + length) break;
      const timestamp = view.getBigInt64(4, true);
      const kind = bytes[at + 12];
      if (
        timestamp > BigInt(Number.MAX_SAFE_INTEGER) || timestamp < -BigInt(Number.MAX_SAFE_INTEGER)
      ) {
        throw new ProtocolError("BAD_META", `metadata record timestamp ${timestamp}`);
      }
      if (kind !== META_NONE && kind !== META_BYTES && kind !== META_JSON) {
        throw new ProtocolError("BAD_META", `metadata record of kind ${kind}`);
      }
      const meta = decodeMeta(kind, bytes.subarray(at + META_RECORD_HEADER, at + 4 + length));
      at += 4 + length;
      this.#onRecord(Number(timestamp), meta);
    }
    this.#pending = bytes.slice(at);
  }
}

/**
 * The receiver's store of records not yet joined to a frame: the newest
 * `capacity` (default 256, ~8 s at 30 frames/s), so a sender whose frames
 * never arrive, or a peer that sends records for frames that never come,
 * costs a bounded amount.
 */
export class SenderMetas {
  readonly #records = new Map<number, unknown>();
  readonly #capacity: number;

  /** A store of at most `capacity` records. */
  constructor(capacity = 256) {
    this.#capacity = capacity;
  }

  /** Keeps the metadata of the frame with `timestamp` until {@link take}. */
  put(timestamp: number, meta: unknown): void {
    this.#records.delete(timestamp);
    this.#records.set(timestamp, meta);
    if (this.#records.size > this.#capacity) {
      this.#records.delete(this.#records.keys().next().value!);
    }
  }

  /** The metadata of the frame with `timestamp` (and forgets it), or `undefined` with `found` false. */
  take(timestamp: number): { found: boolean; meta: unknown } {
    if (!this.#records.has(timestamp)) return { found: false, meta: undefined };
    const meta = this.#records.get(timestamp);
    this.#records.delete(timestamp);
    return { found: true, meta };
  }
}
