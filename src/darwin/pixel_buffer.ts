/**
 * {@link PixelBuffer}: a CoreVideo `CVPixelBufferRef` over an IOSurface
 * (macOS only), for handing surfaceport surfaces to VideoToolbox, AVFoundation,
 * Core Image and the like, and for sending pixel buffers made by them.
 *
 * @module
 */

import { ClosedError, LockStateError, UnsupportedError } from "../core/errors.ts";
import { computeGeometry, fourccOf, type PixelFormat } from "../core/geometry.ts";
import { machError } from "./mach.ts";
import { activeDarwinNative, type DarwinNative } from "./native.ts";
import { DARWIN } from "./structs.ts";
import { type Pointer, runtime } from "../../ffi/runtime.ts";

/** Options of {@link PixelBuffer.create}. */
export interface PixelBufferOptions {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Pixel format; `"BGRA"` if omitted. */
  format?: PixelFormat;
}

/** Options of {@link PixelBuffer.lock} and {@link PixelBuffer.unlock}. */
export interface PixelBufferLockOptions {
  /** `kCVPixelBufferLock_ReadOnly`; must match between lock and unlock. */
  readOnly?: boolean;
}

interface PixelBufferState {
  native: DarwinNative;
  pointer: Pointer;
  /** The surface whose use count this buffer raised (decremented on release). */
  usedSurface: Pointer | undefined;
}

function releaseState(state: PixelBufferState): void {
  if (state.usedSurface) state.native.IOSurfaceDecrementUseCount(state.usedSurface);
  state.native.CFRelease(state.pointer);
}

const finalizer = new FinalizationRegistry<PixelBufferState>(releaseState);
const STATE = new WeakMap<PixelBuffer, () => PixelBufferState | undefined>();

function nativeFor(operation: string): DarwinNative {
  const native = activeDarwinNative();
  if (!native) {
    throw new UnsupportedError(
      `${operation}: CVPixelBuffer exists only on macOS (this is ${runtime.os})`,
    );
  }
  return native;
}

function readPointer(out: Uint8Array): Pointer | null {
  return runtime.pointerFrom(new DataView(out.buffer).getBigUint64(0, true));
}

/**
 * A CoreVideo pixel buffer (macOS only; on other platforms every way of
 * getting one throws `UnsupportedError`). It owns one reference to its
 * `CVPixelBufferRef`, released by {@link close} (or, as a safety net, when it
 * is garbage-collected).
 *
 * Get one from a surface with `surface.pixelBuffer()` (it keeps that
 * surface in use, so a pool does not reuse it, until closed), make a new
 * IOSurface-backed one with {@link PixelBuffer.create}, or wrap one from
 * other native code with {@link PixelBuffer.fromPointer}. Turn one into a
 * sendable surface with `Surface.fromPixelBuffer(pixelBuffer)`.
 *
 * @example
 * ```ts
 * import { PixelBuffer, Surface } from "@surfaceport/surfaceport";
 * using pixelBuffer = PixelBuffer.create({ width: 1280, height: 720, format: "420v" });
 * using surface = Surface.fromPixelBuffer(pixelBuffer); // the same memory
 * ```
 */
export class PixelBuffer {
  #state: PixelBufferState | undefined;
  #lockDepth = 0;
  #lockReadOnly = false;

  /**
   * Internal: pixel buffers come from the static methods and `surface.pixelBuffer()`.
   * @ignore
   */
  constructor(state: PixelBufferState) {
    this.#state = state;
    STATE.set(this, () => this.#state);
    finalizer.register(this, state, this);
  }

  /**
   * Creates a new IOSurface-backed pixel buffer (`CVPixelBufferCreate` with
   * `kCVPixelBufferIOSurfacePropertiesKey`). Throws `TypeError`/`RangeError`
   * for bad options and `MachError` with the `CVReturn` if CoreVideo refuses.
   */
  static create(options: PixelBufferOptions): PixelBuffer {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("PixelBuffer.create needs an options object { width, height, format? }");
    }
    const geometry = computeGeometry(options.width, options.height, options.format ?? "BGRA");
    const native = nativeFor("PixelBuffer.create");
    const out = new Uint8Array(8);
    const kr = native.createPixelBuffer(
      geometry.width,
      geometry.height,
      fourccOf(geometry.format),
      out,
    );
    const pointer = readPointer(out);
    if (kr !== DARWIN.kCVReturnSuccess || pointer === null) {
      throw machError("CVPixelBufferCreate", kr === 0 ? -6660 : kr);
    }
    return new PixelBuffer({ native, pointer, usedSurface: undefined });
  }

