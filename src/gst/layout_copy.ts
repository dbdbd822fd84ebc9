/**
 * Linux only: the to-gst bridge's copies in GStreamer's default layout. A
 * `unixfdsrc` in GStreamer 1.26 assumes that layout (rows rounded up to 4
 * bytes, planes back to back: a serialized GstVideoMeta is dropped), so a
 * frame whose planes sit elsewhere is copied once, row by row, into a memfd
 * laid out so. The memfds are kept and reused once GStreamer gave them back
 * (never more than the frames that can be outstanding, plus one being
 * filled).
 *
 * @module
 */

import { alignUp, type SurfaceGeometry } from "../core/geometry.ts";
import { backend } from "../platform.ts";
import { Surface } from "../surface/surface.ts";
import { defaultGstLayout } from "./caps.ts";

/** A memfd in GStreamer's layout, and whether a frame copied into it is still out. */
export interface LayoutCopy {
  /** The copy's surface (the bridge's own). */
  readonly surface: Surface;
  /** Its geometry: GStreamer's default layout. */
  readonly geometry: SurfaceGeometry;
  /** True from the copy until every client gave the frame back. */
  busy: boolean;
}

/** GStreamer's default layout as a surfaceport geometry, for the copy path's memfds. */
function gstGeometry(source: SurfaceGeometry): SurfaceGeometry {
  const layout = defaultGstLayout(source.format, source.width, source.height);
  return {
    width: source.width,
    height: source.height,
    format: source.format,
    planes: layout.planes,
    allocSize: alignUp(layout.size, 4096),
  };
}

/** The reusable memfds of the copy path, at most `maxKept` idle ones kept. */
export class LayoutCopies {
  readonly #copies: LayoutCopy[] = [];
  readonly #maxKept: number;

  /** Keeps up to `maxKept` memfds (the bridge's `maxOutstanding`) besides the one being filled. */
  constructor(maxKept: number) {
    this.#maxKept = maxKept;
  }

  /** A copy of `source` in GStreamer's default layout, marked busy (the caller clears it). */
  copyOf(source: Surface): LayoutCopy {
    const target = gstGeometry(source.geometry);
    let copy = this.#copies.find((c) =>
      !c.busy && c.geometry.allocSize === target.allocSize && c.geometry.format === target.format &&
      c.geometry.width === target.width && c.geometry.height === target.height && !c.surface.inUse
    );
    if (!copy) {
      // Never more memfds than frames that can be outstanding, plus one being filled.
      for (let i = this.#copies.length - 1; i >= 0 && this.#copies.length > this.#maxKept; i--) {
        const c = this.#copies[i];
        if (!c.busy && !c.surface.inUse) {
          c.surface.close();
          this.#copies.splice(i, 1);
        }
      }
      const backing = backend().allocateSurface(target);
      copy = {
        surface: new Surface(backing, backing, false),
        geometry: target,
        busy: false,
      };
      this.#copies.push(copy);
    }
    copy.busy = true;
    for (let p = 0; p < target.planes.length; p++) {
      const from = source.bytes(p);
      const to = copy.surface.bytes(p);
      const s = source.planes[p];
      const d = target.planes[p];
      const row = d.width * d.bytesPerElement;
      for (let y = 0; y < d.height; y++) {
        to.set(from.subarray(y * s.bytesPerRow, y * s.bytesPerRow + row), y * d.bytesPerRow);
      }
    }
    return copy;
  }

  /** Closes every memfd kept (GStreamer's mappings keep theirs alive). */
  close(): void {
    for (const copy of this.#copies) copy.surface.close();
    this.#copies.length = 0;
  }
}
