/**
 * The macOS symbol tables (libSystem, CoreFoundation, IOSurface, CoreVideo
 * and the surfaceport shim) and their loaders. This and `ffi/linux.ts` are
 * the only files that open native libraries (through `ffi/runtime.ts`); nothing here is opened on import,
 * only on first use, and only on macOS.
 *
 * Types on both macOS targets (arm64, x86_64; LP64): `mach_port_t`,
 * `mach_port_name_t`, `kern_return_t`, `mach_msg_option_t` and friends are
 * 32-bit; `size_t`/`CFIndex` 64-bit; `CVOptionFlags` is `uint64_t`;
 * `Boolean` is `unsigned char`.
 *
 * The shim is opened by `ffi/darwin_shim.ts` (which decides where from:
 * `SURFACEPORT_SHIM_PATH`, `native/build/`, the package's `native/prebuilt/`,
 * or the copy embedded in the module graph), synchronously and without any
 * network.
 *
 * `IOSurfaceLookup` (global IOSurfaceID lookup) is deliberately not declared:
 * surfaces travel only as mach ports.
 *
 * @module
 */

import { LibraryLoadError, UnsupportedError } from "../src/core/errors.ts";
import { type Library, runtime, type SymbolTable } from "./runtime.ts";
import { PREBUILT_SHIM_SHA256 } from "./darwin_prebuilt.ts";
import { hostShimWorld, openShim, SHIM_FILE_NAME, type ShimOrigin } from "./darwin_shim.ts";

export { PREBUILT_SHIM_SHA256 };