  /**
   * Wraps a `CVPixelBufferRef` from other native code. This takes its own
   * reference (`CFRetain`); the caller keeps, and must still release, its own.
   */
  static fromPointer(pointer: Pointer): PixelBuffer {
    if (pointer === null || typeof pointer !== "object") {
      throw new TypeError("PixelBuffer.fromPointer needs a non-null CVPixelBufferRef pointer");
    }
    const native = nativeFor("PixelBuffer.fromPointer");
    native.CFRetain(pointer);
    return new PixelBuffer({ native, pointer, usedSurface: undefined });
  }

  /**
   * Internal: a new pixel buffer over `surface` that holds one use of it.
   * @ignore
   */
  static ofSurface(native: DarwinNative, surface: Pointer): PixelBuffer {
    const out = new Uint8Array(8);
    const kr = native.CVPixelBufferCreateWithIOSurface(surface, out);
    const pointer = readPointer(out);
    if (kr !== DARWIN.kCVReturnSuccess || pointer === null) {
      throw machError("CVPixelBufferCreateWithIOSurface", kr === 0 ? -6660 : kr);
    }
    native.IOSurfaceIncrementUseCount(surface);
    return new PixelBuffer({ native, pointer, usedSurface: surface });
  }

  /** The `CVPixelBufferRef`, valid until {@link close}: pass it to other native code. */
  get pointer(): Pointer {
    return this.#open("pointer").pointer;
  }

  /** Width in pixels. */
  get width(): number {
    const { native, pointer } = this.#open("width");
    return native.CVPixelBufferGetWidth(pointer);
  }

  /** Height in pixels. */
  get height(): number {
    const { native, pointer } = this.#open("height");
    return native.CVPixelBufferGetHeight(pointer);
  }

  /** The CoreVideo pixel format type (a big-endian fourcc such as `0x42475241` for BGRA). */
  get pixelFormatType(): number {
    const { native, pointer } = this.#open("pixelFormatType");
    return native.CVPixelBufferGetPixelFormatType(pointer);
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#state === undefined;
  }

  /** `CVPixelBufferLockBaseAddress`. Locks nest; each needs a matching {@link unlock}. */
  lock(options: PixelBufferLockOptions = {}): void {
    const { native, pointer } = this.#open("lock");
    const readOnly = options.readOnly === true;
    if (this.#lockDepth > 0 && this.#lockReadOnly !== readOnly) {
      throw new LockStateError("lock: the pixel buffer is already locked in the other mode");
    }
    const kr = native.CVPixelBufferLockBaseAddress(pointer, flags(readOnly));
    if (kr !== 0) throw machError("CVPixelBufferLockBaseAddress", kr);
    this.#lockReadOnly = readOnly;
    this.#lockDepth++;
  }

  /** `CVPixelBufferUnlockBaseAddress`, with the same `readOnly` as the lock. */
  unlock(options: PixelBufferLockOptions = {}): void {
    const { native, pointer } = this.#open("unlock");
    const readOnly = options.readOnly === true;
    if (this.#lockDepth === 0) throw new LockStateError("unlock: the pixel buffer is not locked");
    if (this.#lockReadOnly !== readOnly) {
      throw new LockStateError("unlock: readOnly differs from the lock's");
    }
    const kr = native.CVPixelBufferUnlockBaseAddress(pointer, flags(readOnly));
    if (kr !== 0) throw machError("CVPixelBufferUnlockBaseAddress", kr);
    this.#lockDepth--;
  }

  /** Unlocks if locked and releases the pixel buffer (`CFRelease`). Idempotent. */
  close(): void {
    const state = this.#state;
    if (!state) return;
    this.#state = undefined;
    finalizer.unregister(this);
    while (this.#lockDepth > 0) {
      state.native.CVPixelBufferUnlockBaseAddress(state.pointer, flags(this.#lockReadOnly));
      this.#lockDepth--;
    }
    releaseState(state);
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(operation: string): PixelBufferState {
    if (!this.#state) throw new ClosedError("pixel buffer", `PixelBuffer.${operation}`);
    return this.#state;
  }
}

function flags(readOnly: boolean): bigint {
  return readOnly ? BigInt(DARWIN.kCVPixelBufferLock_ReadOnly) : 0n;
}

/** Internal: the native interface and pointer of an open pixel buffer. */
export function pixelBufferInternals(
  pixelBuffer: PixelBuffer,
  operation: string,
): { native: DarwinNative; pointer: Pointer } {
  const get = pixelBuffer instanceof PixelBuffer ? STATE.get(pixelBuffer) : undefined;
  if (!get) throw new TypeError(`${operation}: expected a PixelBuffer`);
  const state = get();
  if (!state) throw new ClosedError("pixel buffer", operation);
  return { native: state.native, pointer: state.pointer };
}
