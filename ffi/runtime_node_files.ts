/**
 * The seam's file operations, environment and host facts over `node:fs`
 * and `process`: shared by Node and Bun.
 *
 * @module
 */

import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import process from "node:process";
import type { FileInfo, ReactorListener, ReactorStream, RuntimeFiles } from "./runtime.ts";

function fileInfo(info: fs.Stats): FileInfo {
  return {
    isDirectory: info.isDirectory(),
    isFile: info.isFile(),
    uid: info.uid,
    mode: info.mode,
    mtimeMs: info.mtimeMs,
  };
}

/** Node's permission model (`--permission`), when it is on. */
interface Permission {
  has(scope: string, reference?: string): boolean;
}

/** `process.permission` when Node runs with `--permission`, else `undefined`. */
export function nodePermission(): Permission | undefined {
  return (process as unknown as { permission?: Permission }).permission;
}

/** {@link RuntimeFiles.createFile} over `node:fs` (Deno's own open has no `O_NOFOLLOW`). */
export function createFileExclusive(path: string, text: string, mode: number): boolean {
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK, mode);
  } catch (error) {
    if ((error as { code?: string }).code === "EEXIST") return false;
    throw error;
  }
  try {
    fs.writeSync(fd, text);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

/** {@link RuntimeFiles.readBounded} over `node:fs`. */
export function readFileBounded(
  path: string,
  maxBytes: number,
): { info: FileInfo & { readonly links: number }; bytes?: Uint8Array } | undefined {
  const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return undefined;
    throw error;
  }
  try {
    const stat = fs.fstatSync(fd);
    const info = { ...fileInfo(stat), links: stat.nlink };
    if (!info.isFile) return { info };
    const bytes = new Uint8Array(maxBytes + 1);
    let length = 0;
    while (length < bytes.length) {
      const n = fs.readSync(fd, bytes, length, bytes.length - length, length);
      if (n <= 0) break;
      length += n;
    }
    return { info, bytes: bytes.subarray(0, length) };
  } finally {
    fs.closeSync(fd);
  }
}

/** The file operations through `node:fs` (asking Node's permission model where it is on). */
export const nodeFiles: RuntimeFiles = {
  mayAccess(kind, path) {
    const permission = nodePermission();
    return permission === undefined || permission.has(`fs.${kind}`, path);
  },
  makeDirectory(path, mode) {
    try {
      fs.mkdirSync(path, { mode });
      return true;
    } catch (error) {
      if ((error as { code?: string }).code === "EEXIST") return false;
      throw error;
    }
  },
  lstat: (path) => fileInfo(fs.lstatSync(path)),
  stat: (path) => fileInfo(fs.statSync(path)),
  remove: (path) => fs.lstatSync(path).isDirectory() ? fs.rmdirSync(path) : fs.unlinkSync(path),
  writeTextFile: (path, text, mode) => fs.writeFileSync(path, text, { mode }),
  rename: (from, to) => fs.renameSync(from, to),
  readDirectory: (path) =>
    fs.readdirSync(path, { withFileTypes: true }).map((entry) => ({
      name: entry.name,
      isFile: entry.isFile(),
    })),
  readTextFile: (path) => fs.readFileSync(path, "utf8"),
  readFile: async (path) => new Uint8Array(await fs.promises.readFile(path)),
  createFile: createFileExclusive,
  readBounded: readFileBounded,
  readFileSync: (path) => new Uint8Array(fs.readFileSync(path)),
  writePrivateFile(name, bytes) {
    const dir = fs.mkdtempSync(`${os.tmpdir()}/surfaceport-`); // mode 0700
    const path = `${dir}/${name}`;
    fs.writeFileSync(path, bytes, { mode: 0o500, flag: "wx" });
    return path;
  },
  removeTree: (path) => fs.rmSync(path, { recursive: true, force: true }),
};

/** `process.arch` as Deno names it. */
export function archName(): string {
  return process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : process.arch;
}

/** `process.platform` (already Deno's names for Linux and macOS). */
export function osName(): string {
  return process.platform;
}

/** `unref()` on a Node or Bun `Timeout` (typed here as Deno's timer id). */
export function unrefNodeTimer(timer: ReturnType<typeof setTimeout>): void {
  (timer as unknown as { unref(): void }).unref();
}

/** An environment variable. */
export function envValue(name: string): string | undefined {
  return process.env[name];
}

/** This process's id. */
export const pid: number = process.pid;

/** A `net.Socket` in paused mode as a {@link ReactorStream}. */
function socketStream(socket: net.Socket): ReactorStream {
  let ended = false;
  let wake: (() => void) | undefined;
  const poke = () => wake?.();
  socket.on("readable", poke);
  socket.on("end", () => (ended = true, poke()));
  socket.on("close", () => (ended = true, poke()));
  socket.on("error", () => (ended = true, poke()));
  return {
    read(buffer) {
      return new Promise((resolve) => {
        const attempt = (): boolean => {
          const chunk = socket.read() as Uint8Array | null;
          if (chunk !== null) {
            const n = Math.min(chunk.length, buffer.length);
            buffer.set(chunk.subarray(0, n));
            if (chunk.length > n) socket.unshift(chunk.subarray(n));
            resolve(n);
            return true;
          }
          if (!ended && !socket.destroyed) return false;
          resolve(null);
          return true;
        };
        if (!attempt()) {
          wake = () => {
            if (attempt()) wake = undefined;
          };
        }
      });
    },
    close() {
      socket.destroy();
      ended = true;
      poke();
    },
    ref: () => void socket.ref(),
    unref: () => void socket.unref(),
  };
}

/**
 * A Unix socket listener over `node:net` (Node and Bun), or `undefined`
 * where Node's permission model (`--permission`) does not allow it.
 */
export function nodeListenUnix(
  path: string,
  onConnection: (stream: ReactorStream) => void,
): ReactorListener | undefined {
  const permission = nodePermission();
  if (permission !== undefined && !permission.has("net")) return undefined;
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    onConnection(socketStream(socket));
  });
  server.on("error", () => server.close());
  server.listen(path);
  server.unref();
  return { close: () => void server.close() };
}
