/**
 * Linux only: the NEW_BUFFER record the to-gst bridge sends for each frame,
 * in GStreamer's default layout of the current format and size (what a
 * `unixfdsrc` in 1.26 assumes: it drops a serialized GstVideoMeta). One
 * record per layout, its id and pts patched per frame as numbers: no
 * object, array or BigInt per frame. A frame with an NTP timestamp meta
 * (`ntpTimestamps`, the network sender's) is encoded afresh.
 *
 * @module
 */

import type { PixelFormat, SurfaceGeometry } from "../core/geometry.ts";
import { libc } from "../linux/libc.ts";
import { defaultGstLayout } from "./caps.ts";
import { COMMAND_HEADER_SIZE, encodeNewBuffer } from "./protocol.ts";
import { NtpMetaRecord, ntpNanosOfMicros } from "./timestamp_meta.ts";

/** GStreamer's default layout of one format and size (`defaultGstLayout`). */
type GstLayout = ReturnType<typeof defaultGstLayout>;

/** `struct timespec` of `clock_gettime`, read as 32-bit words: no BigInt. */
const monotonic = new Uint32Array(4);
const monotonicBytes = new Uint8Array(monotonic.buffer);

/** `CLOCK_MONOTONIC` in ns (exact below 2^53 ns, 104 days of uptime): unixfdsrc expects it. */
function monotonicNanos(): number {
  libc().clock_gettime(1, /* CLOCK_MONOTONIC */ monotonicBytes);
  return (monotonic[1] * 2 ** 32 + monotonic[0]) * 1e9 + monotonic[2];
}

/** Writes `value` (a non-negative safe integer) as a little-endian u64 at `at`. */
function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value >>> 0, true);
  view.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

/** Writes the to-gst bridge's NEW_BUFFER records: one per layout, patched per frame. */
export class NewBufferWriter {
  /**
   * The NEW_BUFFER of the current layout. A send that cannot go out at once
   * copies what is left of it first, so the next frame may patch it while
   * that send waits.
   */
  #record: Uint8Array = new Uint8Array(0);
  #recordView = new DataView(this.#record.buffer);
  #format: PixelFormat | undefined;
  #width = -1;
  #height = -1;
  #layout: GstLayout | undefined;
  /** The timestamp meta record of `ntpTimestamps`, and the list it goes in. */
  readonly #ntpMeta: NtpMetaRecord | undefined;
  readonly #ntpMetas: Uint8Array[] = [];

  /** A writer; with `ntpTimestamps`, frames with a timestamp carry it as a meta. */
  constructor(ntpTimestamps: boolean) {
    if (ntpTimestamps) {
      this.#ntpMeta = new NtpMetaRecord();
      this.#ntpMetas.push(this.#ntpMeta.bytes);
    }
  }

  /** True if the record is laid out for `geometry`'s format and size. */
  isFor(geometry: SurfaceGeometry): boolean {
    return geometry.format === this.#format && geometry.width === this.#width &&
      geometry.height === this.#height;
  }

  /** Lays the record out for frames of `format` at `width` x `height`. */
  setLayout(format: PixelFormat, width: number, height: number): void {
    this.#format = format;
    this.#width = width;
    this.#height = height;
    this.#layout = defaultGstLayout(format, width, height);
    this.#record = encodeNewBuffer({
      id: 0n,
      memories: [{ size: this.#layout.size, offset: 0 }],
    });
    this.#recordView = new DataView(this.#record.buffer);
  }

  /** True if `geometry`'s planes sit where GStreamer's default layout puts them (no copy needed). */
  zeroCopy(geometry: SurfaceGeometry): boolean {
    const layout = this.#layout!;
    const planes = geometry.planes;
    for (let i = 0; i < planes.length; i++) {
      const expected = layout.planes[i];
      if (planes[i].bytesPerRow !== expected.bytesPerRow || planes[i].offset !== expected.offset) {
        return false;
      }
    }
    return geometry.allocSize >= layout.size;
  }

  /**
   * The NEW_BUFFER of frame `id`, stamped with `CLOCK_MONOTONIC` now: the
   * record patched (valid until the next call), or encoded afresh with a
   * timestamp meta.
   */
  recordFor(id: number, timestamp: number | undefined): Uint8Array {
    const metas = this.#ntpMetasOf(timestamp);
    if (metas) {
      return encodeNewBuffer({
        id: BigInt(id),
        pts: BigInt(monotonicNanos()),
        memories: [{ size: this.#layout!.size, offset: 0 }],
        metas,
      });
    }
    setU64(this.#recordView, COMMAND_HEADER_SIZE, id);
    setU64(this.#recordView, COMMAND_HEADER_SIZE + 8, monotonicNanos());
    return this.#record;
  }

  /** The metas a frame with `timestamp` goes out with: its NTP timestamp, when asked for and known. */
  #ntpMetasOf(timestamp: number | undefined): readonly Uint8Array[] | undefined {
    const nanos = this.#ntpMeta && timestamp !== undefined
      ? ntpNanosOfMicros(timestamp)
      : undefined;
    if (nanos === undefined) return undefined;
    this.#ntpMeta!.set(nanos);
    return this.#ntpMetas;
  }
}
