/**
 * Surface memory on macOS: IOSurface.
 *
 * Use tracking is the kernel's: every handle that leaves this process is a
 * new send right from `IOSurfaceCreateMachPort`, and each live such port
 * counts one use of the surface until its last send right is gone — moved
 * into a message it still counts, held by a receiver it counts, and when the
 * receiver closes the frame (deallocates the right) or dies (the kernel
 * reclaims its rights) it stops counting. The owner asks `IOSurfaceIsInUse`,
 * never its own bookkeeping.
 *
 * A receiver looks the surface up with `IOSurfaceLookupFromMachPort` and
 * keeps the send right for as long as the frame is open, so the use is
 * tied to the frame (documented behaviour), not to whether a bare
 * looked-up `IOSurfaceRef` counts. There is no mapping cache: IOSurface keeps
 * one mapping per surface per process itself, and a retained-but-unused ref
 * is a use count question we do not want to depend on. The received side is
 * `ReceivedIOSurface` in `received.ts`; the checks of an IOSurface made
 * elsewhere are in `verify.ts`.
 *
 * @module
 */

import type { SurfaceBacking, UnsafeSurfaceHandle } from "../contract/backend.ts";
import { detachBuffer, sharedBuffer } from "../core/shared_buffer.ts";
import { LockStateError } from "../core/errors.ts";
import { fourccOf, type PlaneGeometry, type SurfaceGeometry } from "../core/geometry.ts";
import { machError } from "./mach.ts";
import type { DarwinNative } from "./native.ts";
import { PixelBuffer, pixelBufferInternals } from "./pixel_buffer.ts";
import { DARWIN } from "./structs.ts";
import { geometryOfLayout, readLayout } from "./verify.ts";
import { type Pointer, type PointerValue, runtime } from "../../ffi/runtime.ts";

function lockOptions(readOnly: boolean): number {
  return readOnly ? DARWIN.kIOSurfaceLockReadOnly : 0;
}

interface SurfaceResources {
  native: DarwinNative;
  surface: Pointer;
  /** True if this holder also raised the surface's use count (given back on release). */
  holdsUse: boolean;
}

function releaseResources(r: SurfaceResources): void {
  if (r.holdsUse) r.native.IOSurfaceDecrementUseCount(r.surface);
  r.native.CFRelease(r.surface);
}

const surfaceFinalizer = new FinalizationRegistry<SurfaceResources>(releaseResources);

/**
 * What both kinds of IOSurface backing share: one retained `IOSurfaceRef`
 * (released with `CFRelease`), locking, use queries and port export.
 */
export abstract class IOSurfaceHolder implements SurfaceBacking {
  readonly geometry: SurfaceGeometry;
  readonly id: number;
  readonly baseAddress: Pointer;
  protected resources: SurfaceResources | undefined;
  #buffer: ArrayBuffer | undefined;

  /**
   * `knownBase` and `knownId` are the base address and `IOSurfaceID` when the
   * caller already asked IOSurface for them (a received frame does): two FFI
   * calls fewer per frame.
   */
  protected constructor(
    native: DarwinNative,
    surface: Pointer,
    geometry: SurfaceGeometry,
    holdsUse = false,
    knownBase?: PointerValue,
    knownId?: number,
  ) {
    const base = knownBase !== undefined ? knownBase : native.IOSurfaceGetBaseAddress(surface);
    if (base === null) throw machError("IOSurfaceGetBaseAddress", DARWIN.kIOReturnError);
    this.geometry = geometry;
    this.id = knownId ?? native.IOSurfaceGetID(surface);
    this.baseAddress = base;
    this.resources = { native, surface, holdsUse };
    surfaceFinalizer.register(this, this.resources, this);
  }

  /** The retained `IOSurfaceRef` (valid until release). */
  get surfaceRef(): Pointer {
    return this.open().surface;
  }

  unsafeHandle(): UnsafeSurfaceHandle {
    return { kind: "IOSurfaceRef", pointer: this.open().surface };
  }

  lock(readOnly: boolean): void {
    const { native, surface } = this.open();
    const kr = native.IOSurfaceLock(surface, lockOptions(readOnly));
    if (kr !== 0) throw machError("IOSurfaceLock", kr);
  }

  unlock(readOnly: boolean): void {
    const { native, surface } = this.open();
    const kr = native.IOSurfaceUnlock(surface, lockOptions(readOnly));
    if (kr !== 0) throw new LockStateError(`IOSurfaceUnlock failed: 0x${(kr >>> 0).toString(16)}`);
  }

  inUseElsewhere(): boolean {
    const { native, surface } = this.open();
    return native.IOSurfaceIsInUse(surface);
  }

  /** The one buffer over this IOSurface's memory, detached right before the reference goes. */
  memory(): ArrayBuffer {
    this.open();
    return this.#buffer ??= sharedBuffer(
      runtime.arrayBufferAt(this.baseAddress, this.geometry.allocSize),
      this,
    );
  }

  exportHandle(): number {
    const { native, surface } = this.open();
    const port = native.IOSurfaceCreateMachPort(surface);
    if (port === DARWIN.MACH_PORT_NULL || port === DARWIN.MACH_PORT_DEAD) {
      throw machError("IOSurfaceCreateMachPort", DARWIN.KERN_RESOURCE_SHORTAGE);
    }
    return port;
  }

  /** A new CVPixelBuffer over this surface; it keeps the surface in use until closed. */
  pixelBuffer(): PixelBuffer {
    const { native, surface } = this.open();
    return PixelBuffer.ofSurface(native, surface);
  }

  get released(): boolean {
    return this.resources === undefined;
  }

  release(): void {
    const r = this.resources;
    if (!r) return;
    this.resources = undefined;
    surfaceFinalizer.unregister(this);
    detachBuffer(this.#buffer);
    this.#buffer = undefined;
    this.releaseExtra();
    releaseResources(r);
  }

  /** Releases what a subclass holds besides the surface reference. */
  protected releaseExtra(): void {}

  protected open(): SurfaceResources {
    if (!this.resources) throw new Error("internal: IOSurface backing used after release");
    return this.resources;
  }
}

