/**
 * The public {@link Surface}: a pixel buffer in shared memory, the same class
 * on every platform.
 *
 * @module
 */

import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import type { SurfaceBacking, UnsafeSurfaceHandle } from "../contract/backend.ts";
import type { PixelBuffer } from "../darwin/pixel_buffer.ts";
import { ClosedError, LockStateError, UnsupportedError } from "../core/errors.ts";
import {
  computeGeometry,
  DEFAULT_MAX_SURFACE_BYTES,
  type PixelFormat,
  type PixelFormatAlias,
  planeByteLength,
  type PlaneGeometry,
  type SurfaceGeometry,
} from "../core/geometry.ts";
import { backend } from "../platform.ts";
import { runtime } from "../../ffi/runtime.ts";
import {
  finalizers,
  noteReceivedClosed,
  noteReceivedOpen,
  type SurfaceOrigin,
  type SurfaceOwner,
} from "./surface_lifetime.ts";

export type { UnsafeSurfaceHandle };

/** Options of {@link Surface.create}. */
export interface SurfaceOptions {
  /** Width in pixels (1 to 32768; even for 4:2:0 formats). */
  width: number;
  /** Height in pixels (1 to 32768; even for 4:2:0 formats). */
  height: number;
  /** Pixel format; `"BGRA"` if omitted. `"NV12"`, `"I420"` and `"GRAY8"` are accepted as aliases of `"420v"`, `"y420"` and `"L008"`. */
  format?: PixelFormat | PixelFormatAlias;
  /** Refuse surfaces larger than this many bytes (default 1 GiB). */
  maxBytes?: number;
}

/** Options of {@link Surface.lock} and {@link Surface.unlock}. */
export interface LockOptions {
  /** Lock for reading only (`kIOSurfaceLockReadOnly`); must match between lock and unlock. */
  readOnly?: boolean;
}

/** The origins by their code in a surface's state (see `Surface`). */
const ORIGINS: readonly SurfaceOrigin[] = ["created", "pool", "received", "adopted"];

/** A surface's state bit for "closed". */
const CLOSED = 4;

/** One lock in a surface's state: the count sits above the origin's two bits and {@link CLOSED}. */
const ONE_LOCK = 8;

/**
 * Internal: the method `close()` calls to let go of the surface's owner,
 * which a pool's surfaces override.
 */
export const releaseOwner: unique symbol = Symbol("surfaceport.releaseOwner");

/**
 * The views `bytes()` handed out, by the mapping's one buffer and plane
 * index, reused while the plane's offset and length match. Emptied with the
 * buffer: a detached buffer's views have length 0 and never match again.
 */
const planeViews = new WeakMap<ArrayBuffer, Uint8Array<ArrayBuffer>[]>();

/** Reads a surface's backing, for the library's own modules (see {@link backingOf}). */
let backingOfSurface: (surface: Surface) => SurfaceBacking;

/**
 * A pixel buffer in memory that can be handed to another process without
 * copying: a sealed memfd on Linux, an IOSurface on macOS.
 *
 * Create one with {@link Surface.create}, take one from a `SurfacePool`, or
 * receive one from a `Channel`. Close it when done (or use `using`): a
 * `FinalizationRegistry` releases forgotten surfaces, but only at GC time.
 *
 * Views ({@link bytes}) never reach unmapped memory: a view is detached
 * (`length` 0, reads give `undefined`, writes are dropped) when the memory
 * it shows is unmapped — at `close()` of a surface from
 * {@link Surface.create}, and when a pool or a channel's mapping cache lets
 * go of the memory. A view kept past `close()` of a pooled or received
 * surface still shows memory that the pool may hand to the next frame or
 * the sender may rewrite: don't use views after `close()`. (All surfaces
 * share one buffer per mapping rather than one per frame, because V8 counts
 * a buffer's size towards its GC heuristics: a fresh 33 MB buffer per 4K
 * frame made every handoff pay for full garbage collections.)
 *
 * @example
 * ```ts
 * import { Surface } from "@surfaceport/surfaceport";
 * using surface = Surface.create({ width: 640, height: 480 });
 * surface.bytes().fill(0xff); // white, opaque BGRA
 * ```
 */
