/**
 * The native calls the macOS backend makes, as an injectable interface: the
 * backend never touches the loaded symbols directly, so that its channel,
 * surface and pool logic can run on Linux against the in-memory test double
 * in `tests/fakes/fake_darwin.ts` (which enforces Mach right semantics and
 * IOSurface use counts), and on macOS against {@link realDarwinNative}.
 *
 * Thin calls keep their C names and C shapes (out-parameters are small
 * buffers). Two calls are composites, because what they build is a
 * CoreFoundation object graph that only the real frameworks understand:
 * {@link DarwinNative.createIOSurface} (the `IOSurfaceCreate` property
 * dictionary) and {@link DarwinNative.createPixelBuffer}.
 *
 * @module
 */

import {
  type CoreFoundation,
  type DarwinLibraries,
  type IOSurfaceLib,
  loadFrameworks,
  loadShim,
  type Shim,
} from "../../ffi/darwin.ts";
import { LibraryLoadError } from "../core/errors.ts";
import type { Backend } from "../contract/backend.ts";
import type { PlaneGeometry } from "../core/geometry.ts";
import { assertAbiReport } from "./abi.ts";
import { DARWIN } from "./structs.ts";
import { type Pointer, type PointerValue, runtime } from "../../ffi/runtime.ts";

/** What {@link DarwinNative.createIOSurface} asks IOSurface for. */
export interface IOSurfaceProperties {
  /** `kIOSurfaceWidth` */
  width: number;
  /** `kIOSurfaceHeight` */
  height: number;
  /** `kIOSurfacePixelFormat` (fourcc) */
  pixelFormat: number;
  /** `kIOSurfaceAllocSize` */
  allocSize: number;
  /**
   * One plane: `kIOSurfaceBytesPerElement` / `kIOSurfaceBytesPerRow`.
   * Several: `kIOSurfacePlaneInfo`, one dictionary per plane.
   */
  planes: readonly PlaneGeometry[];
}

/** The IOSurface properties whose values `IOSurfaceAlignProperty` rounds for surfaceport. */
export type AlignedProperty =
  | "kIOSurfaceBytesPerRow"
  | "kIOSurfacePlaneBytesPerRow"
  | "kIOSurfacePlaneOffset"
  | "kIOSurfaceAllocSize";

/**
 * One task's view of Mach, the bootstrap server, IOSurface, CoreVideo and
 * CoreFoundation. `task` arguments are `taskSelf`.
 */
export interface DarwinNative {
  /** `mach_task_self_` */
  readonly taskSelf: number;
  /** `bootstrap_port` */
  readonly bootstrapPort: number;
  /** `geteuid()` */
  geteuid(): number;
  /** `getpid()` */
  getpid(): number;
  /**
   * `kill(pid, 0)`: 0 if process `pid` exists and this one may signal it,
   * else the errno (`ESRCH`: no such process; `EPERM`: it exists but
   * refuses this process's signals). Sends nothing; `pid` must be > 0.
   */
  probeProcess(pid: number): number;

