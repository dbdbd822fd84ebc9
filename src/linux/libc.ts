/**
 * Thin helpers over the libc symbols: errno, typed failures, C strings and
 * the few descriptor operations every Linux module needs.
 *
 * @module
 */

import { type Libc, libc } from "../../ffi/linux.ts";
import { type Pointer, runtime } from "../../ffi/runtime.ts";
import { type PeerCredentials, SystemCallError } from "../core/errors.ts";
import {
  decodeFlockType,
  decodeStatfsType,
  decodeStatx,
  decodeStatxInto,
  decodeUcred,
  encodeFlock,
  FLOCK_SIZE,
  LINUX,
  STATFS_SIZE,
  type Statx,
  STATX_SIZE,
  type StatxNumbers,
  UCRED_SIZE,
} from "./structs.ts";

export { libc };
export type { Libc };

/** errno values surfaceport branches on. */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EEXIST: 17,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  EPIPE: 32,
  ENOBUFS: 105,
  ECONNRESET: 104,
  ECONNREFUSED: 111,
  EADDRINUSE: 98,
  ETOOMANYREFS: 109,
} as const;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  27: "EFBIG",
  28: "ENOSPC",
  32: "EPIPE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  88: "ENOTSOCK",
  90: "EMSGSIZE",
  91: "EPROTOTYPE",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  104: "ECONNRESET",
  105: "ENOBUFS",
  107: "ENOTCONN",
  109: "ETOOMANYREFS",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
};

/** The symbolic name of an errno value, e.g. `errnoName(24) === "EMFILE"`. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}

/** What a user can do about common errno values, appended to error messages. */
const HINTS: Record<number, string> = {
  12: "out of memory or address space; close surfaces you no longer use",
  23: "the system-wide file table is full",
  24: "this process has too many open descriptors; close surfaces and frames, or raise `ulimit -n`",
  13: "permission denied",
  98: "another listener already uses this name; pick another or close it",
  111: "nothing is listening under this name; start the listener first",
  2: "nothing is listening under this name; start the listener first",
  109: "too many descriptors are in flight to a peer that is not reading",
};

/** The JS thread's errno, as a view over glibc's thread-local `int` (made at first use). */
let errnoView: Int32Array | undefined;

/** Reads the calling thread's errno (the JS thread's: only valid right after a synchronous call). */
export function readErrno(): number {
  errnoView ??= new Int32Array(runtime.arrayBufferAt(libc().__errno_location()!, 4));
  return errnoView[0];
}

/** Builds a {@link SystemCallError} for `call` from the current errno (or the one given). */
export function systemError(call: string, errno: number = readErrno()): SystemCallError {
  return new SystemCallError(call, errno, errnoName(errno), HINTS[errno]);
}

