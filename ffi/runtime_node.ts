/**
 * The runtime seam on Node ≥ 26: `node:ffi`. Symbol tables are converted
 * mechanically (`parameters`/`result` → `arguments`/`return`, `buffer` →
 * `pointer`, `isize`/`usize` → `int64`/`uint64`, an aliased key through
 * `getFunction` with its C name). A pointer is a `bigint`; functions that
 * return one are wrapped so that NULL is `null`, as on Deno. `nonblocking`
 * symbols run on a worker thread (`runtime_offthread.ts`).
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
  nodePermission,
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

/** The parts of `node:ffi` surfaceport uses. */
interface NodeFfi {
  DynamicLibrary: new (path: string) => {
    getFunction(name: string, signature: { arguments: string[]; return: string }): NativeFunction;
    getSymbol(name: string): bigint;
  };
  getRawPointer(view: ArrayBufferView): bigint;
  toArrayBuffer(pointer: bigint, length: number, copy: boolean): ArrayBuffer;
  getUint64(pointer: bigint): bigint;
  getUint32(pointer: bigint): number;
  getInt32(pointer: bigint): number;
  toString(pointer: bigint): string;
}

/** What `node:ffi` must offer (checked at load: a missing one is an `UnsupportedError`). */
const REQUIRED = [
  "DynamicLibrary",
  "getRawPointer",
  "toArrayBuffer",
  "getUint64",
  "getUint32",
  "getInt32",
  "toString",
] as const;

const TYPE_NAMES: Record<string, string> = {
  buffer: "pointer",
  isize: "int64",
  usize: "uint64",
};
const nodeType = (type: string) => TYPE_NAMES[type] ?? type;

const asBig = (pointer: PointerValue) => (pointer ?? 0n) as unknown as bigint;
const fromBig = (value: bigint) => (value === 0n ? null : value) as unknown as PointerValue;

/** A function `node:ffi` made. */
type NativeFunction = (...args: unknown[]) => unknown;

function wrapResult(fn: NativeFunction, result: string): NativeFunction {
  if (result === "pointer") {
    return (...args: unknown[]) => fromBig(fn(...args) as bigint);
  }
  if (result === "bool") return (...args: unknown[]) => fn(...args) !== 0;
  return fn;
}

/** The seam over `node:ffi` (imported by the caller: a flag can disable it). */
export function nodeRuntime(ffi: NodeFfi, version: string): Runtime {
  assertFfiComplete("node:ffi", REQUIRED.filter((name) => typeof ffi[name] !== "function"));
  return {
    name: "node",
    version,
    os: osName(),
    arch: archName(),
    pid,
    ffiCommand: "node (with --permission, add --allow-ffi)",

    dlopen<S extends SymbolTable>(path: string, symbols: S): Library<S> {
      // A library handle takes each C name with one signature: an alias opens another handle.
      const handles: { lib: InstanceType<NodeFfi["DynamicLibrary"]>; names: Set<string> }[] = [];
      const handleFor = (cName: string) => {
        let handle = handles.find((h) => !h.names.has(cName));
        if (!handle) handles.push(handle = { lib: new ffi.DynamicLibrary(path), names: new Set() });
        handle.names.add(cName);
        return handle.lib;
      };
      const lib = handleFor("");
      const result: Record<string, unknown> = {};
      const offThread: Record<string, unknown> = {};
      for (const [key, definition] of Object.entries(symbols)) {
        if ("type" in definition) {
          const address = lib.getSymbol(key);
          result[key] = readStatic(address, (definition as StaticDefinition).type);
          continue;
        }
        const d = definition as FunctionDefinition;
        const signature = { arguments: d.parameters.map(nodeType), return: nodeType(d.result) };
        if (d.nonblocking) offThread[key] = { name: d.name ?? key, ...signature };
        else {
          const cName = d.name ?? key;
          result[key] = wrapResult(handleFor(cName).getFunction(cName, signature), d.result);
        }
      }
      if (Object.keys(offThread).length > 0) {
        const caller = offThreadCaller({ host: "node", path, definitions: offThread });
        for (const key of Object.keys(offThread)) result[key] = caller(key);
      }
      return result as Library<S>;
    },
    isPermissionError: (error) => (error as { code?: string })?.code === "ERR_ACCESS_DENIED",

    addressOf: (bytes) => ffi.getRawPointer(bytes), // moves an on-heap array's bytes out first
    pointerValue: asBig,
    pointerFrom: fromBig,
    arrayBufferAt: (pointer: Pointer, size) => ffi.toArrayBuffer(asBig(pointer), size, false),
    readPointer: (pointer: Pointer, offset = 0) =>
      fromBig(ffi.getUint64(asBig(pointer) + BigInt(offset))),
    readCString: (pointer: Pointer) => ffi.toString(asBig(pointer)),
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

  function readStatic(address: bigint, type: string): unknown {
    if (type === "pointer") return fromBig(address);
    if (type === "u32") return ffi.getUint32(address);
    if (type === "i32") return ffi.getInt32(address);
    throw new TypeError(`static of type ${type} is not supported on Node`);
  }
}

/** True if Node runs with `--permission` but without `--allow-ffi`. */
export function ffiDeniedByPermission(): boolean {
  const permission = nodePermission();
  return permission !== undefined && !permission.has("ffi");
}