/** libSystem: Mach ports and messages, the bootstrap server, credentials. */
export const libSystem = {
  /** mach_port_t mach_task_self_ — the task's own port name (read as a static: no uref added). */
  mach_task_self_: { type: "u32" },
  /** mach_port_t bootstrap_port — this process's bootstrap port. */
  bootstrap_port: { type: "u32" },
  /**
   * mach_msg_return_t mach_msg(mach_msg_header_t *msg, mach_msg_option_t option,
   *   mach_msg_size_t send_size, mach_msg_size_t rcv_size, mach_port_name_t rcv_name,
   *   mach_msg_timeout_t timeout, mach_port_name_t notify) — on this thread (timeout 0).
   */
  mach_msg: {
    parameters: ["buffer", "i32", "u32", "u32", "u32", "u32", "u32"],
    result: "i32",
  },
  /** The same `mach_msg`, on a worker thread: for receives with a timeout slice. */
  mach_msg_wait: {
    name: "mach_msg",
    parameters: ["buffer", "i32", "u32", "u32", "u32", "u32", "u32"],
    result: "i32",
    nonblocking: true,
  },
  /** void mach_msg_destroy(mach_msg_header_t *msg) — releases every right (and OOL region) in a received message. */
  mach_msg_destroy: { parameters: ["buffer"], result: "void" },
  /** kern_return_t mach_port_allocate(ipc_space_t task, mach_port_right_t right, mach_port_name_t *name) */
  mach_port_allocate: { parameters: ["u32", "u32", "buffer"], result: "i32" },
  /** kern_return_t mach_port_deallocate(ipc_space_t task, mach_port_name_t name) */
  mach_port_deallocate: { parameters: ["u32", "u32"], result: "i32" },
  /** kern_return_t mach_port_mod_refs(ipc_space_t task, mach_port_name_t name, mach_port_right_t right, mach_port_delta_t delta) */
  mach_port_mod_refs: { parameters: ["u32", "u32", "u32", "i32"], result: "i32" },
  /** kern_return_t mach_port_insert_right(ipc_space_t task, mach_port_name_t name, mach_port_t poly, mach_msg_type_name_t polyPoly) */
  mach_port_insert_right: { parameters: ["u32", "u32", "u32", "u32"], result: "i32" },
  /**
   * kern_return_t mach_port_insert_member(ipc_space_t task, mach_port_name_t name,
   *   mach_port_name_t pset) — adds the receive right `name` to the port set `pset`
   *   (KERN_ALREADY_IN_SET if it is in it); other set memberships are untouched.
   */
  mach_port_insert_member: { parameters: ["u32", "u32", "u32"], result: "i32" },
  /**
   * kern_return_t mach_port_extract_member(ipc_space_t task, mach_port_name_t name,
   *   mach_port_name_t pset) — takes `name` out of `pset` (KERN_NOT_IN_SET if it is not in it).
   */
  mach_port_extract_member: { parameters: ["u32", "u32", "u32"], result: "i32" },
  /** kern_return_t mach_port_get_refs(ipc_space_t task, mach_port_name_t name, mach_port_right_t right, mach_port_urefs_t *refs) */
  mach_port_get_refs: { parameters: ["u32", "u32", "u32", "buffer"], result: "i32" },
  /** kern_return_t mach_port_type(ipc_space_t task, mach_port_name_t name, mach_port_type_t *ptype) */
  mach_port_type: { parameters: ["u32", "u32", "buffer"], result: "i32" },
  /**
   * kern_return_t mach_vm_deallocate(vm_map_t target, mach_vm_address_t address, mach_vm_size_t size)
   * — frees out-of-line memory a received message mapped into this task.
   */
  mach_vm_deallocate: { parameters: ["u32", "u64", "u64"], result: "i32" },
  /**
   * kern_return_t mach_port_request_notification(ipc_space_t task, mach_port_name_t name,
   *   mach_msg_id_t msgid, mach_port_mscount_t sync, mach_port_t notify,
   *   mach_msg_type_name_t notifyPoly, mach_port_t *previous)
   */
  mach_port_request_notification: {
    parameters: ["u32", "u32", "i32", "u32", "u32", "u32", "buffer"],
    result: "i32",
  },
  /**
   * kern_return_t mach_port_set_attributes(ipc_space_t task, mach_port_name_t name,
   *   mach_port_flavor_t flavor, mach_port_info_t port_info, mach_msg_type_number_t count)
   * — `mach_port_flavor_t` is an int, `mach_port_info_t` an `integer_t *`.
   */
  mach_port_set_attributes: { parameters: ["u32", "u32", "i32", "buffer", "u32"], result: "i32" },
  /** kern_return_t bootstrap_check_in(mach_port_t bp, const name_t service_name, mach_port_t *sp) — name_t is char[128] */
  bootstrap_check_in: { parameters: ["u32", "buffer", "buffer"], result: "i32" },
  /** kern_return_t bootstrap_look_up(mach_port_t bp, const name_t service_name, mach_port_t *sp) */
  bootstrap_look_up: { parameters: ["u32", "buffer", "buffer"], result: "i32" },
  /** const char *bootstrap_strerror(kern_return_t r) */
  bootstrap_strerror: { parameters: ["i32"], result: "pointer" },
  /** const char *mach_error_string(mach_error_t error_value) */
  mach_error_string: { parameters: ["i32"], result: "pointer" },
  /** uid_t geteuid(void) */
  geteuid: { parameters: [], result: "u32" },
  /** gid_t getegid(void) */
  getegid: { parameters: [], result: "u32" },
  /** pid_t getpid(void) */
  getpid: { parameters: [], result: "i32" },
  /**
   * int kill(pid_t pid, int sig) — only ever with sig 0: does `pid` exist (0), or not (-1,
   * errno ESRCH), or exist but refuse our signals (-1, errno EPERM)?
   */
  kill: { parameters: ["i32", "i32"], result: "i32" },
  /** int *__error(void) — libSystem's thread-local errno (what `errno` expands to) */
  __error: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** CoreFoundation: reference counting and the property dictionaries IOSurfaceCreate takes. */
export const coreFoundation = {
  /** CFTypeRef CFRetain(CFTypeRef cf) */
  CFRetain: { parameters: ["pointer"], result: "pointer" },
  /** void CFRelease(CFTypeRef cf) */
  CFRelease: { parameters: ["pointer"], result: "void" },
  /** CFIndex CFGetRetainCount(CFTypeRef cf) */
  CFGetRetainCount: { parameters: ["pointer"], result: "i64" },
  /** CFNumberRef CFNumberCreate(CFAllocatorRef allocator, CFNumberType theType, const void *valuePtr) — CFNumberType is a CFIndex */
  CFNumberCreate: { parameters: ["pointer", "i64", "buffer"], result: "pointer" },
  /**
   * CFMutableDictionaryRef CFDictionaryCreateMutable(CFAllocatorRef allocator, CFIndex capacity,
   *   const CFDictionaryKeyCallBacks *keyCallBacks, const CFDictionaryValueCallBacks *valueCallBacks)
   */
  CFDictionaryCreateMutable: {
    parameters: ["pointer", "i64", "pointer", "pointer"],
    result: "pointer",
  },
  /** void CFDictionarySetValue(CFMutableDictionaryRef theDict, const void *key, const void *value) */
  CFDictionarySetValue: { parameters: ["pointer", "pointer", "pointer"], result: "void" },
  /** CFMutableArrayRef CFArrayCreateMutable(CFAllocatorRef allocator, CFIndex capacity, const CFArrayCallBacks *callBacks) */
  CFArrayCreateMutable: { parameters: ["pointer", "i64", "pointer"], result: "pointer" },
  /** void CFArrayAppendValue(CFMutableArrayRef theArray, const void *value) */
  CFArrayAppendValue: { parameters: ["pointer", "pointer"], result: "void" },
  /** CFStringRef CFStringCreateWithCString(CFAllocatorRef alloc, const char *cStr, CFStringEncoding encoding) */
  CFStringCreateWithCString: { parameters: ["pointer", "buffer", "u32"], result: "pointer" },
  /** const CFDictionaryKeyCallBacks kCFTypeDictionaryKeyCallBacks — a struct: the static gives its address, pass that. */
  kCFTypeDictionaryKeyCallBacks: { type: "pointer" },
  /** const CFDictionaryValueCallBacks kCFTypeDictionaryValueCallBacks — a struct: pass its address. */
  kCFTypeDictionaryValueCallBacks: { type: "pointer" },
  /** const CFArrayCallBacks kCFTypeArrayCallBacks — a struct: pass its address. */
  kCFTypeArrayCallBacks: { type: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** IOSurface. Every `kIOSurface*` key is a `const CFStringRef` global: the static gives its address; dereference it. */
export const ioSurface = {
  /** IOSurfaceRef IOSurfaceCreate(CFDictionaryRef properties) — +1 */
  IOSurfaceCreate: { parameters: ["pointer"], result: "pointer" },
  /** mach_port_t IOSurfaceCreateMachPort(IOSurfaceRef buffer) — a send right; one use of the surface while it lives */
  IOSurfaceCreateMachPort: { parameters: ["pointer"], result: "u32" },
  /** IOSurfaceRef IOSurfaceLookupFromMachPort(mach_port_t port) — +1; does not consume the port */
  IOSurfaceLookupFromMachPort: { parameters: ["u32"], result: "pointer" },
  /** IOSurfaceID IOSurfaceGetID(IOSurfaceRef buffer) — uint32_t */
  IOSurfaceGetID: { parameters: ["pointer"], result: "u32" },
  /** Boolean IOSurfaceIsInUse(IOSurfaceRef buffer) */
  IOSurfaceIsInUse: { parameters: ["pointer"], result: "bool" },
  /** void IOSurfaceIncrementUseCount(IOSurfaceRef buffer) */
  IOSurfaceIncrementUseCount: { parameters: ["pointer"], result: "void" },
  /** void IOSurfaceDecrementUseCount(IOSurfaceRef buffer) */
  IOSurfaceDecrementUseCount: { parameters: ["pointer"], result: "void" },
  /** kern_return_t IOSurfaceLock(IOSurfaceRef buffer, IOSurfaceLockOptions options, uint32_t *seed) — seed may be NULL */
  IOSurfaceLock: { parameters: ["pointer", "u32", "pointer"], result: "i32" },
  /** kern_return_t IOSurfaceUnlock(IOSurfaceRef buffer, IOSurfaceLockOptions options, uint32_t *seed) */
  IOSurfaceUnlock: { parameters: ["pointer", "u32", "pointer"], result: "i32" },
  /** size_t IOSurfaceGetAllocSize(IOSurfaceRef buffer) */
  IOSurfaceGetAllocSize: { parameters: ["pointer"], result: "usize" },
  /** size_t IOSurfaceGetWidth(IOSurfaceRef buffer) */
  IOSurfaceGetWidth: { parameters: ["pointer"], result: "usize" },
  /** size_t IOSurfaceGetHeight(IOSurfaceRef buffer) */
  IOSurfaceGetHeight: { parameters: ["pointer"], result: "usize" },
  /** size_t IOSurfaceGetBytesPerElement(IOSurfaceRef buffer) */
  IOSurfaceGetBytesPerElement: { parameters: ["pointer"], result: "usize" },
  /** size_t IOSurfaceGetBytesPerRow(IOSurfaceRef buffer) */
  IOSurfaceGetBytesPerRow: { parameters: ["pointer"], result: "usize" },
  /** size_t IOSurfaceAlignProperty(CFStringRef property, size_t value) — rounds `value` up as IOSurface requires */
  IOSurfaceAlignProperty: { parameters: ["pointer", "usize"], result: "usize" },
  /** size_t IOSurfaceGetPlaneCount(IOSurfaceRef buffer) — 0 for a non-planar surface */
  IOSurfaceGetPlaneCount: { parameters: ["pointer"], result: "usize" },
  /** void *IOSurfaceGetBaseAddress(IOSurfaceRef buffer) */
  IOSurfaceGetBaseAddress: { parameters: ["pointer"], result: "pointer" },
  /** void *IOSurfaceGetBaseAddressOfPlane(IOSurfaceRef buffer, size_t planeIndex) */
  IOSurfaceGetBaseAddressOfPlane: { parameters: ["pointer", "usize"], result: "pointer" },
  /** size_t IOSurfaceGetWidthOfPlane(IOSurfaceRef buffer, size_t planeIndex) */
  IOSurfaceGetWidthOfPlane: { parameters: ["pointer", "usize"], result: "usize" },
  /** size_t IOSurfaceGetHeightOfPlane(IOSurfaceRef buffer, size_t planeIndex) */
  IOSurfaceGetHeightOfPlane: { parameters: ["pointer", "usize"], result: "usize" },
  /** size_t IOSurfaceGetBytesPerElementOfPlane(IOSurfaceRef buffer, size_t planeIndex) */
  IOSurfaceGetBytesPerElementOfPlane: { parameters: ["pointer", "usize"], result: "usize" },
  /** size_t IOSurfaceGetBytesPerRowOfPlane(IOSurfaceRef buffer, size_t planeIndex) */
  IOSurfaceGetBytesPerRowOfPlane: { parameters: ["pointer", "usize"], result: "usize" },
  /** OSType IOSurfaceGetPixelFormat(IOSurfaceRef buffer) — uint32_t fourcc */
  IOSurfaceGetPixelFormat: { parameters: ["pointer"], result: "u32" },
  /** uint32_t IOSurfaceGetSeed(IOSurfaceRef buffer) */
  IOSurfaceGetSeed: { parameters: ["pointer"], result: "u32" },
  /** const CFStringRef kIOSurfaceWidth */
  kIOSurfaceWidth: { type: "pointer" },
  /** const CFStringRef kIOSurfaceHeight */
  kIOSurfaceHeight: { type: "pointer" },
  /** const CFStringRef kIOSurfaceBytesPerElement */
  kIOSurfaceBytesPerElement: { type: "pointer" },
  /** const CFStringRef kIOSurfaceBytesPerRow */
  kIOSurfaceBytesPerRow: { type: "pointer" },
  /** const CFStringRef kIOSurfacePixelFormat */
  kIOSurfacePixelFormat: { type: "pointer" },
  /** const CFStringRef kIOSurfaceAllocSize */
  kIOSurfaceAllocSize: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneInfo */
  kIOSurfacePlaneInfo: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneWidth */
  kIOSurfacePlaneWidth: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneHeight */
  kIOSurfacePlaneHeight: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneBytesPerElement */
  kIOSurfacePlaneBytesPerElement: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneBytesPerRow */
  kIOSurfacePlaneBytesPerRow: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneOffset */
  kIOSurfacePlaneOffset: { type: "pointer" },
  /** const CFStringRef kIOSurfacePlaneSize */
  kIOSurfacePlaneSize: { type: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** CoreVideo: CVPixelBuffer over IOSurface. */
export const coreVideo = {
  /**
   * CVReturn CVPixelBufferCreate(CFAllocatorRef allocator, size_t width, size_t height,
   *   OSType pixelFormatType, CFDictionaryRef pixelBufferAttributes, CVPixelBufferRef *pixelBufferOut)
   */
  CVPixelBufferCreate: {
    parameters: ["pointer", "usize", "usize", "u32", "pointer", "buffer"],
    result: "i32",
  },
  /**
   * CVReturn CVPixelBufferCreateWithIOSurface(CFAllocatorRef allocator, IOSurfaceRef surface,
   *   CFDictionaryRef pixelBufferAttributes, CVPixelBufferRef *pixelBufferOut) — the buffer retains the surface
   */
  CVPixelBufferCreateWithIOSurface: {
    parameters: ["pointer", "pointer", "pointer", "buffer"],
    result: "i32",
  },
  /** IOSurfaceRef CVPixelBufferGetIOSurface(CVPixelBufferRef pixelBuffer) — not retained; NULL if not IOSurface-backed */
  CVPixelBufferGetIOSurface: { parameters: ["pointer"], result: "pointer" },
  /** CVReturn CVPixelBufferLockBaseAddress(CVPixelBufferRef pixelBuffer, CVPixelBufferLockFlags lockFlags) — flags are u64 */
  CVPixelBufferLockBaseAddress: { parameters: ["pointer", "u64"], result: "i32" },
  /** CVReturn CVPixelBufferUnlockBaseAddress(CVPixelBufferRef pixelBuffer, CVPixelBufferLockFlags unlockFlags) */
  CVPixelBufferUnlockBaseAddress: { parameters: ["pointer", "u64"], result: "i32" },
  /** size_t CVPixelBufferGetWidth(CVPixelBufferRef pixelBuffer) */
  CVPixelBufferGetWidth: { parameters: ["pointer"], result: "usize" },
  /** size_t CVPixelBufferGetHeight(CVPixelBufferRef pixelBuffer) */
  CVPixelBufferGetHeight: { parameters: ["pointer"], result: "usize" },
  /** OSType CVPixelBufferGetPixelFormatType(CVPixelBufferRef pixelBuffer) */
  CVPixelBufferGetPixelFormatType: { parameters: ["pointer"], result: "u32" },
  /** const CFStringRef kCVPixelBufferIOSurfacePropertiesKey */
  kCVPixelBufferIOSurfacePropertiesKey: { type: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The surfaceport shim (`native/shim.m`): only what FFI cannot know. */
export const shim = {
  /**
   * const char *sp_abi_report(void) — a static NUL-terminated JSON object of
   * sizes, offsets and constants taken from the real SDK headers.
   */
  sp_abi_report: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded libSystem symbols. */
export type LibSystem = Library<typeof libSystem>;
/** The loaded CoreFoundation symbols. */
export type CoreFoundation = Library<typeof coreFoundation>;
/** The loaded IOSurface symbols. */
export type IOSurfaceLib = Library<typeof ioSurface>;
/** The loaded CoreVideo symbols. */
export type CoreVideo = Library<typeof coreVideo>;
/** The loaded shim symbols. */
export type Shim = Library<typeof shim>;

/** Every macOS library surfaceport uses, loaded. */
export interface DarwinLibraries {
  /** libSystem. */
  libSystem: LibSystem;
  /** CoreFoundation. */
  coreFoundation: CoreFoundation;
  /** IOSurface. */
  ioSurface: IOSurfaceLib;
  /** CoreVideo. */
  coreVideo: CoreVideo;
  /** The shim. */
  shim: Shim;
}

export { SHIM_FILE_NAME, SHIM_PATH_ENV } from "./darwin_shim.ts";
export type { ShimOrigin, ShimSource } from "./darwin_shim.ts";

/** The universal shim shipped inside the package, next to this file's package root. */
export const PREBUILT_SHIM_URL: URL = new URL(
  `../native/prebuilt/${SHIM_FILE_NAME}`,
  import.meta.url,
);

const LIBSYSTEM_PATH = "/usr/lib/libSystem.B.dylib";
const framework = (name: string) =>
  `/System/Library/Frameworks/${name}.framework/Versions/A/${name}`;

let frameworks: Omit<DarwinLibraries, "shim"> | undefined;

function assertDarwin(): void {
  if (runtime.os !== "darwin") {
    throw new UnsupportedError(
      `the IOSurface backend runs on macOS, not ${runtime.os}`,
    );
  }
  if (runtime.arch !== "x86_64" && runtime.arch !== "aarch64") {
    throw new UnsupportedError(`surfaceport supports x86_64 and arm64, not ${runtime.arch}`);
  }
}

function open<S extends SymbolTable>(
  path: string,
  symbols: S,
  hint: string,
): Library<S> {
  try {
    return runtime.dlopen(path, symbols);
  } catch (cause) {
    throw new LibraryLoadError(
      runtime.isPermissionError(cause)
        ? `could not open ${path}: the --allow-ffi permission is missing ` +
          `(surfaceport calls the system frameworks through FFI; run with ${runtime.ffiCommand} ...)`
        : `could not open ${path}: ${(cause as Error)?.message ?? cause} (${hint})`,
      { cause },
    );
  }
}

/** Opens libSystem and the three frameworks once (not on import) and returns their symbols. */
export function loadFrameworks(): Omit<DarwinLibraries, "shim"> {
  if (frameworks) return frameworks;
  assertDarwin();
  const hint = "run with --allow-ffi";
  frameworks = {
    libSystem: open(LIBSYSTEM_PATH, libSystem, hint),
    coreFoundation: open(framework("CoreFoundation"), coreFoundation, hint),
    ioSurface: open(framework("IOSurface"), ioSurface, hint),
    coreVideo: open(framework("CoreVideo"), coreVideo, hint),
  };
  return frameworks;
}

let loaded: { shim: Shim; origin: ShimOrigin } | undefined;

/**
 * Opens the shim once (synchronously; see `ffi/darwin_shim.ts` for where it
 * comes from) and returns its symbols. Throws `LibraryLoadError` saying what
 * to do when none can be opened.
 */
export function loadShim(): Shim {
  if (loaded) return loaded.shim;
  assertDarwin();
  loaded = openShim<Shim>(hostShimWorld((path) => runtime.dlopen(path, shim)));
  return loaded.shim;
}

/** Where the loaded shim came from, or `undefined` before {@link loadShim}. */
export function shimOrigin(): ShimOrigin | undefined {
  return loaded?.origin;
}