  /** `mach_msg` on this thread: only with timeout 0, never waits. */
  mach_msg(
    msg: Uint8Array,
    option: number,
    sendSize: number,
    rcvSize: number,
    rcvName: number,
    timeout: number,
    notify: number,
  ): number;
  /**
   * `mach_msg` on a worker thread, for receives with a bounded
   * `MACH_RCV_TIMEOUT`: only the shared port-set peek (`PortWaitSet`) uses
   * it, so a process never has more than one such call at a time.
   */
  mach_msg_wait(
    msg: Uint8Array,
    option: number,
    sendSize: number,
    rcvSize: number,
    rcvName: number,
    timeout: number,
    notify: number,
  ): Promise<number>;
  /** `mach_msg_destroy`: releases every right a received message carries. */
  mach_msg_destroy(msg: Uint8Array): void;
  /**
   * `mach_port_allocate(task, right, &name)` (`MACH_PORT_RIGHT_RECEIVE` or
   * `MACH_PORT_RIGHT_PORT_SET`); the name is written as a u32 into `name`.
   */
  mach_port_allocate(task: number, right: number, name: Uint8Array): number;
  /** `mach_port_deallocate(task, name)`: drops one send / send-once / dead-name reference. */
  mach_port_deallocate(task: number, name: number): number;
  /** `mach_port_mod_refs(task, name, right, delta)` */
  mach_port_mod_refs(task: number, name: number, right: number, delta: number): number;
  /** `mach_port_insert_right(task, name, poly, polyPoly)` */
  mach_port_insert_right(task: number, name: number, poly: number, polyPoly: number): number;
  /** `mach_port_insert_member(task, name, pset)`: adds a receive right to a port set. */
  mach_port_insert_member(task: number, name: number, pset: number): number;
  /** `mach_port_extract_member(task, name, pset)`: takes it out again. */
  mach_port_extract_member(task: number, name: number, pset: number): number;
  /** `mach_port_get_refs(task, name, right, &refs)` */
  mach_port_get_refs(task: number, name: number, right: number, refs: Uint8Array): number;
  /** `mach_port_type(task, name, &type)`: the `MACH_PORT_TYPE_*` bits of `name`, written as a u32. */
  mach_port_type(task: number, name: number, type: Uint8Array): number;
  /** `mach_vm_deallocate(task, address, size)`: frees a region (out-of-line memory received). */
  mach_vm_deallocate(task: number, address: bigint, size: bigint): number;
  /**
   * `mach_port_set_attributes(task, name, flavor, info, count)`: `info` holds
   * `count` `integer_t`s (for `MACH_PORT_LIMITS_INFO`: one, the queue limit).
   */
  mach_port_set_attributes(
    task: number,
    name: number,
    flavor: number,
    info: Uint8Array,
    count: number,
  ): number;
  /** `mach_port_request_notification(task, name, msgid, sync, notify, notifyPoly, &previous)` */
  mach_port_request_notification(
    task: number,
    name: number,
    msgid: number,
    sync: number,
    notify: number,
    notifyPoly: number,
    previous: Uint8Array,
  ): number;
  /** `bootstrap_check_in(bp, name /* char[128] *\/, &sp)`: a receive right. */
  bootstrap_check_in(bp: number, name: Uint8Array, sp: Uint8Array): number;
  /** `bootstrap_look_up(bp, name, &sp)`: a send right. */
  bootstrap_look_up(bp: number, name: Uint8Array, sp: Uint8Array): number;

  /** Composite: builds the property dictionary and calls `IOSurfaceCreate` (+1), or null. */
  createIOSurface(properties: IOSurfaceProperties): PointerValue;
  /**
   * `IOSurfaceAlignProperty(key, value)`: `value` rounded up to the alignment
   * IOSurface requires for the property named `key`.
   */
  IOSurfaceAlignProperty(key: AlignedProperty, value: number): number;
  /** `IOSurfaceCreateMachPort`: a new send right; one use of the surface while it lives. */
  IOSurfaceCreateMachPort(surface: Pointer): number;
  /** `IOSurfaceLookupFromMachPort` (+1, or null); does not consume the right. */
  IOSurfaceLookupFromMachPort(port: number): PointerValue;
  /** `IOSurfaceGetID` */
  IOSurfaceGetID(surface: Pointer): number;
  /** `IOSurfaceIsInUse` */
  IOSurfaceIsInUse(surface: Pointer): boolean;
  /** `IOSurfaceIncrementUseCount` */
  IOSurfaceIncrementUseCount(surface: Pointer): void;
  /** `IOSurfaceDecrementUseCount` */
  IOSurfaceDecrementUseCount(surface: Pointer): void;
  /** `IOSurfaceLock(surface, options, NULL)` */
  IOSurfaceLock(surface: Pointer, options: number): number;
  /** `IOSurfaceUnlock(surface, options, NULL)` */
  IOSurfaceUnlock(surface: Pointer, options: number): number;
  /** `IOSurfaceGetAllocSize` */
  IOSurfaceGetAllocSize(surface: Pointer): number;
  /** `IOSurfaceGetWidth` */
  IOSurfaceGetWidth(surface: Pointer): number;
  /** `IOSurfaceGetHeight` */
  IOSurfaceGetHeight(surface: Pointer): number;
  /** `IOSurfaceGetBytesPerElement` */
  IOSurfaceGetBytesPerElement(surface: Pointer): number;
  /** `IOSurfaceGetBytesPerRow` */
  IOSurfaceGetBytesPerRow(surface: Pointer): number;
  /** `IOSurfaceGetPlaneCount` (0 for a non-planar surface) */
  IOSurfaceGetPlaneCount(surface: Pointer): number;
  /** `IOSurfaceGetPixelFormat` */
  IOSurfaceGetPixelFormat(surface: Pointer): number;
  /** `IOSurfaceGetBaseAddress` */
  IOSurfaceGetBaseAddress(surface: Pointer): PointerValue;
  /** `IOSurfaceGetBaseAddressOfPlane` */
  IOSurfaceGetBaseAddressOfPlane(surface: Pointer, plane: number): PointerValue;
  /** `IOSurfaceGetWidthOfPlane` */
  IOSurfaceGetWidthOfPlane(surface: Pointer, plane: number): number;
  /** `IOSurfaceGetHeightOfPlane` */
  IOSurfaceGetHeightOfPlane(surface: Pointer, plane: number): number;
  /** `IOSurfaceGetBytesPerElementOfPlane` */
  IOSurfaceGetBytesPerElementOfPlane(surface: Pointer, plane: number): number;
  /** `IOSurfaceGetBytesPerRowOfPlane` */
  IOSurfaceGetBytesPerRowOfPlane(surface: Pointer, plane: number): number;

