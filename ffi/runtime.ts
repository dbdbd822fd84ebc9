/**
 * The runtime seam: the one small interface through which everything in
 * `src/` reaches native code and the host (Deno, Node or Bun) — loading a
 * library from the symbol tables of `ffi/linux.ts` and `ffi/darwin.ts`,
 * pointers and views over foreign memory, a blocking call off the main
 * thread, and the few file system, environment and process facts the
 * library needs. Nothing in `src/` names `Deno`, `node:ffi` or `bun:ffi`.
 *
 * The symbol tables keep Deno's shape (`parameters`, `result`, `buffer`,
 * `nonblocking`); each implementation converts them mechanically.
 * Pointers are opaque ({@link Pointer}): each runtime has its own
 * representation, and NULL is always `null`.
 *
 * The implementation for the running host is chosen once, when this module
 * is first evaluated (after the version check of `src/core/check_runtime.ts`).
 *
 * @module
 */

import {
  assertRuntimeSupported,
  ffiUnavailable,
  type HostInfo,
} from "../src/core/check_runtime.ts";

/**
 * A non-NULL C pointer, opaque: a `Deno.PointerObject` on Deno. Compare
 * with `null` for NULL; get its numeric value with {@link Runtime.pointerValue}.
 */
export type Pointer = { readonly __brand: "surfaceport.Pointer" };

/** A C pointer that may be NULL (`null`). */
export type PointerValue = Pointer | null;

/** C argument types of the symbol tables that JS passes as numbers. */
type NumberType = "i8" | "u8" | "i16" | "u16" | "i32" | "u32" | "f32" | "f64";
/** C argument types that are 64 bits wide (passed as `bigint`). */
type WideType = "i64" | "u64" | "isize" | "usize";

/** A C type of a symbol table: `buffer` is a pointer passed as a typed array. */
export type NativeType = NumberType | WideType | "pointer" | "buffer" | "bool";

/** A function of a symbol table (Deno's shape: `nonblocking` runs it on a worker thread). */
export interface FunctionDefinition {
  /** The C name, when the key is an alias (one C function with two signatures). */
  readonly name?: string;
  /** The C parameter types. */
  readonly parameters: readonly NativeType[];
  /** The C result type. */
  readonly result: NativeType | "void";
  /** Run off the main thread: the call returns a promise. */
  readonly nonblocking?: boolean;
}

/**
 * A global variable of a symbol table: `"pointer"` gives its address, a
 * number type its value (read once, at load).
 */
export interface StaticDefinition {
  /** What to read: the address (`"pointer"`) or the value of an integer global. */
  readonly type: "pointer" | NumberType;
}

/** A symbol table: `ffi/linux.ts`'s `libcSymbols`, `ffi/darwin.ts`'s tables. */
export type SymbolTable = Readonly<Record<string, FunctionDefinition | StaticDefinition>>;

/** What JS passes for a parameter of C type `T`. */
type ArgumentOf<T> = T extends "pointer" ? PointerValue
  : T extends "buffer" ? ArrayBufferView | null
  : T extends WideType ? bigint
  : T extends "bool" ? boolean
  : number;

/** What a call returns for C result type `T`. */
type ResultOf<T> = T extends "pointer" ? PointerValue
  : T extends WideType ? number | bigint
  : T extends "bool" ? boolean
  : T extends "void" ? void
  : number;

/** The JS argument list of a C parameter list. */
type ArgumentsOf<P extends readonly NativeType[]> = { [K in keyof P]: ArgumentOf<P[K]> };

/** The JS function (or static's address or value) for one symbol table entry. */
type SymbolOf<D> = D extends FunctionDefinition ? (
    ...args: ArgumentsOf<D["parameters"]>
  ) => D extends { readonly nonblocking: true } ? Promise<ResultOf<D["result"]>>
    : ResultOf<D["result"]>
  : D extends StaticDefinition ? ResultOf<D["type"]>
  : never;

/** A loaded library: one function per symbol table entry (or the address of a static). */
export type Library<S extends SymbolTable> = { readonly [K in keyof S]: SymbolOf<S[K]> };

/** What {@link RuntimeFiles.lstat} and {@link RuntimeFiles.stat} report. */
export interface FileInfo {
  /** A directory. */
  readonly isDirectory: boolean;
  /** A regular file. */
  readonly isFile: boolean;
  /** The owner. */
  readonly uid: number;
  /** The mode bits (`st_mode`). */
  readonly mode: number;
  /** Last modification, ms since the epoch (`undefined` where the file system has none). */
  readonly mtimeMs: number | undefined;
}

