/**
 * A surfaceport frame's timestamp as GStreamer carries it across a network:
 * a `GstReferenceTimestampMeta` with the reference `timestamp/x-ntp` (ns
 * since 1900), which GStreamer 1.26 serializes over unixfd (`unixfdsrc` /
 * `unixfdsink`), copies through converters, encoders and decoders, and
 * which the RFC 6051 RTP header extension (`rtphdrextntp64`,
 * `urn:ietf:params:rtp-hdrext:ntp-64`) writes into and reads out of RTP
 * packets.
 *
 * The extension holds NTP's 32.32 fixed point: GStreamer converts ns to it
 * and back rounding down each time, so a value comes back exact or 1 ns
 * short. A timestamp in whole µs (surfaceport's unit) therefore survives
 * exactly: {@link microsOfNtpNanos} undoes the rounding. NTP era 0 bounds
 * the range: 1900 to 2036-02-07 (see {@link ntpNanosOfMicros}).
 *
 * @module
 */

import type { GstSerializedMeta } from "./protocol.ts";

/** The name a `GstReferenceTimestampMeta` is serialized under. */
export const REFERENCE_TIMESTAMP_META = "GstReferenceTimestampMeta";
/** The reference caps of the NTP timestamps that `rtphdrextntp64` writes and reads. */
export const NTP_REFERENCE = "timestamp/x-ntp";

/** µs from the NTP epoch (1900) to the Unix epoch (1970). */
const NTP_TO_UNIX_MICROS = 2_208_988_800_000_000;
/** The first Unix µs that NTP era 0 cannot hold: 2^32 s after 1900. */
export const NTP_ERA_END_MICROS = 2 ** 32 * 1_000_000 - NTP_TO_UNIX_MICROS;
/** The first Unix µs NTP can hold: 1900-01-01. */
export const NTP_ERA_START_MICROS = -NTP_TO_UNIX_MICROS;

/**
 * A surfaceport timestamp (µs since the Unix epoch, an integer) as ns since
 * the NTP epoch, or `undefined` outside NTP era 0 (1900-01-01 itself, which
 * is 0, what the extension holds for a buffer without a timestamp, and from
 * 2036-02-07 06:28:16 UTC on).
 */
export function ntpNanosOfMicros(micros: number): bigint | undefined {
  if (!Number.isInteger(micros) || micros <= NTP_ERA_START_MICROS || micros >= NTP_ERA_END_MICROS) {
    return undefined;
  }
  return BigInt(micros + NTP_TO_UNIX_MICROS) * 1000n;
}

/**
 * The surfaceport timestamp that {@link ntpNanosOfMicros} turned into
 * `nanos`, after a trip through NTP's 32.32 format (which may take 1 ns off).
 */
export function microsOfNtpNanos(nanos: bigint): number {
  return Number((nanos + 1n) / 1000n) - NTP_TO_UNIX_MICROS;
}

const encoder = new TextEncoder();
const REFERENCE_BYTES = encoder.encode(NTP_REFERENCE);
const NAME_BYTES = encoder.encode(REFERENCE_TIMESTAMP_META);
/** Offset of the timestamp inside the serialized meta (after `[u32 total][u32 name_len][name NUL][u8 version]`). */
const TIMESTAMP_AT = 8 + NAME_BYTES.length + 2;
/** Bytes of a serialized NTP reference timestamp meta. */
export const NTP_META_SIZE = TIMESTAMP_AT + 16 + REFERENCE_BYTES.length + 1;

/**
 * A serialized `GstReferenceTimestampMeta` (`timestamp/x-ntp`, no duration)
 * whose timestamp {@link NtpMetaRecord.set} rewrites in place, so a bridge
 * sends one per frame without allocating a new record.
 */
export class NtpMetaRecord {
  /** The serialized meta, as `unixfdsink` writes it (`gst_meta_serialize`). */
  readonly bytes: Uint8Array = new Uint8Array(NTP_META_SIZE);
  readonly #view = new DataView(this.bytes.buffer);

  /** Lays out the record; its timestamp is 0 until {@link set}. */
  constructor() {
    this.#view.setUint32(0, NTP_META_SIZE, true);
    this.#view.setUint32(4, NAME_BYTES.length, true);
    this.bytes.set(NAME_BYTES, 8);
    // name NUL and version 0 are already zero
    this.#view.setBigUint64(TIMESTAMP_AT + 8, 0xffff_ffff_ffff_ffffn, true); // duration: none
    this.bytes.set(REFERENCE_BYTES, TIMESTAMP_AT + 16);
  }

  /** Sets the timestamp (ns since 1900, from {@link ntpNanosOfMicros}). */
  set(nanos: bigint): void {
    this.#view.setBigUint64(TIMESTAMP_AT, nanos, true);
  }
}

/**
 * The NTP timestamps (ns since 1900) of the `timestamp/x-ntp` reference
 * metas among `metas`: none, one, or (when packets of several frames were
 * merged into one buffer) several. A malformed one is skipped.
 */
export function ntpTimestampsOf(metas: readonly GstSerializedMeta[]): bigint[] {
  const found: bigint[] = [];
  for (const meta of metas) {
    if (meta.name !== REFERENCE_TIMESTAMP_META || meta.version !== 0) continue;
    const payload = meta.payload;
    if (payload.length !== 16 + REFERENCE_BYTES.length + 1) continue;
    let same = payload[payload.length - 1] === 0;
    for (let i = 0; same && i < REFERENCE_BYTES.length; i++) {
      same = payload[16 + i] === REFERENCE_BYTES[i];
    }
    if (!same) continue;
    found.push(new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true));
  }
  return found;
}
