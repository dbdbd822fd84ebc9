/**
 * TEST DOUBLE at the symbol level: the FFI tables of `ffi/darwin.ts`
 * (libSystem, CoreFoundation, IOSurface, CoreVideo, the shim) as plain
 * functions over one {@link FakeTask}, so that `wrapLibraries` in
 * `src/darwin/native.ts` — the property dictionaries, key look-ups through
 * the framework globals, number conversions — runs on Linux exactly as it
 * does over the real symbols the runtime seam (`ffi/runtime.ts`) opens.
 *
 * What it models of CoreFoundation and IOSurface:
 *
 * - `kIOSurface*` and `kCVPixelBuffer*` keys are `const CFStringRef`
 *   globals: the static is the address of real memory holding the string's
 *   pointer, which `wrapLibraries` dereferences (as on macOS).
 * - `CFNumberCreate` reads the value from the caller's buffer as the
 *   `CFNumberType` says (`kCFNumberSInt32Type` 4 bytes, `kCFNumberSInt64Type`
 *   8); dictionaries and arrays made with the `kCFType` callbacks retain
 *   their keys and values and release them when freed; any other callbacks
 *   are a violation. Every object is counted by `assertNoLeaks`.
 * - `IOSurfaceCreate` reads the property dictionary as IOSurface does:
 *   width, height, pixel format, allocation size, and either bytes per
 *   element / row or `kIOSurfacePlaneInfo` (one dictionary per plane); an
 *   unknown key, a value that is not a number, a row narrower than its
 *   pixels or a plane outside the allocation is refused (NULL).
 * - `CVPixelBufferCreate` must be given `kCVPixelBufferIOSurfacePropertiesKey`
 *   (else the buffer would not be IOSurface-backed).
 *
 * @module
 */

import type {
  CoreFoundation,
  CoreVideo,
  DarwinLibraries,
  IOSurfaceLib,
  LibSystem,
  Shim,
} from "../../ffi/darwin.ts";
import { EXPECTED_ABI } from "../../src/darwin/abi.ts";
import {
  type DarwinNative,
  type IOSurfaceProperties,
  wrapLibraries,
} from "../../src/darwin/native.ts";
import type { PlaneGeometry } from "../../src/core/geometry.ts";
import { type Pointer, type PointerValue, runtime } from "../../ffi/runtime.ts";
import { type CFObject, D } from "./model.ts";
import type { FakeMachKernel } from "./kernel.ts";
import type { FakeTask } from "./task_surfaces.ts";

const SURFACE_KEYS = [
  "kIOSurfaceWidth",
  "kIOSurfaceHeight",
  "kIOSurfaceBytesPerElement",
  "kIOSurfaceBytesPerRow",
  "kIOSurfacePixelFormat",
  "kIOSurfaceAllocSize",
  "kIOSurfacePlaneInfo",
  "kIOSurfacePlaneWidth",
  "kIOSurfacePlaneHeight",
  "kIOSurfacePlaneBytesPerElement",
  "kIOSurfacePlaneBytesPerRow",
  "kIOSurfacePlaneOffset",
  "kIOSurfacePlaneSize",
] as const;
type SurfaceKey = typeof SURFACE_KEYS[number];
const CALLBACKS = [
  "kCFTypeDictionaryKeyCallBacks",
  "kCFTypeDictionaryValueCallBacks",
  "kCFTypeArrayCallBacks",
] as const;
const PIXEL_BUFFER_KEY = "kCVPixelBufferIOSurfacePropertiesKey";

/** The CF constants of one kernel: each name's object and the global (an address holding it). */
interface Constants {
  /** Name → the object's pointer value (a CFString, or a callback struct's address). */
  value: Map<string, bigint>;
  /** Name → the global's address (for a `CFStringRef` global: memory holding the string's pointer). */
  global: Map<string, Pointer>;
  /** Keeps the globals' memory alive. */
  memory: BigUint64Array;
}

const constantsOf = new WeakMap<FakeMachKernel, Constants>();

