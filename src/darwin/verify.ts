/**
 * What an IOSurface made elsewhere (a peer's surface, looked up from the
 * port it sent, or a CVPixelBuffer's) reports about its layout, read through
 * the IOSurface getters, and the checks against the geometry a header or a
 * pixel buffer claims — the macOS counterpart of `linux/verify.ts`.
 *
 * @module
 */

import {
  formatOfFourcc,
  fourccOf,
  type PlaneGeometry,
  type SurfaceGeometry,
  validateGeometry,
} from "../core/geometry.ts";
import type { DarwinNative } from "./native.ts";
import { type Pointer, runtime } from "../../ffi/runtime.ts";

/** The layout an IOSurface reports about itself. */
export interface IOSurfaceLayout {
  /** `IOSurfaceGetWidth` */
  width: number;
  /** `IOSurfaceGetHeight` */
  height: number;
  /** `IOSurfaceGetPixelFormat` */
  pixelFormat: number;
  /** `IOSurfaceGetAllocSize` */
  allocSize: number;
  /** One entry per plane (one for a non-planar surface); offsets from the base address. */
  planes: PlaneGeometry[];
}

/** Reads the layout of `surface` through the IOSurface getters. */
export function readLayout(native: DarwinNative, surface: Pointer): IOSurfaceLayout {
  const base = native.IOSurfaceGetBaseAddress(surface);
  const baseValue = base === null ? 0n : runtime.pointerValue(base);
  const planeCount = native.IOSurfaceGetPlaneCount(surface);
  const planes: PlaneGeometry[] = [];
  if (planeCount === 0) {
    planes.push({
      width: native.IOSurfaceGetWidth(surface),
      height: native.IOSurfaceGetHeight(surface),
      bytesPerElement: native.IOSurfaceGetBytesPerElement(surface),
      bytesPerRow: native.IOSurfaceGetBytesPerRow(surface),
      offset: 0,
    });
  } else {
    for (let i = 0; i < planeCount; i++) {
      const address = native.IOSurfaceGetBaseAddressOfPlane(surface, i);
      planes.push({
        width: native.IOSurfaceGetWidthOfPlane(surface, i),
        height: native.IOSurfaceGetHeightOfPlane(surface, i),
        bytesPerElement: native.IOSurfaceGetBytesPerElementOfPlane(surface, i),
        bytesPerRow: native.IOSurfaceGetBytesPerRowOfPlane(surface, i),
        offset: address === null ? -1 : Number(runtime.pointerValue(address) - baseValue),
      });
    }
  }
  return {
    width: native.IOSurfaceGetWidth(surface),
    height: native.IOSurfaceGetHeight(surface),
    pixelFormat: native.IOSurfaceGetPixelFormat(surface),
    allocSize: native.IOSurfaceGetAllocSize(surface),
    planes,
  };
}

/**
 * Describes how `layout` differs from `geometry` (the memory must be at
 * least `geometry.allocSize` bytes and every plane exactly where `geometry`
 * says), or `undefined` if views made from `geometry` are safe and right.
 */
export function layoutMismatch(
  layout: IOSurfaceLayout,
  geometry: SurfaceGeometry,
): string | undefined {
  if (layout.pixelFormat !== fourccOf(geometry.format)) {
    return `pixel format 0x${layout.pixelFormat.toString(16)}, expected ${geometry.format}`;
  }
  if (layout.width !== geometry.width || layout.height !== geometry.height) {
    return `${layout.width}x${layout.height}, expected ${geometry.width}x${geometry.height}`;
  }
  if (layout.allocSize < geometry.allocSize) {
    return `${layout.allocSize} bytes, expected at least ${geometry.allocSize}`;
  }
  if (layout.planes.length !== geometry.planes.length) {
    return `${layout.planes.length} planes, expected ${geometry.planes.length}`;
  }
  for (let i = 0; i < layout.planes.length; i++) {
    const a = layout.planes[i], e = geometry.planes[i];
    if (
      a.offset !== e.offset || a.bytesPerRow !== e.bytesPerRow || a.width !== e.width ||
      a.height !== e.height || a.bytesPerElement !== e.bytesPerElement
    ) {
      return `plane ${i} is ${JSON.stringify(a)}, expected ${JSON.stringify(e)}`;
    }
  }
  return undefined;
}

/** The geometry of an IOSurface made elsewhere (e.g. by CoreVideo), or a description of why it has none. */
export function geometryOfLayout(layout: IOSurfaceLayout): SurfaceGeometry | string {
  const format = formatOfFourcc(layout.pixelFormat);
  if (!format) {
    return `pixel format 0x${layout.pixelFormat.toString(16)} is not one surfaceport supports`;
  }
  const geometry: SurfaceGeometry = {
    width: layout.width,
    height: layout.height,
    format,
    planes: layout.planes,
    allocSize: layout.allocSize,
  };
  return validateGeometry(geometry) ?? geometry;
}