export class Surface {
  #backing: SurfaceBacking;
  /**
   * Where it came from, whether it is closed and its nested CPU locks, in
   * one number (a Surface is made per frame): the origin's index in
   * {@link ORIGINS} in the low two bits, then {@link CLOSED}, above them the
   * count of locks, negative when read-only.
   */
  #state: number;

  static {
    backingOfSurface = (surface) => surface.#backing;
  }

  /**
   * Internal: surfaces come from {@link Surface.create}, a pool or a channel.
   * `owner.release()` runs once: at `close()` (through {@link releaseOwner}),
   * or (with `finalize`) when the surface is garbage-collected unclosed — one
   * finalizer registration per surface, the only one for a received frame.
   * The owner is the backing itself, except for a pool's surfaces (a
   * subclass that keeps its pool entry: no field for it in every frame).
   * @ignore
   */
  constructor(
    backing: SurfaceBacking,
    owner: SurfaceOwner,
    finalize = true,
    origin: SurfaceOrigin = "created",
  ) {
    this.#backing = backing;
    this.#state = ORIGINS.indexOf(origin);
    if (origin === "received") noteReceivedOpen(backing.id);
    if (!finalize) return;
    if (origin === "received" || origin === "adopted") finalizers[origin].register(this, owner);
    else finalizers[origin].register(this, owner, this);
  }

