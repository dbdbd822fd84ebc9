/**
 * The runtime seam on Bun: `bun:ffi`. Symbol tables are converted
 * mechanically (`parameters`/`result` → `args`/`returns`; types keep their
 * names). `bun:ffi` keys symbols by their C name, so an aliased key (one C
 * function with two signatures) opens the library once more under that
 * name. A pointer is a `number`, NULL is `null`. `nonblocking` symbols run
 * on a worker thread (`runtime_offthread.ts`).
 *
 * @module
 */

import { assertFfiComplete } from "../src/core/check_runtime.ts";
import { offThreadCaller } from "./runtime_offthread.ts";
import {
  archName,
  envValue,
  nodeFiles,
  nodeListenUnix,
  osName,
  pid,
  unrefNodeTimer,
} from "./runtime_node_files.ts";
import type {
  FunctionDefinition,
  Library,
  Pointer,
  PointerValue,
  Runtime,
  StaticDefinition,
  SymbolTable,
} from "./runtime.ts";

/** The parts of `bun:ffi` surfaceport uses. */
interface BunFfi {
  dlopen(
    path: string,
    symbols: Record<string, { args: readonly string[]; returns: string }>,
  ): { symbols: Record<string, (...args: unknown[]) => unknown> };
  ptr(view: ArrayBufferView): number;
  toArrayBuffer(pointer: number, offset: number, length: number): ArrayBuffer;
  read: {
    ptr(pointer: number, offset: number): number;
    u32(pointer: number, offset: number): number;
    i32(pointer: number, offset: number): number;
  };
  CString: new (pointer: number) => { toString(): string };
}

/** What `bun:ffi` must offer (checked at load: a missing one is an `UnsupportedError`). */
const REQUIRED = ["dlopen", "ptr", "toArrayBuffer", "read", "CString"] as const;

const asNumber = (pointer: PointerValue) => (pointer ?? 0) as unknown as number;
const fromNumber = (value: number | bigint | null) =>
  (value === 0 || value === 0n ? null : value) as unknown as PointerValue;

/**
 * `bytes`, with its storage out of the garbage-collected heap. A small
 * typed array starts with its bytes inside its own heap cell, and the first
 * `.buffer` access moves them out: an address taken before that (`ptr`
 * does not move them) and stored in a C struct would point at the old
 * place. Measured: a `msghdr` built that way sent 0 bytes.
 */
function materialized<T extends ArrayBufferView>(bytes: T): T {
  void bytes.buffer;
  return bytes;
}

/** The seam over `bun:ffi` (imported by the caller). */
export function bunRuntime(ffi: BunFfi, version: string): Runtime {
  assertFfiComplete(
    "bun:ffi",
    REQUIRED.filter((name) => ffi[name] === undefined),
  );
  return {
    name: "bun",
    version,
    os: osName(),
    arch: archName(),
    pid,
    ffiCommand: "bun",

    dlopen<S extends SymbolTable>(path: string, symbols: S): Library<S> {
      const result: Record<string, unknown> = {};
      const offThread: Record<string, unknown> = {};
      const statics: [string, string][] = [];
      // One dlopen per set of distinct C names: an alias opens the library again.
      const groups: Record<string, { args: readonly string[]; returns: string }>[] = [];
      const keysOf: Map<string, string>[] = [];
      for (const [key, definition] of Object.entries(symbols)) {
        if ("type" in definition) {
          statics.push([key, (definition as StaticDefinition).type]);
          continue;
        }
        const d = definition as FunctionDefinition;
        const cName = d.name ?? key;
        const signature = { args: d.parameters, returns: d.result };
        if (d.nonblocking) {
          offThread[key] = { name: cName, ...signature };
          continue;
        }
        let group = groups.findIndex((g) => !(cName in g));
        if (group < 0) {
          group = groups.push({}) - 1;
          keysOf.push(new Map());
        }
        groups[group][cName] = signature;
        keysOf[group].set(cName, key);
      }
      groups.forEach((group, i) => {
        const lib = ffi.dlopen(path, group);
        for (const [cName, key] of keysOf[i]) result[key] = lib.symbols[cName];
      });
      if (statics.length > 0) Object.assign(result, readStatics(path, statics));
      if (Object.keys(offThread).length > 0) {
        const caller = offThreadCaller({ host: "bun", path, definitions: offThread });
        for (const key of Object.keys(offThread)) result[key] = caller(key);
      }
      return result as Library<S>;
    },
    isPermissionError: () => false, // Bun has no FFI permission

    addressOf: (bytes) => BigInt(ffi.ptr(materialized(bytes))),
    pointerValue: (pointer) => BigInt(asNumber(pointer)),
    pointerFrom: (value) => fromNumber(Number(value)),
    arrayBufferAt: (pointer: Pointer, size) => ffi.toArrayBuffer(asNumber(pointer), 0, size),
    readPointer: (pointer: Pointer, offset = 0) =>
      fromNumber(ffi.read.ptr(asNumber(pointer), offset)),
    readCString: (pointer: Pointer) => new ffi.CString(asNumber(pointer)).toString(),
    sharedBytes: (size) => new Uint8Array(new SharedArrayBuffer(size)),

    env: envValue,
    // Node's permission model has no environment scope: every variable is readable.
    mayReadEnv: () => true,
    // A single-executable build is not told apart yet: it takes the file: path.
    standalone: false,
    files: nodeFiles,
    listenUnix: nodeListenUnix,
    unrefTimer: unrefNodeTimer,
  };

  /**
   * Globals (macOS only: `mach_task_self_`, the `kCF…`/`kIOSurface…`
   * constants): `bun:ffi` has no statics, so their addresses come from the
   * C library's own `dlopen`/`dlsym`.
   */
  function readStatics(path: string, statics: [string, string][]): Record<string, unknown> {
    const libdl = ffi.dlopen(osName() === "darwin" ? "/usr/lib/libSystem.B.dylib" : "libc.so.6", {
      dlopen: { args: ["buffer", "i32"], returns: "pointer" },
      dlsym: { args: ["pointer", "buffer"], returns: "pointer" },
    }).symbols;
    const cString = (text: string) => new TextEncoder().encode(`${text}\0`);
    const RTLD_NOW = 2;
    const handle = libdl.dlopen(cString(path), RTLD_NOW);
    const values: Record<string, unknown> = {};
    for (const [key, type] of statics) {
      const address = libdl.dlsym(handle, cString(key)) as number | null;
      if (!address) throw new Error(`${path}: symbol ${key} not found`);
      values[key] = type === "pointer"
        ? fromNumber(address)
        : type === "u32"
        ? ffi.read.u32(address, 0)
        : ffi.read.i32(address, 0);
    }
    return values;
  }
}