/** The synchronous file operations of the registry and the shim loader. */
export interface RuntimeFiles {
  /**
   * True if this process may `kind` `path` as far as the runtime's own
   * permissions go (Deno's `--allow-read`/`--allow-write`, Node's
   * `--permission`): asks, never prompts.
   */
  mayAccess(kind: "read" | "write", path: string): boolean;
  /** `mkdir(path, mode)`: true if made, false if something already is at `path`; throws otherwise. */
  makeDirectory(path: string, mode: number): boolean;
  /** `lstat(path)`. */
  lstat(path: string): FileInfo;
  /** `stat(path)`. */
  stat(path: string): FileInfo;
  /** Removes a file (or an empty directory). */
  remove(path: string): void;
  /** Writes `text` to `path` (made with `mode` if new). */
  writeTextFile(path: string, text: string, mode: number): void;
  /** `rename(from, to)`. */
  rename(from: string, to: string): void;
  /** The entries of a directory. */
  readDirectory(path: string): { name: string; isFile: boolean }[];
  /** The whole of a text file. */
  readTextFile(path: string): string;
  /** The whole of a file. */
  readFile(path: string): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * Creates `path` holding `text` (with `mode`) only if nothing is at that
   * name: `O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK`, so a link, a hard
   * link or a FIFO already there is never written through or waited on.
   * False if something is there; throws for other failures.
   */
  createFile(path: string, text: string, mode: number): boolean;
  /**
   * Opens `path` with `O_NOFOLLOW | O_NONBLOCK` (a link is not followed, a
   * FIFO not waited on) and describes what it opened; for a regular file,
   * also reads at most `maxBytes + 1` bytes of it (so a longer file shows
   * as longer than `maxBytes` without being read whole). `undefined` if
   * nothing is at `path`; throws for anything that cannot be opened so.
   */
  readBounded(
    path: string,
    maxBytes: number,
  ): { info: FileInfo & { readonly links: number }; bytes?: Uint8Array } | undefined;
  /** The whole of a file, synchronously (the shim loader hashes it inside synchronous calls). */
  readFileSync(path: string): Uint8Array;
  /**
   * Writes `bytes` as `name` into a new directory under the temporary
   * directory that only this user can enter; returns the file's path.
   */
  writePrivateFile(name: string, bytes: Uint8Array): string;
  /** Removes a directory and everything in it. */
  removeTree(path: string): void;
}

/**
 * A Unix stream connection that the runtime's own event loop watches: the
 * receiving end of a doorbell (`src/linux/doorbell.ts`).
 */
export interface ReactorStream {
  /**
   * Reads up to `buffer.length` bytes into `buffer`: their count, or `null`
   * at the end of the stream (or once it is closed). One read at a time.
   */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Closes the stream; a pending read resolves with `null` (or rejects). Idempotent. */
  close(): void;
  /** A pending read keeps the process alive (the default). */
  ref(): void;
  /** A pending read does not keep the process alive. */
  unref(): void;
}

/** A listening Unix stream socket of {@link Runtime.listenUnix}. */
export interface ReactorListener {
  /** Stops listening. Idempotent. */
  close(): void;
}

/**
 * `poll(2)` on a thread of its own that reports each return to the
 * JavaScript thread through a callback: the Linux backend's shared poll
 * ({@link Runtime.pollThread}). Unlike a nonblocking call, a round
 * allocates nothing on the JavaScript heap (no promise per call).
 *
 * One poll at a time, over {@link fds}. A poll asked for with
 * {@link start} can be amended until the thread begins it: {@link hold}
 * keeps the thread from beginning it, and the next {@link start} (in the
 * same turn) lets it begin with the new count and timeout.
 */
export interface PollThread {
  /**
   * The pollfd array the thread reads, at least `size` bytes: a new
   * (zeroed) array when it must grow, which only a caller not polling may ask for.
   */
  fds(size: number): Uint8Array;
  /**
   * Asks for `poll(fds, nfds, timeout)`; `onReturn(result, errno)` is
   * called on the JavaScript thread when it returns (`errno` is the
   * thread's, when `result` is negative). A poll asked for keeps the
   * process alive until it returns.
   */
  start(nfds: number, timeout: number): void;
  /**
   * True if a poll asked for has not begun: the thread will not begin it
   * before the next {@link start}, and its pollfd entries may be rewritten
   * meanwhile. False if it has begun (wake it through a descriptor it
   * polls) or none is asked for.
   */
  hold(): boolean;
}

/** One host runtime (Deno, Node or Bun), as surfaceport uses it. */
export interface Runtime {
  /** Which runtime this is. */
  readonly name: "deno" | "node" | "bun";
  /** Its version, e.g. `"2.9.0"`. */
  readonly version: string;
  /** The operating system, as Deno names it (`"linux"`, `"darwin"`, ...). */
  readonly os: string;
  /** The CPU architecture, as Deno names it (`"x86_64"`, `"aarch64"`, ...). */
  readonly arch: string;
  /** This process's id. */
  readonly pid: number;
  /** How to run a script with FFI allowed, for error messages (e.g. `"deno run --allow-ffi"`). */
  readonly ffiCommand: string;

  /** Opens the library at `path` with `symbols`; throws the runtime's error (see {@link isPermissionError}). */
  dlopen<S extends SymbolTable>(path: string, symbols: S): Library<S>;
  /** True for the error a missing FFI (or file) permission throws. */
  isPermissionError(error: unknown): boolean;