  /** `CFRetain` */
  CFRetain(object: Pointer): void;
  /** `CFRelease` */
  CFRelease(object: Pointer): void;

  /** `CVPixelBufferCreateWithIOSurface(NULL, surface, NULL, &out)`; the pointer is written into `out`. */
  CVPixelBufferCreateWithIOSurface(surface: Pointer, out: Uint8Array): number;
  /** Composite: `CVPixelBufferCreate` with an (empty) `kCVPixelBufferIOSurfacePropertiesKey`: IOSurface-backed. */
  createPixelBuffer(width: number, height: number, pixelFormat: number, out: Uint8Array): number;
  /** `CVPixelBufferGetIOSurface` (not retained; null if not IOSurface-backed) */
  CVPixelBufferGetIOSurface(pixelBuffer: Pointer): PointerValue;
  /** `CVPixelBufferGetWidth` */
  CVPixelBufferGetWidth(pixelBuffer: Pointer): number;
  /** `CVPixelBufferGetHeight` */
  CVPixelBufferGetHeight(pixelBuffer: Pointer): number;
  /** `CVPixelBufferGetPixelFormatType` */
  CVPixelBufferGetPixelFormatType(pixelBuffer: Pointer): number;
  /** `CVPixelBufferLockBaseAddress` (flags are `CVOptionFlags`, a u64) */
  CVPixelBufferLockBaseAddress(pixelBuffer: Pointer, flags: bigint): number;
  /** `CVPixelBufferUnlockBaseAddress` */
  CVPixelBufferUnlockBaseAddress(pixelBuffer: Pointer, flags: bigint): number;
}

/** The native interface behind a backend, if it is the macOS one (real or fake). */
export function darwinNativeOf(backend: Backend): DarwinNative | undefined {
  return (backend as { darwinNative?: DarwinNative }).darwinNative;
}

/** The backend a test runs the library on (set through `setBackendForTesting`), if any. */
let testBackend: Backend | undefined;

/**
 * Test hook, called by `src/platform.ts`'s `setBackendForTesting`: the
 * macOS-only entry points (`PixelBuffer`, the port primitives) then use
 * `backend`'s native calls, or none if it is not a macOS backend.
 */
export function setTestBackend(backend: Backend | undefined): void {
  testBackend = backend;
}

/**
 * The native calls of the running macOS backend, for the macOS-only public
 * entry points: the test backend's if one is set, else the real frameworks
 * on macOS, else `undefined`. (Found here rather than through
 * `src/platform.ts`, which imports this backend: no import circle.)
 */
export function activeDarwinNative(): DarwinNative | undefined {
  if (testBackend) return darwinNativeOf(testBackend);
  return runtime.os === "darwin" ? realDarwinNative() : undefined;
}

// --- the real implementation ----------------------------------------------------

/** The shim's ABI report (`sp_abi_report()`), parsed: for `assertAbiReport` and `doctor`. */
export function readShimReport(shim: Shim): Record<string, unknown> {
  const pointer = shim.sp_abi_report();
  if (pointer === null) throw new LibraryLoadError("sp_abi_report() returned NULL");
  return JSON.parse(runtime.readCString(pointer));
}

