/**
 * The Linux backend: memfd surfaces, Unix-socket channels.
 *
 * @module
 */

import { runtime } from "../../ffi/runtime.ts";
import type { Backend, EndpointState } from "../contract/backend.ts";
import { SystemCallError } from "../core/errors.ts";
import { ABSTRACT_PREFIX, connectSocket, SocketListener } from "./listener.ts";
import { closeQuietly, cString, ERRNO, libc, readErrno, reopen, systemError } from "./libc.ts";
import { DIRENT_NAME_OFFSET, LINUX } from "./structs.ts";
import {
  exportLockedHandle,
  InotifyReleaseWatcher,
  MemfdSurface,
  refillSpareDescriptions,
} from "./surface.ts";

/** `struct timespec { i64 tv_sec; i64 tv_nsec; }`, read as 32-bit words (no BigInt per call). */
const timespec = new Int32Array(4);
const timespecBytes = new Uint8Array(timespec.buffer);

/** `clock_gettime(CLOCK_REALTIME)` in microseconds: one clock for every process on the machine. */
function realtimeMicros(): number {
  libc().clock_gettime(0, /* CLOCK_REALTIME */ timespecBytes);
  const seconds = timespec[1] * 0x1_0000_0000 + (timespec[0] >>> 0);
  return seconds * 1e6 + Math.floor(timespec[2] / 1000); // tv_nsec < 1e9 fits the low word
}

const decoder = new TextDecoder();

/** Reads a whole (small, `/proc`) file through libc: no runtime read permission is involved. */
function readProcFile(path: string): string {
  const fd = libc().open(cString(path), LINUX.O_RDONLY | LINUX.O_CLOEXEC, 0);
  if (fd < 0) throw systemError(`open(${path})`);
  try {
    const chunks: Uint8Array[] = [];
    const chunk = new Uint8Array(65536);
    for (;;) {
      const n = Number(libc().read(fd, chunk, BigInt(chunk.length)));
      if (n < 0) {
        if (readErrno() === ERRNO.EINTR) continue;
        throw systemError(`read(${path})`);
      }
      if (n === 0) break;
      chunks.push(chunk.slice(0, n));
    }
    const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return decoder.decode(all);
  } finally {
    closeQuietly(fd);
  }
}

/** `__SO_ACCEPTCON` in the Flags column of `/proc/net/unix`: the socket listens. */
const SO_ACCEPTCON = 0x10000;

/**
 * The inodes of the listening Unix sockets in this network namespace, by
 * the address they are bound to, from `/proc/net/unix` (abstract ones with
 * their leading NUL shown as `@`).
 */
function listeningSockets(): Map<string, Set<string>> {
  const found = new Map<string, Set<string>>();
  const lines = readProcFile("/proc/net/unix").split("\n");
  for (let i = 1; i < lines.length; i++) {
    // Num RefCount Protocol Flags Type St Inode Path
    const fields = lines[i].trim().split(/\s+/);
    if (fields.length < 8) continue;
    if ((parseInt(fields[3], 16) & SO_ACCEPTCON) === 0) continue;
    const address = fields.slice(7).join(" ");
    let inodes = found.get(address);
    if (!inodes) found.set(address, inodes = new Set());
    inodes.add(fields[6]);
  }
  return found;
}

const linkBuffer = new Uint8Array(64);

/**
 * Whether process `pid` holds a descriptor of one of the sockets `inodes`
 * (`/proc/PID/fd/N` reads `socket:[INODE]`): `"live"`, `"dead"` if it does
 * not or no such process exists, `"unknown"` if its descriptors cannot be
 * read (another user's process, or `/proc` mounted with `hidepid`).
 */
function holdsSocket(pid: number, inodes: ReadonlySet<string>): EndpointState {
  const lib = libc();
  const dir = lib.opendir(cString(`/proc/${pid}/fd`));
  if (dir === null) {
    const errno = readErrno();
    return errno === ERRNO.ENOENT || errno === ERRNO.ESRCH ? "dead" : "unknown";
  }
  try {
    for (;;) {
      const entry = lib.readdir(dir);
      if (entry === null) return "dead";
      const name = runtime.readCString(
        runtime.pointerFrom(runtime.pointerValue(entry) + BigInt(DIRENT_NAME_OFFSET))!,
      );
      if (!/^\d+$/.test(name)) continue;
      const n = Number(
        lib.readlink(cString(`/proc/${pid}/fd/${name}`), linkBuffer, BigInt(linkBuffer.length)),
      );
      if (n <= 0) continue;
      const match = /^socket:\[(\d+)\]$/.exec(decoder.decode(linkBuffer.subarray(0, n)));
      if (match && inodes.has(match[1])) return "live";
    }
  } finally {
    lib.closedir(dir);
  }
}

/** True if process `pid` exists (its `/proc` directory opens). */
function processExists(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  const fd = libc().open(cString(`/proc/${pid}`), LINUX.O_RDONLY | LINUX.O_CLOEXEC, 0);
  if (fd < 0) return false;
  closeQuietly(fd);
  return true;
}

/** memfd + SCM_RIGHTS, all through libc (loaded by `ffi/linux.ts`). */
export const linuxBackend: Backend = {
  currentUid: () => libc().geteuid(),
  currentPid: () => runtime.pid,
  clockMicros: realtimeMicros,
  beforeWait: refillSpareDescriptions,
  allocateSurface: (geometry) => MemfdSurface.allocate(geometry),
  watchReleases: () => InotifyReleaseWatcher.create(),
  listen: (name, allowPeer, limits) => new SocketListener(name, allowPeer, limits),
  connect: (name, allowPeer, limits, deadline, signal) =>
    connectSocket(name, allowPeer, limits, deadline, signal),
  // Its own open file description with its own lock: the receiver's hold is independent of ours.
  duplicateHandle: (handle) => exportLockedHandle(reopen(handle)),
  releaseHandle: (handle) => closeQuietly(handle),
  nameAbsent: (error) =>
    error instanceof SystemCallError &&
    (error.errno === ERRNO.ECONNREFUSED || error.errno === ERRNO.ENOENT),
  endpointStates(endpoints) {
    const listening = listeningSockets();
    return endpoints.map(({ name, pid, address }) => {
      // The address must be the one its name binds: an entry naming another address is no endpoint.
      if (address !== (name.includes("/") ? name : `@${ABSTRACT_PREFIX}${name}`)) return "dead";
      const inodes = listening.get(address);
      if (!inodes || !processExists(pid)) return "dead";
      return holdsSocket(pid, inodes);
    });
  },
};