/** Returns `result`, or throws a {@link SystemCallError} for `call` if it is negative. */
export function check(call: string, result: number): number {
  if (result < 0) throw systemError(call);
  return result;
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `text` for a `const char *` argument. */
export function cString(text: string): Uint8Array {
  const bytes = new Uint8Array(encoder.encode(text).length + 1);
  encoder.encodeInto(text, bytes);
  return bytes;
}

/** The address of `bytes` as a pointer value, for a field of a C struct built in JS. */
export function addressOf(bytes: Uint8Array): bigint {
  return runtime.addressOf(bytes);
}

/** What `mmap` returns on failure: `(void *)-1`. */
const MAP_FAILED = 0xffffffffffffffffn;

/**
 * `mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`: the
 * mapping, or `null` if it failed (errno says why).
 */
export function tryMapShared(fd: number, size: number): Pointer | null {
  const pointer = libc().mmap(
    null,
    BigInt(size),
    LINUX.PROT_READ | LINUX.PROT_WRITE,
    LINUX.MAP_SHARED,
    fd,
    0n,
  );
  return pointer === null || runtime.pointerValue(pointer) === MAP_FAILED ? null : pointer;
}

/** Closes `fd`, ignoring errors: for cleanup paths where the descriptor is being given up anyway. */
export function closeQuietly(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/**
 * `/proc/self/fd`, opened once (`O_PATH`) for the life of the process:
 * `openat` relative to it skips the path walk through `/proc/self` on every
 * {@link reopen} (measured: 0.4-0.6 µs of ~2 µs). -1 until first use; -2 if
 * it could not be opened (then the full path is used).
 */
let procFdDir = -1;

/** `"N"` as C strings, by descriptor number: the name of a number never changes. */
const fdNames: Uint8Array[] = [];

/**
 * Opens a second, independent open-file-description of `fd` through
 * `/proc/self/fd`. Locks taken on it belong to it alone.
 */
export function reopen(fd: number, flags: number = LINUX.O_RDWR): number {
  const lib = libc();
  if (procFdDir === -1) openProcFdDirectory();
  const result = procFdDir >= 0
    ? lib.openat(procFdDir, fdNames[fd] ??= cString(String(fd)), flags | LINUX.O_CLOEXEC, 0)
    : lib.open(procFdPath(fd), flags | LINUX.O_CLOEXEC, 0);
  return check("open(/proc/self/fd)", result);
}

/**
 * Opens the `/proc/self/fd` directory that {@link reopen} keeps for the life
 * of the process, if it is not open yet (tests open it before taking a
 * descriptor baseline).
 */
export function openProcFdDirectory(): void {
  if (procFdDir !== -1) return;
  const dir = libc().open(
    cString("/proc/self/fd"),
    LINUX.O_PATH | LINUX.O_DIRECTORY | LINUX.O_CLOEXEC,
    0,
  );
  procFdDir = dir >= 0 ? dir : -2;
}

/**
 * A new descriptor number for the same open-file-description as `fd`
 * (`fcntl(F_DUPFD_CLOEXEC)`): it shares the description's OFD locks.
 */
export function dupCloexec(fd: number): number {
  return check("fcntl(F_DUPFD_CLOEXEC)", libc().fcntl(fd, LINUX.F_DUPFD_CLOEXEC, 0));
}

/** `/proc/self/fd/N` as C strings, by descriptor number: the path of a number never changes. */
const procFdPaths: Uint8Array[] = [];

/** `/proc/self/fd/N` as a C string (cached). */
export function procFdPath(fd: number): Uint8Array {
  return procFdPaths[fd] ??= cString(`/proc/self/fd/${fd}`);
}

const flockBuffer = new Uint8Array(FLOCK_SIZE);
const flockView = new DataView(flockBuffer.buffer);

/**
 * Takes a whole-file OFD lock of `type` on `fd` without waiting. Returns false
 * if a conflicting lock is held through another description.
 */
export function trySetOfdLock(fd: number, type: number): boolean {
  encodeFlock(flockView, type);
  if (libc().fcntl_lock(fd, LINUX.F_OFD_SETLK, flockBuffer) === 0) return true;
  const errno = readErrno();
  if (errno === ERRNO.EAGAIN || errno === ERRNO.EACCES) return false;
  throw systemError("fcntl(F_OFD_SETLK)", errno);
}

/**
 * True if another open-file-description holds any OFD lock on the file that
 * `fd` refers to: one `F_OFD_GETLK` asking about a whole-file write lock.
 */
export function isLockedElsewhere(fd: number): boolean {
  encodeFlock(flockView, LINUX.F_WRLCK);
  check("fcntl(F_OFD_GETLK)", libc().fcntl_lock(fd, LINUX.F_OFD_GETLK, flockBuffer));
  return decodeFlockType(flockView) !== LINUX.F_UNLCK;
}

const statxBuffer = new Uint8Array(STATX_SIZE);
const STATX_FIELDS = LINUX.STATX_TYPE | LINUX.STATX_MODE | LINUX.STATX_NLINK | LINUX.STATX_UID |
  LINUX.STATX_INO | LINUX.STATX_SIZE;
const statxView = new DataView(statxBuffer.buffer);
const emptyPath = new Uint8Array(1);

function statxCall(fd: number): void {
  check(
    "statx",
    libc().statx(
      fd,
      emptyPath,
      LINUX.AT_EMPTY_PATH,
      STATX_FIELDS,
      statxBuffer,
    ),
  );
}

/** `statx(fd, "", AT_EMPTY_PATH, ...)`: type, mode, link count, inode, size and device of `fd`. */
export function fstatx(fd: number): Statx {
  statxCall(fd);
  return decodeStatx(statxView);
}

/**
 * `statx(dirFd, path, flags, ...)` (e.g. `AT_SYMLINK_NOFOLLOW`): the fields of
 * {@link fstatx} for `path` relative to `dirFd`, or the errno if it failed.
 */
export function statxAt(dirFd: number, path: string, flags: number): Statx | number {
  if (libc().statx(dirFd, cString(path), flags, STATX_FIELDS, statxBuffer) < 0) return readErrno();
  return decodeStatx(statxView);
}

const statxNumbers: StatxNumbers = { mode: 0, ino: 0, size: 0, devMajor: 0, devMinor: 0 };

/**
 * {@link fstatx} for the receive hot path: the same call, read as numbers
 * into one object that is overwritten by the next call (read it at once).
 */
export function fstatxNumbers(fd: number): StatxNumbers {
  statxCall(fd);
  return decodeStatxInto(statxView, statxNumbers);
}

const statfsBuffer = new Uint8Array(STATFS_SIZE);

/** `fstatfs(fd)`'s `f_type`: the magic number of the filesystem `fd` lives on. */
export function fstatfsType(fd: number): number {
  check("fstatfs", libc().fstatfs(fd, statfsBuffer));
  return decodeStatfsType(new DataView(statfsBuffer.buffer));
}

/** The credentials of the process at the other end of the connected socket `fd` (`SO_PEERCRED`). */
export function peerCredentials(fd: number): PeerCredentials {
  const value = new Uint8Array(UCRED_SIZE);
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, UCRED_SIZE, true);
  check(
    "getsockopt(SO_PEERCRED)",
    libc().getsockopt(fd, LINUX.SOL_SOCKET, LINUX.SO_PEERCRED, value, length),
  );
  return decodeUcred(new DataView(value.buffer));
}
