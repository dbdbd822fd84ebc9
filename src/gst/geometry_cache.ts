/**
 * Linux only: the from-gst bridge's geometry of a GStreamer buffer, kept
 * while the stream's caps, video meta and memory stay the same (a steady
 * stream costs no geometry object per frame).
 *
 * @module
 */

import type { SurfaceGeometry } from "../core/geometry.ts";
import { geometryOfGstBuffer, type GstVideoCaps } from "./caps.ts";
import type { GstVideoMetaRecord } from "./protocol.ts";

/**
 * The geometry of the last buffer, reused while the next one has the same
 * caps, video meta, memory range and file size ({@link geometryOfGstBuffer}
 * is a pure function of those): a steady stream costs no geometry object
 * per frame. A geometry is never modified once made, so surfaces share it.
 */
export class GeometryCache {
  #caps: GstVideoCaps | undefined;
  #hasMeta = false;
  readonly #offsets: number[] = [];
  readonly #strides: number[] = [];
  #metaFields = [0, 0, 0, 0];
  #memoryOffset = -1;
  #memorySize = -1;
  #fileSize = -1;
  #geometry: SurfaceGeometry | undefined;

  /** The geometry of a buffer of `memorySize` bytes at `memoryOffset` in a memfd of `fileSize`. */
  get(
    caps: GstVideoCaps,
    videoMeta: GstVideoMetaRecord | undefined,
    memoryOffset: number,
    memorySize: number,
    fileSize: number,
  ): SurfaceGeometry {
    if (
      this.#geometry !== undefined && caps === this.#caps && memoryOffset === this.#memoryOffset &&
      memorySize === this.#memorySize && fileSize === this.#fileSize && this.#sameMeta(videoMeta)
    ) {
      return this.#geometry;
    }
    this.#geometry = undefined; // a throw below leaves no stale entry
    const geometry = geometryOfGstBuffer(caps, videoMeta, memoryOffset, memorySize, fileSize);
    this.#caps = caps;
    this.#memoryOffset = memoryOffset;
    this.#memorySize = memorySize;
    this.#fileSize = fileSize;
    this.#hasMeta = videoMeta !== undefined;
    if (videoMeta) {
      this.#metaFields = [videoMeta.flags, videoMeta.format, videoMeta.width, videoMeta.height];
      this.#offsets.length = 0;
      this.#offsets.push(...videoMeta.offsets);
      this.#strides.length = 0;
      this.#strides.push(...videoMeta.strides);
    }
    this.#geometry = geometry;
    return geometry;
  }

  #sameMeta(meta: GstVideoMetaRecord | undefined): boolean {
    if (meta === undefined) return !this.#hasMeta;
    if (!this.#hasMeta) return false;
    const fields = this.#metaFields;
    if (
      meta.flags !== fields[0] || meta.format !== fields[1] || meta.width !== fields[2] ||
      meta.height !== fields[3] || meta.offsets.length !== this.#offsets.length ||
      meta.strides.length !== this.#strides.length
    ) {
      return false;
    }
    for (let i = 0; i < this.#offsets.length; i++) {
      if (meta.offsets[i] !== this.#offsets[i] || meta.strides[i] !== this.#strides[i]) {
        return false;
      }
    }
    return true;
  }
}
