/**
 * The runtime seam on Deno: `Deno.dlopen` takes the symbol tables as they
 * are, and its symbols are returned unwrapped (a pointer is a
 * `Deno.PointerObject`), so a call through the seam costs what a direct
 * call costs.
 *
 * @module
 */

import { DenoPollThread, onProcessMainRuntime } from "./runtime_deno_poll.ts";
import { createFileExclusive, readFileBounded } from "./runtime_node_files.ts";
import type {
  FileInfo,
  Library,
  Pointer,
  PointerValue,
  ReactorListener,
  ReactorStream,
  Runtime,
  SymbolTable,
} from "./runtime.ts";

const asDeno = (pointer: PointerValue) => pointer as unknown as Deno.PointerValue;
const fromDeno = (pointer: Deno.PointerValue) => pointer as unknown as PointerValue;

function fileInfo(info: Deno.FileInfo): FileInfo {
  return {
    isDirectory: info.isDirectory,
    isFile: info.isFile,
    uid: info.uid ?? -1,
    mode: info.mode ?? 0,
    mtimeMs: info.mtime?.getTime(),
  };
}

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
}

/** A Unix socket listener of Deno's (read, write and net permission for `path`, never prompted). */
function listenUnix(
  path: string,
  onConnection: (stream: ReactorStream) => void,
): ReactorListener | undefined {
  if (
    !granted({ name: "read", path }) || !granted({ name: "write", path }) ||
    !granted({ name: "net", host: `unix:${path}` })
  ) return undefined;
  const listener = Deno.listen({ transport: "unix", path });
  listener.unref();
  (async () => {
    try {
      for (;;) onConnection(await listener.accept());
    } catch {
      // closed
    }
  })();
  return {
    close() {
      try {
        listener.close();
      } catch {
        // closed already
      }
    },
  };
}

/** The seam over Deno's own APIs. */
export function denoRuntime(): Runtime {
  return {
    name: "deno",
    version: Deno.version.deno,
    os: Deno.build.os,
    arch: Deno.build.arch,
    pid: Deno.pid,
    ffiCommand: "deno run --allow-ffi",

    dlopen<S extends SymbolTable>(path: string, symbols: S): Library<S> {
      return Deno.dlopen(path, symbols as unknown as Deno.ForeignLibraryInterface)
        .symbols as unknown as Library<S>;
    },
    isPermissionError: (error) =>
      error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied,

    addressOf: (bytes) => Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes as BufferSource)),
    pointerValue: (pointer) => Deno.UnsafePointer.value(asDeno(pointer)),
    pointerFrom: (value) => fromDeno(Deno.UnsafePointer.create(value)),
    arrayBufferAt: (pointer: Pointer, size) =>
      Deno.UnsafePointerView.getArrayBuffer(asDeno(pointer)!, size),
    readPointer: (pointer: Pointer, offset = 0) =>
      fromDeno(new Deno.UnsafePointerView(asDeno(pointer)!).getPointer(offset)),
    readCString: (pointer: Pointer) => Deno.UnsafePointerView.getCString(asDeno(pointer)!),
    sharedBytes: (size) => new Uint8Array(size),

    env(name) {
      try {
        // Asked first: a missing --allow-env must never turn into a prompt.
        if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
          return undefined;
        }
        return Deno.env.get(name);
      } catch {
        return undefined; // no --allow-env
      }
    },
    mayReadEnv(name) {
      try {
        return Deno.permissions.querySync({ name: "env", variable: name }).state === "granted";
      } catch {
        return false;
      }
    },
    standalone: Deno.build.standalone ?? false,
    files: {
      mayAccess(kind, path) {
        try {
          return Deno.permissions.querySync({ name: kind, path }).state === "granted";
        } catch {
          return false;
        }
      },
      makeDirectory(path, mode) {
        try {
          Deno.mkdirSync(path, { mode });
          return true;
        } catch (error) {
          if (error instanceof Deno.errors.AlreadyExists) return false;
          throw error;
        }
      },
      lstat: (path) => fileInfo(Deno.lstatSync(path)),
      stat: (path) => fileInfo(Deno.statSync(path)),
      remove: (path) => Deno.removeSync(path),
      writeTextFile: (path, text, mode) => Deno.writeTextFileSync(path, text, { mode }),
      rename: (from, to) => Deno.renameSync(from, to),
      readDirectory: (path) =>
        Array.from(Deno.readDirSync(path), (entry) => ({ name: entry.name, isFile: entry.isFile })),
      readTextFile: (path) => Deno.readTextFileSync(path),
      readFile: (path) => Deno.readFile(path),
      // node:fs: Deno's own open cannot ask for O_NOFOLLOW or O_NONBLOCK.
      createFile: createFileExclusive,
      readBounded: readFileBounded,
      readFileSync: (path) => Deno.readFileSync(path),
      writePrivateFile(name, bytes) {
        const dir = Deno.makeTempDirSync({ prefix: "surfaceport-" }); // mode 0700
        const path = `${dir}/${name}`;
        Deno.writeFileSync(path, bytes, { mode: 0o500, createNew: true });
        return path;
      },
      removeTree: (path) => Deno.removeSync(path, { recursive: true }),
    },
    // A Deno.UnixConn is a ReactorStream as it is (read, close, ref, unref).
    listenUnix,
    unrefTimer: (timer) => Deno.unrefTimer(timer),
    pollThread: onProcessMainRuntime()
      ? (libcPath, onReturn, onFailed, interrupt) =>
        new DenoPollThread(libcPath, onReturn, onFailed, interrupt)
      : undefined,
  };
}
