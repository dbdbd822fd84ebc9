/**
 * A fake task's IOSurface, CoreFoundation and CoreVideo calls: surfaces in
 * real memory, use counts, CF reference counts, pixel buffers.
 *
 * @module
 */

import type { DarwinNative, IOSurfaceProperties } from "../../src/darwin/native.ts";
import { computeGeometry, formatOfFourcc } from "../../src/core/geometry.ts";
import { type CFObject, D, type FakeSurface } from "./model.ts";
import { FakeTaskMessages } from "./task_messages.ts";
import { type Pointer, type PointerValue, runtime } from "../../ffi/runtime.ts";

/** FNV-1a over `bytes`: enough to see whether a lock holder wrote to a surface. */
function hashBytes(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return hash >>> 0;
}

/** One simulated task (process): a `DarwinNative` over the shared `FakeMachKernel`. */
export class FakeTask extends FakeTaskMessages implements DarwinNative {
  #object(call: string, pointer: PointerValue, kind: CFObject["kind"]): CFObject | undefined {
    const value = pointer === null ? 0n : runtime.pointerValue(pointer);
    const object = this.kernel.objects.get(value);
    if (!object || object.kind !== kind || object.task !== this) {
      if (this.alive) {
        this.kernel.violation(
          `task ${this.pid}: ${call}(0x${value.toString(16)}): not a live ${kind} of this task`,
        );
      }
      return undefined;
    }
    return object;
  }

  #surface(call: string, pointer: Pointer): FakeSurface {
    const object = this.#object(call, pointer, "surface");
    if (!object || object.kind !== "surface") {
      throw new Error(`fake: ${call} on a bad IOSurfaceRef`);
    }
    return object.surface;
  }

  /** This task's (single, refcounted) IOSurfaceRef for `surface`, +1. */
  #surfaceRef(surface: FakeSurface): Pointer {
    for (const [value, object] of this.kernel.objects) {
      if (object.kind === "surface" && object.task === this && object.surface === surface) {
        object.refs++;
        return runtime.pointerFrom(value)!;
      }
    }
    return this.kernel.newObject({ kind: "surface", task: this, surface, refs: 1, locks: [] });
  }

  createIOSurface(properties: IOSurfaceProperties): PointerValue {
    if (properties.allocSize <= 0 || properties.planes.length === 0) return null;
    return this.#surfaceRef(this.kernel.newSurface(properties));
  }

  IOSurfaceAlignProperty(key: string, value: number): number {
    const a = key === "kIOSurfaceAllocSize" ? 16384 : this.kernel.surfaceAlignment;
    return Math.ceil(value / a) * a;
  }

  IOSurfaceCreateMachPort(pointer: Pointer): number {
    const surface = this.#surface("IOSurfaceCreateMachPort", pointer);
    const port = this.kernel.newPort("kernel");
    port.surface = surface;
    surface.livePorts++;
    return this.insert({ port, type: "send" });
  }

  IOSurfaceLookupFromMachPort(name: number): PointerValue {
    const e = this.names.get(name);
    if (!e || e.send === 0 || !e.port.surface) return null;
    return this.#surfaceRef(e.port.surface);
  }

  IOSurfaceGetID(pointer: Pointer): number {
    return this.#surface("IOSurfaceGetID", pointer).id;
  }

  IOSurfaceIsInUse(pointer: Pointer): boolean {
    const surface = this.#surface("IOSurfaceIsInUse", pointer);
    if (surface.livePorts > 0) return true;
    for (const [task, count] of surface.useCounts) if (task.alive && count > 0) return true;
    return false;
  }

  IOSurfaceIncrementUseCount(pointer: Pointer): void {
    const surface = this.#surface("IOSurfaceIncrementUseCount", pointer);
    surface.useCounts.set(this, (surface.useCounts.get(this) ?? 0) + 1);
  }

  IOSurfaceDecrementUseCount(pointer: Pointer): void {
    if (!this.alive) return;
    const surface = this.#surface("IOSurfaceDecrementUseCount", pointer);
    const count = surface.useCounts.get(this) ?? 0;
    if (count === 0) {
      this.kernel.violation(`task ${this.pid}: IOSurfaceDecrementUseCount below zero`);
      return;
    }
    surface.useCounts.set(this, count - 1);
  }

  /**
   * `IOSurfaceLock`, with IOSurfaceTypes.h's semantics: `kIOSurfaceLockReadOnly`
   * (1) promises not to modify the memory (the seed is then not bumped, so
   * other users' caches of it stay valid), `kIOSurfaceLockAvoidSync` (2) only
   * asks not to page; the same options must be passed to the unlock.
   */
  IOSurfaceLock(pointer: Pointer, options: number): number {
    const object = this.#object("IOSurfaceLock", pointer, "surface");
    if (!object || object.kind !== "surface") return D.kIOReturnBadArgument;
    if ((options & ~(D.kIOSurfaceLockReadOnly | D.kIOSurfaceLockAvoidSync)) !== 0) {
      this.kernel.violation(
        `task ${this.pid}: IOSurfaceLock with unknown options 0x${options.toString(16)}`,
      );
      return D.kIOReturnBadArgument;
    }
    object.locks.push({ options, hash: hashBytes(object.surface.bytes) });
    return D.kIOReturnSuccess;
  }

  /**
   * `IOSurfaceUnlock`: a write lock's unlock bumps the seed; a read-only one
   * must not have changed the memory (a violation: other processes would
   * keep a stale copy) and does not bump it. Options that differ from the
   * lock's are undefined behaviour in IOSurface: refused here.
   */
  IOSurfaceUnlock(pointer: Pointer, options: number): number {
    const object = this.#object("IOSurfaceUnlock", pointer, "surface");
    if (!object || object.kind !== "surface") return D.kIOReturnBadArgument;
    const locks = object.locks;
    const lock = locks[locks.length - 1];
    if (!lock || lock.options !== options) return D.kIOReturnError;
    locks.pop();
    if (options & D.kIOSurfaceLockReadOnly) {
      if (hashBytes(object.surface.bytes) !== lock.hash) {
        this.kernel.violation(
          `task ${this.pid}: surface ${object.surface.id} was written under a ` +
            `kIOSurfaceLockReadOnly lock (its seed is not bumped: other users keep stale copies)`,
        );
      }
    } else object.surface.seed++;
    return D.kIOReturnSuccess;
  }

  /** `IOSurfaceGetSeed` */
  IOSurfaceGetSeed(p: Pointer): number {
    return this.#surface("IOSurfaceGetSeed", p).seed;
  }

  IOSurfaceGetAllocSize(p: Pointer): number {
    return this.#surface("IOSurfaceGetAllocSize", p).allocSize;
  }
  IOSurfaceGetWidth(p: Pointer): number {
    return this.#surface("IOSurfaceGetWidth", p).width;
  }
  IOSurfaceGetHeight(p: Pointer): number {
    return this.#surface("IOSurfaceGetHeight", p).height;
  }
  IOSurfaceGetBytesPerElement(p: Pointer): number {
    return this.#surface("IOSurfaceGetBytesPerElement", p).bytesPerElement;
  }
  IOSurfaceGetBytesPerRow(p: Pointer): number {
    return this.#surface("IOSurfaceGetBytesPerRow", p).bytesPerRow;
  }
  IOSurfaceGetPlaneCount(p: Pointer): number {
    return this.#surface("IOSurfaceGetPlaneCount", p).planeInfo.length;
  }
  IOSurfaceGetPixelFormat(p: Pointer): number {
    return this.#surface("IOSurfaceGetPixelFormat", p).pixelFormat;
  }
  IOSurfaceGetBaseAddress(p: Pointer): PointerValue {
    return runtime.pointerFrom(
      runtime.addressOf(this.#surface("IOSurfaceGetBaseAddress", p).bytesFor(this)),
    );
  }
  IOSurfaceGetBaseAddressOfPlane(p: Pointer, plane: number): PointerValue {
    const surface = this.#surface("IOSurfaceGetBaseAddressOfPlane", p);
    const info = surface.planeInfo[plane];
    if (!info) return null;
    return runtime.pointerFrom(runtime.addressOf(surface.bytesFor(this)) + BigInt(info.offset));
  }
  IOSurfaceGetWidthOfPlane(p: Pointer, plane: number): number {
    return this.#surface("IOSurfaceGetWidthOfPlane", p).planeInfo[plane]?.width ?? 0;
  }
  IOSurfaceGetHeightOfPlane(p: Pointer, plane: number): number {
    return this.#surface("IOSurfaceGetHeightOfPlane", p).planeInfo[plane]?.height ?? 0;
  }
  IOSurfaceGetBytesPerElementOfPlane(p: Pointer, plane: number): number {
    return this.#surface("IOSurfaceGetBytesPerElementOfPlane", p).planeInfo[plane]
      ?.bytesPerElement ?? 0;
  }
  IOSurfaceGetBytesPerRowOfPlane(p: Pointer, plane: number): number {
    return this.#surface("IOSurfaceGetBytesPerRowOfPlane", p).planeInfo[plane]?.bytesPerRow ?? 0;
  }

  // --- CoreFoundation / CoreVideo ---------------------------------------------------

  #anyObject(call: string, pointer: Pointer): CFObject | undefined {
    const value = runtime.pointerValue(pointer);
    const object = this.kernel.objects.get(value);
    if (!object || object.task !== this) {
      if (this.alive) {
        this.kernel.violation(
          `task ${this.pid}: ${call}(0x${value.toString(16)}): no such object (released twice?)`,
        );
      }
      return undefined;
    }
    return object;
  }

  CFRetain(pointer: Pointer): void {
    if (this.kernel.constants.has(runtime.pointerValue(pointer))) return; // immortal
    const object = this.#anyObject("CFRetain", pointer);
    if (object) object.refs++;
  }

  CFRelease(pointer: Pointer): void {
    if (this.kernel.constants.has(runtime.pointerValue(pointer))) return; // immortal
    const object = this.#anyObject("CFRelease", pointer);
    if (!object) return;
    if (--object.refs > 0) return;
    this.kernel.objects.delete(runtime.pointerValue(pointer));
    if (object.kind === "cf") {
      // kCFType callbacks: a container releases what it retained.
      const held = [...object.entries.keys(), ...object.entries.values(), ...object.items];
      for (const value of held) this.CFRelease(runtime.pointerFrom(value)!);
      return;
    }
    if (object.kind === "pixelBuffer") {
      const uses = object.used.useCounts.get(this) ?? 0;
      if (uses > 0) object.used.useCounts.set(this, uses - 1); // CoreVideo's own use ends
      this.CFRelease(runtime.pointerFrom(object.surfaceObject)!);
    }
  }

  /**
   * A pixel buffer over `surfaceRef` (taking over one reference to it). Like
   * CoreVideo's, it holds one use of the surface for as long as it lives:
   * that is how a `CVPixelBufferPool` knows a buffer it handed out is still
   * used somewhere.
   */
  #pixelBufferOver(surfaceRef: Pointer, out: Uint8Array): number {
    const used = this.#surface("CVPixelBuffer", surfaceRef);
    used.useCounts.set(this, (used.useCounts.get(this) ?? 0) + 1);
    const pointer = this.kernel.newObject({
      kind: "pixelBuffer",
      task: this,
      used,
      surfaceObject: runtime.pointerValue(surfaceRef),
      refs: 1,
      locks: [],
    });
    new DataView(out.buffer, out.byteOffset).setBigUint64(
      0,
      runtime.pointerValue(pointer),
      true,
    );
    return D.kCVReturnSuccess;
  }

  CVPixelBufferCreateWithIOSurface(surface: Pointer, out: Uint8Array): number {
    if (!this.#object("CVPixelBufferCreateWithIOSurface", surface, "surface")) return -6661;
    this.CFRetain(surface); // the pixel buffer retains its surface
    return this.#pixelBufferOver(surface, out);
  }

  createPixelBuffer(width: number, height: number, pixelFormat: number, out: Uint8Array): number {
    const format = formatOfFourcc(pixelFormat);
    if (!format) return -6680;
    const geometry = computeGeometry(width, height, format);
    const surface = this.createIOSurface({
      width,
      height,
      pixelFormat,
      allocSize: geometry.allocSize,
      planes: geometry.planes,
    })!;
    return this.#pixelBufferOver(surface, out); // the surface's only reference is the buffer's
  }

  #pixelBuffer(call: string, pointer: Pointer) {
    const object = this.#object(call, pointer, "pixelBuffer");
    if (!object || object.kind !== "pixelBuffer") {
      throw new Error(`fake: ${call} on a bad CVPixelBufferRef`);
    }
    return object;
  }

  CVPixelBufferGetIOSurface(pointer: Pointer): PointerValue {
    return runtime.pointerFrom(
      this.#pixelBuffer("CVPixelBufferGetIOSurface", pointer).surfaceObject,
    );
  }

  #pixelBufferSurface(call: string, pointer: Pointer): FakeSurface {
    const object = this.kernel.objects.get(this.#pixelBuffer(call, pointer).surfaceObject);
    if (!object || object.kind !== "surface") throw new Error(`fake: ${call}: surface is gone`);
    return object.surface;
  }

  CVPixelBufferGetWidth(pointer: Pointer): number {
    return this.#pixelBufferSurface("CVPixelBufferGetWidth", pointer).width;
  }
  CVPixelBufferGetHeight(pointer: Pointer): number {
    return this.#pixelBufferSurface("CVPixelBufferGetHeight", pointer).height;
  }
  CVPixelBufferGetPixelFormatType(pointer: Pointer): number {
    return this.#pixelBufferSurface("CVPixelBufferGetPixelFormatType", pointer).pixelFormat;
  }

  CVPixelBufferLockBaseAddress(pointer: Pointer, flags: bigint): number {
    if (typeof flags !== "bigint") {
      this.kernel.violation("CVPixelBufferLockBaseAddress: lock flags must be a u64 (bigint)");
    }
    this.#pixelBuffer("CVPixelBufferLockBaseAddress", pointer).locks.push(flags);
    return D.kCVReturnSuccess;
  }

  CVPixelBufferUnlockBaseAddress(pointer: Pointer, flags: bigint): number {
    const locks = this.#pixelBuffer("CVPixelBufferUnlockBaseAddress", pointer).locks;
    if (locks.length === 0 || locks[locks.length - 1] !== flags) return -6660;
    locks.pop();
    return D.kCVReturnSuccess;
  }
}