/** The kernel-wide immortal constants, made once per kernel. */
function constants(kernel: FakeMachKernel): Constants {
  let c = constantsOf.get(kernel);
  if (c) return c;
  const names = [...SURFACE_KEYS, PIXEL_BUFFER_KEY, ...CALLBACKS];
  const memory = new BigUint64Array(names.length * 2);
  c = { value: new Map(), global: new Map(), memory };
  const base = runtime.addressOf(memory);
  names.forEach((name, i) => {
    // A callback struct: its address is the value; a CFString global: memory holding its pointer.
    const struct = base + BigInt(16 * i + 8);
    const isCallbacks = (CALLBACKS as readonly string[]).includes(name);
    const value = isCallbacks ? struct : 0x5f0000000000n + BigInt(i) * 0x40n;
    memory[2 * i] = value;
    kernel.constants.set(value, name);
    c!.value.set(name, value);
    c!.global.set(name, runtime.pointerFrom(isCallbacks ? struct : base + BigInt(16 * i))!);
  });
  constantsOf.set(kernel, c);
  return c;
}

/** The symbol tables of `ffi/darwin.ts` over `task`. */
export function fakeLibraries(task: FakeTask): DarwinLibraries {
  const kernel = task.kernel;
  const c = constants(kernel);
  const bytes = (buffer: AllowSharedBufferSource | null) => buffer as Uint8Array;
  const object = (pointer: PointerValue) => runtime.pointerValue(pointer);
  const violation = (message: string) => kernel.violation(`task ${task.pid}: ${message}`);
  const cf = (call: string, pointer: PointerValue, type: "number" | "dictionary" | "array") => {
    const found = kernel.objects.get(object(pointer));
    if (!found || found.kind !== "cf" || found.type !== type || found.task !== task) {
      violation(`${call}(0x${object(pointer).toString(16)}): not a live CF ${type} of this task`);
      return undefined;
    }
    return found;
  };
  const newCF = (type: "number" | "dictionary" | "array", value = 0n) =>
    kernel.newObject({
      kind: "cf",
      task,
      refs: 1,
      type,
      value,
      entries: new Map(),
      items: [],
    } as CFObject);
  const retain = (value: bigint) => task.CFRetain(runtime.pointerFrom(value)!);
  const surfaceArg = (pointer: PointerValue) => pointer as Pointer;

  const libSystem: LibSystem = {
    mach_task_self_: task.taskSelf,
    bootstrap_port: task.bootstrapPort,
    mach_msg: (msg, option, send, rcv, name, timeout, notify) =>
      task.mach_msg(bytes(msg), option, send, rcv, name, timeout, notify),
    mach_msg_wait: (msg, option, send, rcv, name, timeout, notify) =>
      task.mach_msg_wait(bytes(msg), option, send, rcv, name, timeout, notify),
    mach_msg_destroy: (msg) => task.mach_msg_destroy(bytes(msg)),
    mach_port_allocate: (t, right, name) => task.mach_port_allocate(t, right, bytes(name)),
    mach_port_deallocate: (t, name) => task.mach_port_deallocate(t, name),
    mach_port_mod_refs: (t, name, right, delta) => task.mach_port_mod_refs(t, name, right, delta),
    mach_port_insert_right: (t, name, poly, polyPoly) =>
      task.mach_port_insert_right(t, name, poly, polyPoly),
    mach_port_insert_member: (t, name, set) => task.mach_port_insert_member(t, name, set),
    mach_port_extract_member: (t, name, set) => task.mach_port_extract_member(t, name, set),
    mach_port_get_refs: (t, name, right, refs) =>
      task.mach_port_get_refs(t, name, right, bytes(refs)),
    mach_port_type: (t, name, type) => task.mach_port_type(t, name, bytes(type)),
    mach_vm_deallocate: (t, address, size) =>
      task.mach_vm_deallocate(t, BigInt(address), BigInt(size)),
    mach_port_set_attributes: (t, name, flavor, info, count) =>
      task.mach_port_set_attributes(t, name, flavor, bytes(info), count),
    mach_port_request_notification: (t, name, id, sync, notify, poly, previous) =>
      task.mach_port_request_notification(t, name, id, sync, notify, poly, bytes(previous)),
    bootstrap_check_in: (bp, name, sp) => task.bootstrap_check_in(bp, bytes(name), bytes(sp)),
    bootstrap_look_up: (bp, name, sp) => task.bootstrap_look_up(bp, bytes(name), bytes(sp)),
    bootstrap_strerror: () => null,
    mach_error_string: () => null,
    geteuid: () => task.uid,
    getegid: () => task.gid,
    getpid: () => task.pid,
    kill: (pid, sig) => task.sysKill(pid, sig),
    __error: () => runtime.pointerFrom(runtime.addressOf(task.errno)),
  };

  const coreFoundation: CoreFoundation = {
    CFRetain: (p) => {
      task.CFRetain(p as Pointer);
      return p;
    },
    CFRelease: (p) => task.CFRelease(p as Pointer),
    CFGetRetainCount: (p) => BigInt(kernel.objects.get(object(p))?.refs ?? 0),
    CFNumberCreate(allocator, type, value) {
      if (allocator !== null) violation("CFNumberCreate with an allocator");
      const view = new DataView(bytes(value).buffer, bytes(value).byteOffset);
      const n = Number(type);
      if (n === D.kCFNumberSInt64Type) return newCF("number", view.getBigInt64(0, true));
      if (n === D.kCFNumberSInt32Type) return newCF("number", BigInt(view.getInt32(0, true)));
      violation(`CFNumberCreate with CFNumberType ${n}`);
      return null;
    },
    CFDictionaryCreateMutable(_allocator, _capacity, keyCallBacks, valueCallBacks) {
      if (
        object(keyCallBacks) !== c.value.get("kCFTypeDictionaryKeyCallBacks") ||
        object(valueCallBacks) !== c.value.get("kCFTypeDictionaryValueCallBacks")
      ) {
        violation("CFDictionaryCreateMutable without the kCFType callbacks (it would not retain)");
      }
      return newCF("dictionary");
    },
    CFDictionarySetValue(dict, key, value) {
      const d = cf("CFDictionarySetValue", dict, "dictionary");
      if (!d) return;
      const k = object(key), v = object(value);
      retain(k);
      retain(v);
      const old = d.kind === "cf" ? d.entries.get(k) : undefined;
      if (d.kind === "cf") d.entries.set(k, v);
      if (old !== undefined) {
        task.CFRelease(runtime.pointerFrom(old)!);
        task.CFRelease(runtime.pointerFrom(k)!);
      }
    },
    CFArrayCreateMutable(_allocator, _capacity, callBacks) {
      if (object(callBacks) !== c.value.get("kCFTypeArrayCallBacks")) {
        violation("CFArrayCreateMutable without kCFTypeArrayCallBacks (it would not retain)");
      }
      return newCF("array");
    },
    CFArrayAppendValue(array, value) {
      const a = cf("CFArrayAppendValue", array, "array");
      if (!a || a.kind !== "cf") return;
      retain(object(value));
      a.items.push(object(value));
    },
    CFStringCreateWithCString: () => {
      violation("CFStringCreateWithCString: surfaceport uses the framework's key globals");
      return null;
    },
    kCFTypeDictionaryKeyCallBacks: c.global.get("kCFTypeDictionaryKeyCallBacks")!,
    kCFTypeDictionaryValueCallBacks: c.global.get("kCFTypeDictionaryValueCallBacks")!,
    kCFTypeArrayCallBacks: c.global.get("kCFTypeArrayCallBacks")!,
  };

  /** The number under `key` in the dictionary object `dict`, or undefined. */
  const numberAt = (dict: CFObject & { kind: "cf" }, key: SurfaceKey): number | undefined => {
    const value = dict.entries.get(c.value.get(key)!);
    if (value === undefined) return undefined;
    const number = kernel.objects.get(value);
    if (!number || number.kind !== "cf" || number.type !== "number") {
      violation(`IOSurfaceCreate: ${key} is not a CFNumber`);
      return undefined;
    }
    return Number(number.value);
  };
  const keyName = (value: bigint) => kernel.constants.get(value);

  /** IOSurfaceCreate's reading of its property dictionary; undefined where IOSurface refuses. */
  const surfaceProperties = (pointer: PointerValue): IOSurfaceProperties | undefined => {
    const dict = cf("IOSurfaceCreate", pointer, "dictionary");
    if (!dict || dict.kind !== "cf") return undefined;
    const top: readonly string[] = [
      "kIOSurfaceWidth",
      "kIOSurfaceHeight",
      "kIOSurfacePixelFormat",
      "kIOSurfaceAllocSize",
      "kIOSurfaceBytesPerElement",
      "kIOSurfaceBytesPerRow",
      "kIOSurfacePlaneInfo",
    ];
    for (const key of dict.entries.keys()) {
      if (!top.includes(keyName(key) ?? "")) {
        violation(`IOSurfaceCreate: unexpected key ${keyName(key) ?? key.toString(16)}`);
      }
    }
    const width = numberAt(dict, "kIOSurfaceWidth");
    const height = numberAt(dict, "kIOSurfaceHeight");
    const pixelFormat = numberAt(dict, "kIOSurfacePixelFormat");
    const allocSize = numberAt(dict, "kIOSurfaceAllocSize") ?? 0;
    if (!width || !height || pixelFormat === undefined) return undefined;
    const planes: PlaneGeometry[] = [];
    const info = dict.entries.get(c.value.get("kIOSurfacePlaneInfo")!);
    if (info === undefined) {
      const bytesPerElement = numberAt(dict, "kIOSurfaceBytesPerElement") ?? 1;
      const bytesPerRow = numberAt(dict, "kIOSurfaceBytesPerRow") ?? width * bytesPerElement;
      planes.push({ width, height, bytesPerElement, bytesPerRow, offset: 0 });
    } else {
      const array = kernel.objects.get(info);
      if (!array || array.kind !== "cf" || array.type !== "array") return undefined;
      for (const item of array.items) {
        const plane = kernel.objects.get(item);
        if (!plane || plane.kind !== "cf" || plane.type !== "dictionary") return undefined;
        const w = numberAt(plane, "kIOSurfacePlaneWidth");
        const h = numberAt(plane, "kIOSurfacePlaneHeight");
        const bpe = numberAt(plane, "kIOSurfacePlaneBytesPerElement");
        const bpr = numberAt(plane, "kIOSurfacePlaneBytesPerRow");
        const offset = numberAt(plane, "kIOSurfacePlaneOffset");
        const size = numberAt(plane, "kIOSurfacePlaneSize");
        if (!w || !h || !bpe || !bpr || offset === undefined || size === undefined) {
          return undefined;
        }
        if (size < bpr * h || offset + size > allocSize) return undefined;
        planes.push({ width: w, height: h, bytesPerElement: bpe, bytesPerRow: bpr, offset });
      }
    }
    // IOSurface refuses a row narrower than its pixels.
    if (planes.some((p) => p.bytesPerRow < p.width * p.bytesPerElement)) return undefined;
    return { width, height, pixelFormat, allocSize, planes };
  };

  const s = surfaceArg;
  const ioSurface: IOSurfaceLib = {
    IOSurfaceCreate(properties) {
      const parsed = surfaceProperties(properties);
      return parsed ? task.createIOSurface(parsed) : null;
    },
    IOSurfaceCreateMachPort: (p) => task.IOSurfaceCreateMachPort(s(p)),
    IOSurfaceLookupFromMachPort: (port) => task.IOSurfaceLookupFromMachPort(port),
    IOSurfaceGetID: (p) => task.IOSurfaceGetID(s(p)),
    IOSurfaceIsInUse: (p) => task.IOSurfaceIsInUse(s(p)),
    IOSurfaceIncrementUseCount: (p) => task.IOSurfaceIncrementUseCount(s(p)),
    IOSurfaceDecrementUseCount: (p) => task.IOSurfaceDecrementUseCount(s(p)),
    IOSurfaceLock: (p, options, seed) => {
      if (seed !== null) violation("IOSurfaceLock with a seed pointer (surfaceport passes NULL)");
      return task.IOSurfaceLock(s(p), options);
    },
    IOSurfaceUnlock: (p, options, seed) => {
      if (seed !== null) violation("IOSurfaceUnlock with a seed pointer (surfaceport passes NULL)");
      return task.IOSurfaceUnlock(s(p), options);
    },
    IOSurfaceGetAllocSize: (p) => BigInt(task.IOSurfaceGetAllocSize(s(p))),
    IOSurfaceGetWidth: (p) => BigInt(task.IOSurfaceGetWidth(s(p))),
    IOSurfaceGetHeight: (p) => BigInt(task.IOSurfaceGetHeight(s(p))),
    IOSurfaceGetBytesPerElement: (p) => BigInt(task.IOSurfaceGetBytesPerElement(s(p))),
    IOSurfaceGetBytesPerRow: (p) => BigInt(task.IOSurfaceGetBytesPerRow(s(p))),
    IOSurfaceAlignProperty(key, value) {
      const name = keyName(object(key));
      if (!name) violation(`IOSurfaceAlignProperty with a key that is not a kIOSurface* global`);
      return BigInt(task.IOSurfaceAlignProperty(name ?? "", Number(value)));
    },
    IOSurfaceGetPlaneCount: (p) => BigInt(task.IOSurfaceGetPlaneCount(s(p))),
    IOSurfaceGetBaseAddress: (p) => task.IOSurfaceGetBaseAddress(s(p)),
    IOSurfaceGetBaseAddressOfPlane: (p, i) => task.IOSurfaceGetBaseAddressOfPlane(s(p), Number(i)),
    IOSurfaceGetWidthOfPlane: (p, i) => BigInt(task.IOSurfaceGetWidthOfPlane(s(p), Number(i))),
    IOSurfaceGetHeightOfPlane: (p, i) => BigInt(task.IOSurfaceGetHeightOfPlane(s(p), Number(i))),
    IOSurfaceGetBytesPerElementOfPlane: (p, i) =>
      BigInt(task.IOSurfaceGetBytesPerElementOfPlane(s(p), Number(i))),
    IOSurfaceGetBytesPerRowOfPlane: (p, i) =>
      BigInt(task.IOSurfaceGetBytesPerRowOfPlane(s(p), Number(i))),
    IOSurfaceGetPixelFormat: (p) => task.IOSurfaceGetPixelFormat(s(p)),
    IOSurfaceGetSeed: (p) => task.IOSurfaceGetSeed(s(p)),
    ...(Object.fromEntries(SURFACE_KEYS.map((key) => [key, c.global.get(key)!])) as Record<
      SurfaceKey,
      Pointer
    >),
  };

  const coreVideo: CoreVideo = {
    CVPixelBufferCreate(allocator, width, height, pixelFormat, attributes, out) {
      if (allocator !== null) violation("CVPixelBufferCreate with an allocator");
      const dict = cf("CVPixelBufferCreate", attributes, "dictionary");
      const surfaceProperties = dict?.kind === "cf"
        ? dict.entries.get(c.value.get(PIXEL_BUFFER_KEY)!)
        : undefined;
      if (surfaceProperties === undefined) {
        violation("CVPixelBufferCreate without kCVPixelBufferIOSurfacePropertiesKey: no IOSurface");
        return -6682; // kCVReturnInvalidPixelBufferAttributes
      }
      return task.createPixelBuffer(Number(width), Number(height), pixelFormat, bytes(out));
    },
    CVPixelBufferCreateWithIOSurface(allocator, surface, attributes, out) {
      if (allocator !== null || attributes !== null) {
        violation("CVPixelBufferCreateWithIOSurface with an allocator or attributes");
      }
      return task.CVPixelBufferCreateWithIOSurface(s(surface), bytes(out));
    },
    CVPixelBufferGetIOSurface: (p) => task.CVPixelBufferGetIOSurface(s(p)),
    CVPixelBufferLockBaseAddress: (p, flags) =>
      task.CVPixelBufferLockBaseAddress(s(p), BigInt(flags)),
    CVPixelBufferUnlockBaseAddress: (p, flags) =>
      task.CVPixelBufferUnlockBaseAddress(s(p), BigInt(flags)),
    CVPixelBufferGetWidth: (p) => BigInt(task.CVPixelBufferGetWidth(s(p))),
    CVPixelBufferGetHeight: (p) => BigInt(task.CVPixelBufferGetHeight(s(p))),
    CVPixelBufferGetPixelFormatType: (p) => task.CVPixelBufferGetPixelFormatType(s(p)),
    kCVPixelBufferIOSurfacePropertiesKey: c.global.get(PIXEL_BUFFER_KEY)!,
  };

  const report = new TextEncoder().encode(JSON.stringify(EXPECTED_ABI) + "\0");
  const shim: Shim = { sp_abi_report: () => runtime.pointerFrom(runtime.addressOf(report)) };

  return { libSystem, coreFoundation, ioSurface, coreVideo, shim };
}

/** `task` seen through the real glue: `wrapLibraries` over {@link fakeLibraries}. */
export function glueNative(task: FakeTask): DarwinNative {
  return wrapLibraries(fakeLibraries(task));
}