function derefKey(address: PointerValue, name: string): Pointer {
  const value = address === null ? null : runtime.readPointer(address);
  if (value === null) throw new LibraryLoadError(`the framework global ${name} is NULL`);
  return value;
}

/** Builds CoreFoundation objects and releases every one of them at the end. */
class CFScope {
  readonly #cf: CoreFoundation;
  readonly #owned: Pointer[] = [];

  constructor(cf: CoreFoundation) {
    this.#cf = cf;
  }

  #keep(object: PointerValue, what: string): Pointer {
    if (object === null) throw new LibraryLoadError(`${what} returned NULL (out of memory?)`);
    this.#owned.push(object);
    return object;
  }

  number(value: number): Pointer {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigInt64(0, BigInt(value), true);
    return this.#keep(
      this.#cf.CFNumberCreate(null, BigInt(DARWIN.kCFNumberSInt64Type), bytes),
      "CFNumberCreate",
    );
  }

  dictionary(): Pointer {
    return this.#keep(
      this.#cf.CFDictionaryCreateMutable(
        null,
        0n,
        this.#cf.kCFTypeDictionaryKeyCallBacks,
        this.#cf.kCFTypeDictionaryValueCallBacks,
      ),
      "CFDictionaryCreateMutable",
    );
  }

  array(): Pointer {
    return this.#keep(
      this.#cf.CFArrayCreateMutable(null, 0n, this.#cf.kCFTypeArrayCallBacks),
      "CFArrayCreateMutable",
    );
  }

  /** Releases everything created here (containers retain what they hold). */
  release(): void {
    for (const object of this.#owned.splice(0)) this.#cf.CFRelease(object);
  }
}

type KeyName =
  | "kIOSurfaceWidth"
  | "kIOSurfaceHeight"
  | "kIOSurfaceBytesPerElement"
  | "kIOSurfaceBytesPerRow"
  | "kIOSurfacePixelFormat"
  | "kIOSurfaceAllocSize"
  | "kIOSurfacePlaneInfo"
  | "kIOSurfacePlaneWidth"
  | "kIOSurfacePlaneHeight"
  | "kIOSurfacePlaneBytesPerElement"
  | "kIOSurfacePlaneBytesPerRow"
  | "kIOSurfacePlaneOffset"
  | "kIOSurfacePlaneSize";