/**
 * The layout surfaceport asks IOSurface for: `requested`'s row bytes, plane
 * offsets (planes moved apart where an aligned row grows one) and allocation
 * size, each through `IOSurfaceAlignProperty` as `IOSurfaceRef.h` requires.
 */
export function alignedRequest(
  native: DarwinNative,
  requested: SurfaceGeometry,
): { planes: PlaneGeometry[]; allocSize: number } {
  const planar = requested.planes.length > 1;
  let end = 0;
  const planes = requested.planes.map((plane) => {
    const bytesPerRow = native.IOSurfaceAlignProperty(
      planar ? "kIOSurfacePlaneBytesPerRow" : "kIOSurfaceBytesPerRow",
      plane.bytesPerRow,
    );
    const offset = planar ? native.IOSurfaceAlignProperty("kIOSurfacePlaneOffset", end) : 0;
    end = offset + bytesPerRow * plane.height;
    return { ...plane, bytesPerRow, offset };
  });
  const allocSize = native.IOSurfaceAlignProperty(
    "kIOSurfaceAllocSize",
    Math.max(end, requested.allocSize),
  );
  return { planes, allocSize };
}

/** An IOSurface this process created (or adopted from a CVPixelBuffer). */
export class CreatedIOSurface extends IOSurfaceHolder {
  /**
   * `IOSurfaceCreate` for `requested` (the platform-neutral layout), with
   * every value surfaceport computes itself aligned as `IOSurfaceRef.h`
   * requires: row bytes, plane offsets, plane row bytes and the allocation
   * size through `IOSurfaceAlignProperty` (planes moved apart where an
   * aligned row grows one). IOSurface may still lay the memory out its own
   * way; the surface's geometry is therefore read back from IOSurface, and
   * that real layout is what views use and what the wire header carries.
   */
  static allocate(native: DarwinNative, requested: SurfaceGeometry): CreatedIOSurface {
    const { planes, allocSize } = alignedRequest(native, requested);
    const surface = native.createIOSurface({
      width: requested.width,
      height: requested.height,
      pixelFormat: fourccOf(requested.format),
      allocSize,
      planes,
    });
    if (surface === null) {
      throw machError(
        "IOSurfaceCreate",
        DARWIN.kIOReturnError,
        `IOSurface refused a ${requested.width}x${requested.height} ${requested.format} surface`,
      );
    }
    try {
      const layout = readLayout(native, surface);
      const geometry = geometryOfLayout(layout);
      const problem = typeof geometry === "string"
        ? geometry
        : geometry.format !== requested.format || geometry.width !== requested.width ||
            geometry.height !== requested.height
        ? `${geometry.width}x${geometry.height} ${geometry.format}`
        : undefined;
      if (problem !== undefined || typeof geometry === "string") {
        throw machError(
          "IOSurfaceCreate",
          DARWIN.kIOReturnError,
          `IOSurface made a surface surfaceport cannot describe: ${problem}; expected ` +
            `${requested.width}x${requested.height} ${requested.format}`,
        );
      }
      return new CreatedIOSurface(native, surface, geometry);
    } catch (error) {
      native.CFRelease(surface);
      throw error;
    }
  }

  /**
   * Adopts `surface` (this takes over one reference to it) with `geometry`;
   * with `holdsUse`, it also takes over one use (`IOSurfaceIncrementUseCount`
   * done by the caller), given back on release.
   */
  static adopt(
    native: DarwinNative,
    surface: Pointer,
    geometry: SurfaceGeometry,
    holdsUse = false,
  ): CreatedIOSurface {
    return new CreatedIOSurface(native, surface, geometry, holdsUse);
  }
}

/**
 * The backing of `Surface.fromPixelBuffer`: the pixel buffer's IOSurface,
 * retained and with one use of its own (`IOSurfaceIncrementUseCount`, as
 * `PixelBuffer.ofSurface` does), with the geometry it reports. Throws `TypeError` for a pixel
 * buffer that is not IOSurface-backed or has a layout surfaceport cannot
 * describe.
 */
export function surfaceBackingOfPixelBuffer(pixelBuffer: PixelBuffer): SurfaceBacking {
  const { native, pointer } = pixelBufferInternals(pixelBuffer, "Surface.fromPixelBuffer");
  const surface = native.CVPixelBufferGetIOSurface(pointer);
  if (surface === null) {
    throw new TypeError("Surface.fromPixelBuffer: the CVPixelBuffer is not backed by an IOSurface");
  }
  const geometry = geometryOfLayout(readLayout(native, surface));
  if (typeof geometry === "string") throw new TypeError(`Surface.fromPixelBuffer: ${geometry}`);
  // A retain is not a use: once the app closes the pixel buffer, a CVPixelBufferPool elsewhere
  // may recycle a surface nobody uses. The surface holds a use of its own until released.
  native.CFRetain(surface);
  native.IOSurfaceIncrementUseCount(surface);
  try {
    return CreatedIOSurface.adopt(native, surface, geometry, true);
  } catch (error) {
    native.IOSurfaceDecrementUseCount(surface);
    native.CFRelease(surface);
    throw error;
  }
}