  /** The address of `bytes`' first byte (kept valid only while `bytes` is alive and attached). */
  addressOf(bytes: ArrayBufferView): bigint;
  /** The numeric value of a pointer (0n for NULL). */
  pointerValue(pointer: PointerValue): bigint;
  /** A pointer from its numeric value (`null` for 0). */
  pointerFrom(value: bigint): PointerValue;
  /** An `ArrayBuffer` over `size` bytes at `pointer`, without copying. */
  arrayBufferAt(pointer: Pointer, size: number): ArrayBuffer;
  /** The pointer stored at `pointer + offset`. */
  readPointer(pointer: Pointer, offset?: number): PointerValue;
  /** The NUL-terminated UTF-8 string at `pointer`. */
  readCString(pointer: Pointer): string;
  /**
   * `size` zeroed bytes that a `nonblocking` call may read and write while
   * it runs (shared memory where the call runs on another thread).
   */
  sharedBytes(size: number): Uint8Array;

  /** An environment variable, or `undefined` (also when the runtime denies reading it). */
  env(name: string): string | undefined;
  /** True if this process may read the environment variable `name` (asks, never prompts). */
  mayReadEnv(name: string): boolean;
  /**
   * True inside a single-file executable (`deno compile`), whose package
   * files exist only in its virtual file system, where `dlopen` cannot reach.
   */
  readonly standalone: boolean;
  /** The file operations. */
  readonly files: RuntimeFiles;
  /**
   * Listens on a Unix stream socket at `path` (which must not exist), with
   * the runtime's own event loop (Deno.listen, Node's and Bun's `node:net`),
   * handing each accepted connection to `onConnection`. A listener does not
   * keep the process alive. Returns `undefined` where the runtime's
   * permissions do not allow it (never prompts); throws if the bind fails.
   */
  listenUnix(
    path: string,
    onConnection: (stream: ReactorStream) => void,
  ): ReactorListener | undefined;
  /**
   * Lets the process exit while `timer` (a `setTimeout` of this runtime) is
   * pending: `Deno.unrefTimer`, `Timeout.unref()` on Node and Bun.
   */
  unrefTimer(timer: ReturnType<typeof setTimeout>): void;
  /**
   * A {@link PollThread} running `poll` from the C library at `libcPath`,
   * calling `onReturn` (see {@link PollThread.start}) or, if the thread
   * itself fails (it cannot load the library), `onFailed` with the error,
   * after which it is not used again. Undefined where the runtime has no
   * allocation-free way to call back across threads (Node, Bun: their
   * `nonblocking` calls run on a worker of their own, `runtime_offthread.ts`),
   * and in a Deno worker, whose runtime may be terminated at any moment
   * with no `unload` to stop the thread first.
   *
   * When the JavaScript runtime that made it is about to go (Deno's
   * `unload`: the process's end, or the end of a `deno test` module while
   * the process goes on), the thread stops calling back and `interrupt` is
   * called: it must make a poll in flight return (write a descriptor the
   * caller keeps in every poll), so that the thread leaves it. A callback
   * called after its runtime went would run on freed memory.
   */
  pollThread?(
    libcPath: string,
    onReturn: (result: number, errno: number) => void,
    onFailed: (error: Error) => void,
    interrupt: () => void,
  ): PollThread;
}

/** Which host is running this code, and its version. */
function detect(): HostInfo {
  const global = globalThis as {
    Deno?: { version?: { deno?: string } };
    Bun?: { version?: string };
    process?: {
      versions?: { node?: string };
      permission?: { has(scope: string): boolean };
    };
  };
  if (global.Deno !== undefined) return { name: "deno", version: global.Deno.version?.deno ?? "" };
  if (global.Bun !== undefined) return { name: "bun", version: global.Bun.version ?? "" };
  const node = global.process?.versions?.node;
  if (node !== undefined) {
    const permission = global.process?.permission;
    return {
      name: "node",
      version: node,
      ffiDenied: permission !== undefined && !permission.has("ffi"),
      workerDenied: permission !== undefined && !permission.has("worker"),
    };
  }
  return { name: undefined, version: "" };
}

/** Imports a host module by a name the type checker does not resolve (it exists on one host only). */
// deno-lint-ignore no-explicit-any
async function importHostModule(name: string, host: HostInfo): Promise<any> {
  try {
    return await import(name);
  } catch (cause) {
    throw ffiUnavailable(name, host, cause);
  }
}

async function load(): Promise<Runtime> {
  const host = detect();
  assertRuntimeSupported(host);
  switch (host.name) {
    case "node": {
      const ffi = await importHostModule("node:ffi", host);
      return (await import("./runtime_node.ts")).nodeRuntime(ffi, host.version);
    }
    case "bun": {
      const ffi = await importHostModule("bun:ffi", host);
      return (await import("./runtime_bun.ts")).bunRuntime(ffi, host.version);
    }
    default:
      return (await import("./runtime_deno.ts")).denoRuntime();
  }
}

/** The running host's implementation of the seam. */
export const runtime: Runtime = await load();