/** Wraps loaded libraries as a {@link DarwinNative}. Exported for the macOS end-to-end tests. */
export function wrapLibraries(libs: DarwinLibraries): DarwinNative {
  const { libSystem: sys, coreFoundation: cf, ioSurface: io, coreVideo: cv } = libs;
  const keys = new Map<KeyName, Pointer>();
  const key = (name: KeyName) => {
    let value = keys.get(name);
    if (!value) keys.set(name, value = derefKey((io as IOSurfaceLib)[name], name));
    return value;
  };
  const n = (value: number | bigint) => Number(value);
  const set = (dict: Pointer, k: Pointer, v: Pointer) => cf.CFDictionarySetValue(dict, k, v);
  let errnoView: Int32Array | undefined; // this thread's errno, made at first use
  return {
    taskSelf: sys.mach_task_self_,
    bootstrapPort: sys.bootstrap_port,
    geteuid: () => sys.geteuid(),
    getpid: () => sys.getpid(),
    probeProcess(pid) {
      if (!(pid > 0 && pid <= 0x7fffffff)) throw new RangeError(`probeProcess(${pid}): not a pid`);
      if (sys.kill(pid, 0) === 0) return 0;
      // Read right after the call, on this thread (errno is thread-local).
      errnoView ??= new Int32Array(runtime.arrayBufferAt(sys.__error()!, 4));
      return errnoView[0];
    },
    mach_msg: (msg, option, sendSize, rcvSize, rcvName, timeout, notify) =>
      sys.mach_msg(msg, option | 0, sendSize, rcvSize, rcvName, timeout, notify),
    mach_msg_wait: (msg, option, sendSize, rcvSize, rcvName, timeout, notify) =>
      sys.mach_msg_wait(msg, option | 0, sendSize, rcvSize, rcvName, timeout, notify),
    mach_msg_destroy: (msg) => sys.mach_msg_destroy(msg),
    mach_port_allocate: (task, right, name) => sys.mach_port_allocate(task, right, name),
    mach_port_deallocate: (task, name) => sys.mach_port_deallocate(task, name),
    mach_port_mod_refs: (task, name, right, delta) =>
      sys.mach_port_mod_refs(task, name, right, delta),
    mach_port_insert_right: (task, name, poly, polyPoly) =>
      sys.mach_port_insert_right(task, name, poly, polyPoly),
    mach_port_insert_member: (task, name, pset) => sys.mach_port_insert_member(task, name, pset),
    mach_port_extract_member: (task, name, pset) => sys.mach_port_extract_member(task, name, pset),
    mach_port_get_refs: (task, name, right, refs) =>
      sys.mach_port_get_refs(task, name, right, refs),
    mach_port_type: (task, name, type) => sys.mach_port_type(task, name, type),
    mach_vm_deallocate: (task, address, size) => sys.mach_vm_deallocate(task, address, size),
    mach_port_set_attributes: (task, name, flavor, info, count) =>
      sys.mach_port_set_attributes(task, name, flavor, info, count),
    mach_port_request_notification: (task, name, msgid, sync, notify, notifyPoly, previous) =>
      sys.mach_port_request_notification(task, name, msgid, sync, notify, notifyPoly, previous),
    bootstrap_check_in: (bp, name, sp) => sys.bootstrap_check_in(bp, name, sp),
    bootstrap_look_up: (bp, name, sp) => sys.bootstrap_look_up(bp, name, sp),

    createIOSurface(properties) {
      const scope = new CFScope(cf);
      try {
        const dict = scope.dictionary();
        set(dict, key("kIOSurfaceWidth"), scope.number(properties.width));
        set(dict, key("kIOSurfaceHeight"), scope.number(properties.height));
        set(dict, key("kIOSurfacePixelFormat"), scope.number(properties.pixelFormat));
        set(dict, key("kIOSurfaceAllocSize"), scope.number(properties.allocSize));
        if (properties.planes.length === 1) {
          const plane = properties.planes[0];
          set(dict, key("kIOSurfaceBytesPerElement"), scope.number(plane.bytesPerElement));
          set(dict, key("kIOSurfaceBytesPerRow"), scope.number(plane.bytesPerRow));
        } else {
          const planes = scope.array();
          for (const plane of properties.planes) {
            const info = scope.dictionary();
            set(info, key("kIOSurfacePlaneWidth"), scope.number(plane.width));
            set(info, key("kIOSurfacePlaneHeight"), scope.number(plane.height));
            set(info, key("kIOSurfacePlaneBytesPerElement"), scope.number(plane.bytesPerElement));
            set(info, key("kIOSurfacePlaneBytesPerRow"), scope.number(plane.bytesPerRow));
            set(info, key("kIOSurfacePlaneOffset"), scope.number(plane.offset));
            set(info, key("kIOSurfacePlaneSize"), scope.number(plane.bytesPerRow * plane.height));
            cf.CFArrayAppendValue(planes, info);
          }
          set(dict, key("kIOSurfacePlaneInfo"), planes);
        }
        return io.IOSurfaceCreate(dict);
      } finally {
        scope.release();
      }
    },
    IOSurfaceAlignProperty: (name, value) => n(io.IOSurfaceAlignProperty(key(name), BigInt(value))),
    IOSurfaceCreateMachPort: (s) => io.IOSurfaceCreateMachPort(s),
    IOSurfaceLookupFromMachPort: (port) => io.IOSurfaceLookupFromMachPort(port),
    IOSurfaceGetID: (s) => io.IOSurfaceGetID(s),
    IOSurfaceIsInUse: (s) => io.IOSurfaceIsInUse(s),
    IOSurfaceIncrementUseCount: (s) => io.IOSurfaceIncrementUseCount(s),
    IOSurfaceDecrementUseCount: (s) => io.IOSurfaceDecrementUseCount(s),
    IOSurfaceLock: (s, options) => io.IOSurfaceLock(s, options, null),
    IOSurfaceUnlock: (s, options) => io.IOSurfaceUnlock(s, options, null),
    IOSurfaceGetAllocSize: (s) => n(io.IOSurfaceGetAllocSize(s)),
    IOSurfaceGetWidth: (s) => n(io.IOSurfaceGetWidth(s)),
    IOSurfaceGetHeight: (s) => n(io.IOSurfaceGetHeight(s)),
    IOSurfaceGetBytesPerElement: (s) => n(io.IOSurfaceGetBytesPerElement(s)),
    IOSurfaceGetBytesPerRow: (s) => n(io.IOSurfaceGetBytesPerRow(s)),
    IOSurfaceGetPlaneCount: (s) => n(io.IOSurfaceGetPlaneCount(s)),
    IOSurfaceGetPixelFormat: (s) => io.IOSurfaceGetPixelFormat(s),
    IOSurfaceGetBaseAddress: (s) => io.IOSurfaceGetBaseAddress(s),
    IOSurfaceGetBaseAddressOfPlane: (s, p) => io.IOSurfaceGetBaseAddressOfPlane(s, BigInt(p)),
    IOSurfaceGetWidthOfPlane: (s, p) => n(io.IOSurfaceGetWidthOfPlane(s, BigInt(p))),
    IOSurfaceGetHeightOfPlane: (s, p) => n(io.IOSurfaceGetHeightOfPlane(s, BigInt(p))),
    IOSurfaceGetBytesPerElementOfPlane: (s, p) =>
      n(io.IOSurfaceGetBytesPerElementOfPlane(s, BigInt(p))),
    IOSurfaceGetBytesPerRowOfPlane: (s, p) => n(io.IOSurfaceGetBytesPerRowOfPlane(s, BigInt(p))),
    CFRetain: (object) => void cf.CFRetain(object),
    CFRelease: (object) => cf.CFRelease(object),
    CVPixelBufferCreateWithIOSurface: (s, out) =>
      cv.CVPixelBufferCreateWithIOSurface(null, s, null, out),
    createPixelBuffer(width, height, pixelFormat, out) {
      const scope = new CFScope(cf);
      try {
        const attributes = scope.dictionary();
        set(
          attributes,
          derefKey(cv.kCVPixelBufferIOSurfacePropertiesKey, "kCVPixelBufferIOSurfacePropertiesKey"),
          scope.dictionary(),
        );
        return cv.CVPixelBufferCreate(
          null,
          BigInt(width),
          BigInt(height),
          pixelFormat,
          attributes,
          out,
        );
      } finally {
        scope.release();
      }
    },
    CVPixelBufferGetIOSurface: (pb) => cv.CVPixelBufferGetIOSurface(pb),
    CVPixelBufferGetWidth: (pb) => n(cv.CVPixelBufferGetWidth(pb)),
    CVPixelBufferGetHeight: (pb) => n(cv.CVPixelBufferGetHeight(pb)),
    CVPixelBufferGetPixelFormatType: (pb) => cv.CVPixelBufferGetPixelFormatType(pb),
    CVPixelBufferLockBaseAddress: (pb, flags) => cv.CVPixelBufferLockBaseAddress(pb, flags),
    CVPixelBufferUnlockBaseAddress: (pb, flags) => cv.CVPixelBufferUnlockBaseAddress(pb, flags),
  };
}

let real: DarwinNative | undefined;

function finishLoading(shim: Shim): DarwinNative {
  const frameworks = loadFrameworks();
  assertAbiReport(readShimReport(shim)); // refuses to run on any layout difference
  real = wrapLibraries({ ...frameworks, shim });
  return real;
}

/**
 * The real native calls (macOS only), loaded on first use: the frameworks,
 * then the shim (`SURFACEPORT_SHIM_PATH`, `native/build/`, the package's
 * `native/prebuilt/`, or the copy in the module graph: see
 * `ffi/darwin_shim.ts`), whose ABI report must match the TypeScript's tables
 * (else `AbiMismatchError`). Synchronous on every path; throws
 * `LibraryLoadError` saying what to do when no shim can be opened.
 */
export function realDarwinNative(): DarwinNative {
  if (real) return real;
  return finishLoading(loadShim());
}

/** {@link realDarwinNative}, as a promise (for `prepareNative()` and `connect()`). */
export function loadRealDarwinNative(): Promise<DarwinNative> {
  try {
    return Promise.resolve(realDarwinNative());
  } catch (error) {
    return Promise.reject(error);
  }
}