  /**
   * Allocates a new surface. Throws `TypeError`/`RangeError` for bad options
   * (before any allocation) and `SystemCallError`/`MachError` if the system
   * refuses the memory.
   */
  static create(options: SurfaceOptions): Surface {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("Surface.create needs an options object { width, height, format? }");
    }
    const geometry = computeGeometry(
      options.width,
      options.height,
      options.format ?? "BGRA",
      options.maxBytes ?? DEFAULT_MAX_SURFACE_BYTES,
    );
    const backing = backend().allocateSurface(geometry);
    // The backing finalizes itself, and its views keep it alive: no finalizer
    // on this surface, which would release the memory under a live view.
    return new Surface(backing, backing, false);
  }

  /**
   * macOS only: a surface over the IOSurface behind `pixelBuffer` (made by
   * `PixelBuffer.create`, or by VideoToolbox, AVFoundation...), to send it
   * over a channel. It takes its own reference to the IOSurface and one use
   * of it (`IOSurfaceIncrementUseCount`), so closing either object leaves the
   * other usable and a `CVPixelBufferPool` does not recycle the surface while
   * this one is open. Throws `TypeError` for a pixel
   * buffer that is not IOSurface-backed or whose layout surfaceport cannot
   * describe.
   */
  static fromPixelBuffer(pixelBuffer: PixelBuffer): Surface {
    const platform = backend();
    if (!platform.adoptPixelBuffer) {
      throw new UnsupportedError(
        `Surface.fromPixelBuffer: CVPixelBuffer exists only on macOS (this is ${runtime.os})`,
      );
    }
    const backing = platform.adoptPixelBuffer(pixelBuffer);
    return new Surface(backing, backing);
  }

  /**
   * macOS only: a new `PixelBuffer` (CVPixelBuffer) over this surface's
   * IOSurface, for CoreVideo-based APIs. It keeps the surface in use (a pool
   * does not reuse it) until the pixel buffer is closed, even after this
   * surface is. Throws `UnsupportedError` on other platforms.
   */
  pixelBuffer(): PixelBuffer {
    if (this.#state & CLOSED) throwClosed("pixelBuffer");
    const backing = this.#backing;
    if (!backing.pixelBuffer) {
      throw new UnsupportedError(
        `Surface.pixelBuffer: CVPixelBuffer exists only on macOS (this is ${runtime.os})`,
      );
    }
    return backing.pixelBuffer() as PixelBuffer;
  }

  /** Width in pixels. */
  get width(): number {
    return this.#backing.geometry.width;
  }

  /** Height in pixels. */
  get height(): number {
    return this.#backing.geometry.height;
  }

  /** The pixel format it was created with. */
  get format(): PixelFormat {
    return this.#backing.geometry.format;
  }

  /** The planes' layouts in index order: Y, then CbCr (NV12) or Cb and Cr (I420); one for BGRA. */
  get planes(): readonly PlaneGeometry[] {
    return this.#backing.geometry.planes;
  }

  /** Total bytes of memory backing the surface. */
  get allocSize(): number {
    return this.#backing.geometry.allocSize;
  }

  /** The full layout (width, height, format, planes, allocSize). */
  get geometry(): SurfaceGeometry {
    return this.#backing.geometry;
  }

  /**
   * A number identifying the underlying buffer on this machine: the memfd's
   * inode on Linux, the IOSurfaceID on macOS. Equal on both sides of a
   * handoff. For logging only: it grants nothing and must never be used to
   * look a surface up.
   */
  get id(): number {
    return this.#backing.id;
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return (this.#state & CLOSED) !== 0;
  }

  /**
   * **Unsafe**: the native handle under this surface, for other native code
   * (a GStreamer `GstFdMemory`, an encoder, a GPU import). On Linux
   * `{ kind: "memfd", fd }`, on macOS `{ kind: "IOSurfaceRef", pointer }`.
   *
   * Ownership rules:
   * - **Borrowed.** The handle belongs to surfaceport. Never `close()` the
   *   fd or `CFRelease` the pointer yourself: surfaceport would later close
   *   or release a number or reference that now means something else.
   * - **Valid until this surface is closed** ({@link close}, `using`, the
   *   frame's `close()`, or the finaliser of a dropped surface). Do not keep
   *   it past that; read it again from an open surface instead.
   * - **An owned copy**: on Linux `dup()` / `fcntl(fd, F_DUPFD_CLOEXEC)`
   *   (then close your copy yourself); on macOS `CFRetain` (then
   *   `CFRelease` it). A copy keeps the memory alive, not the frame: for a
   *   received surface a Linux `dup` shares the descriptor's lock, so the
   *   sender's pool does not reuse the surface while your copy is open; a
   *   `CFRetain` does not count as a use on macOS. To hold a frame, keep
   *   the surface open.
   * - The memory layout is {@link planes}; the memfd is sealed against
   *   resizing (never `ftruncate` it) and may be `mmap`ed `MAP_SHARED`.
   *
   * Throws `ClosedError` once the surface is closed.
   */
  get unsafeHandle(): UnsafeSurfaceHandle {
    if (this.#state & CLOSED) throwClosed("unsafeHandle");
    return this.#backing.unsafeHandle();
  }

  /**
   * True while another holder uses the surface: a process it was sent to
   * (until that process closes the frame, or dies), a message still queued
   * to one, or another frame of it open here. Asks the kernel each time
   * (`F_OFD_GETLK` on Linux, `IOSurfaceIsInUse` on macOS).
   */
  get inUse(): boolean {
    if (this.#state & CLOSED) throwClosed("inUse");
    return this.#backing.inUseElsewhere();
  }

  /**
   * A zero-copy view of plane `plane` (`bytesPerRow * height` bytes; rows may
   * be padded past `width * bytesPerElement`). Detached when the memory is
   * unmapped; see the class documentation for views kept past {@link close}.
   */
  bytes(plane = 0): Uint8Array<ArrayBuffer> {
    if (this.#state & CLOSED) throwClosed("bytes");
    const planes = this.#backing.geometry.planes;
    if (!Number.isInteger(plane) || plane < 0 || plane >= planes.length) {
      throw new RangeError(`plane must be an integer from 0 to ${planes.length - 1}, got ${plane}`);
    }
    const geometry = planes[plane];
    // The backing keeps its one buffer (no field here: a Surface is made per frame). It
    // references the backing, never a Surface: no cycle through this surface's finalizer.
    const memory = this.#backing.memory();
    const length = planeByteLength(geometry);
    // Every surface over one mapping shares its buffer, and so its views: a frame that comes
    // back gets the view it had last time instead of a new one per call.
    let views = planeViews.get(memory);
    if (!views) planeViews.set(memory, views = []);
    const view = views[plane];
    if (view && view.byteOffset === geometry.offset && view.length === length) return view;
    return views[plane] = new Uint8Array(memory, geometry.offset, length);
  }

  /**
   * Begins CPU access, as `IOSurfaceLock` does. Locks nest; each needs a
   * matching {@link unlock} with the same `readOnly`. On Linux this is a
   * memory barrier only, with the same rules and errors.
   */
  lock(options: LockOptions = {}): void {
    if (this.#state & CLOSED) throwClosed("lock");
    const readOnly = options.readOnly === true;
    const locks = this.#state >> 3;
    if (locks !== 0 && (locks < 0) !== readOnly) {
      throw new LockStateError(
        `lock: the surface is already locked ${locks < 0 ? "read-only" : "read-write"}`,
      );
    }
    this.#backing.lock(readOnly);
    this.#state += readOnly ? -ONE_LOCK : ONE_LOCK;
  }

  /** Ends CPU access begun by {@link lock}. Throws `LockStateError` if not locked so. */
  unlock(options: LockOptions = {}): void {
    if (this.#state & CLOSED) throwClosed("unlock");
    const readOnly = options.readOnly === true;
    const locks = this.#state >> 3;
    if (locks === 0) throw new LockStateError("unlock: the surface is not locked");
    if ((locks < 0) !== readOnly) {
      throw new LockStateError(
        `unlock: locked ${
          locks < 0 ? "read-only" : "read-write"
        }, unlocked with readOnly: ${readOnly}`,
      );
    }
    this.#backing.unlock(readOnly);
    this.#state += readOnly ? ONE_LOCK : -ONE_LOCK;
  }

  /**
   * Lets go of the surface: drops any CPU lock and releases it (or returns
   * it to its pool). Views are detached when the memory itself is released
   * (see the class documentation). Idempotent.
   */
  close(): void {
    if (this.#state & CLOSED) return;
    this.#state |= CLOSED;
    const origin = ORIGINS[this.#state & 3];
    // (A received or adopted frame's registration stays: see `finalizers`.)
    if (origin === "received") noteReceivedClosed(this.#backing.id);
    else if (origin !== "adopted") finalizers[origin].unregister(this);
    while (this.#state >> 3 !== 0) {
      const readOnly = this.#state < 0;
      this.#backing.unlock(readOnly);
      this.#state += readOnly ? ONE_LOCK : -ONE_LOCK;
    }
    // The backing's shared buffer stays: the backing detaches it right before
    // the memory is unmapped, so no view ever reaches unmapped memory.
    this[releaseOwner]();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Internal: lets go of what this surface owns, once, at `close()`: its
   * backing (a pool's surface gives its entry back instead).
   * @ignore
   */
  [releaseOwner](): void {
    this.#backing.release();
  }

  static {
    inspectOnNode(this);
  }

  /** What `console.log` shows: format, size, id, where it came from, state. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    const { format, width, height, allocSize } = this.#backing.geometry;
    const state: Record<string, unknown> = {
      format,
      size: `${width}x${height}`,
      id: this.#backing.id,
      from: (this.#state & 3) === 0 ? "Surface.create" : ORIGINS[this.#state & 3],
      closed: this.closed,
    };
    if (!this.closed) {
      state.inUse = this.#backing.inUseElsewhere();
      state.allocSize = allocSize;
    }
    return `Surface ${inspect(state, options)}`;
  }
}

/**
 * Throws the `ClosedError` of `Surface.<operation>` on a closed surface. A
 * function, not a private method: a class with private methods gives each
 * instance a brand slot, 8 bytes per frame.
 */
function throwClosed(operation: string): never {
  throw new ClosedError("surface", `Surface.${operation}`);
}

/** Internal: the backing of an open surface, for channels and pools. */
export function backingOf(surface: Surface, operation: string): SurfaceBacking {
  if (surface.closed) throw new ClosedError("surface", operation);
  return backingOfSurface(surface);
}
