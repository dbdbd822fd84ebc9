/**
 * Received surface memory on macOS: the IOSurface a peer's send right names,
 * looked up with `IOSurfaceLookupFromMachPort` and checked (`verify.ts`)
 * against the header's geometry; the right is kept as long as the frame is
 * open, so the sender's surface counts as in use until then.
 *
 * A pool sends the same few surfaces again and again, and reading a layout
 * back costs 12 to 18 IOSurface getter calls; a {@link LayoutCache} keeps the
 * layouts of surfaces already looked up from a port, by `IOSurfaceID`. An ID
 * is only ever a key here, never looked up (`IOSurfaceLookup` is the global
 * path that defeats use tracking).
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import type { MachPort } from "./mach.ts";
import type { DarwinNative } from "./native.ts";
import { IOSurfaceHolder } from "./surface.ts";
import { type IOSurfaceLayout, layoutMismatch, readLayout } from "./verify.ts";
import type { Pointer, PointerValue } from "../../ffi/runtime.ts";

/** The most layouts a {@link LayoutCache} keeps (the oldest goes first). */
export const LAYOUT_CACHE_SIZE = 64;

/**
 * The layouts of IOSurfaces this connection looked up from ports, keyed by
 * `IOSurfaceID`. Each frame still asks IOSurface for the ID, the allocation
 * size and the base address (the mapping may move between frames). A stale
 * entry — the surface freed and its ID reused for another — is safe: an
 * entry is used only when the allocation size it recorded is the real one
 * now, and the header's geometry is checked against it, so every view stays
 * inside the real allocation; a header that does not match a cached layout
 * is checked again against a fresh read before it is refused.
 */
export class LayoutCache {
  readonly #layouts = new Map<number, IOSurfaceLayout>();

  /** The cached layout of surface `id` if its allocation is still `allocSize` bytes. */
  get(id: number, allocSize: number): IOSurfaceLayout | undefined {
    const layout = this.#layouts.get(id);
    return layout !== undefined && layout.allocSize === allocSize ? layout : undefined;
  }

  /** Records `layout` for surface `id`. */
  set(id: number, layout: IOSurfaceLayout): void {
    this.#layouts.delete(id);
    if (this.#layouts.size >= LAYOUT_CACHE_SIZE) {
      this.#layouts.delete(this.#layouts.keys().next().value!);
    }
    this.#layouts.set(id, layout);
  }

  /** Number of layouts held. */
  get size(): number {
    return this.#layouts.size;
  }
}

/**
 * A received surface: the looked-up `IOSurfaceRef` and the send right that
 * came with it. The right is what keeps the sender's surface in use; it is
 * deallocated when the frame closes.
 */
export class ReceivedIOSurface extends IOSurfaceHolder {
  #port: MachPort;

  private constructor(
    native: DarwinNative,
    surface: Pointer,
    geometry: SurfaceGeometry,
    port: MachPort,
    base: PointerValue,
    id: number,
  ) {
    super(native, surface, geometry, false, base, id);
    this.#port = port;
  }

  /**
   * Looks up the surface behind `port` and checks it against the header's
   * `geometry` (its layout from `layouts` when the surface was seen before).
   * Takes ownership of `port` on success; on error the caller still owns it.
   */
  static import(
    native: DarwinNative,
    port: MachPort,
    geometry: SurfaceGeometry,
    layouts: LayoutCache,
  ): ReceivedIOSurface {
    const surface = native.IOSurfaceLookupFromMachPort(port.name);
    if (surface === null) {
      throw new ProtocolError("NOT_SHARED_MEMORY", "the received port is not an IOSurface port");
    }
    try {
      const id = native.IOSurfaceGetID(surface);
      const base = native.IOSurfaceGetBaseAddress(surface);
      const cached = layouts.get(id, native.IOSurfaceGetAllocSize(surface));
      let problem = cached ? layoutMismatch(cached, geometry) : "not cached";
      if (problem !== undefined) {
        const layout = readLayout(native, surface);
        layouts.set(id, layout);
        problem = layoutMismatch(layout, geometry);
      }
      if (problem) {
        throw new ProtocolError("SIZE_MISMATCH", `the received IOSurface is ${problem}`);
      }
      return new ReceivedIOSurface(native, surface, geometry, port, base, id);
    } catch (error) {
      native.CFRelease(surface);
      throw error;
    }
  }

  protected override releaseExtra(): void {
    this.#port.close();
  }
}
