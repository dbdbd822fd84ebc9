/**
 * What a memfd that came from elsewhere (a peer's message, or a foreign
 * allocator a bridge adopts) must be before this process maps it, checked in
 * the one order that leaves its sender nothing to change afterwards:
 *
 * 1. **seals** (`F_GET_SEALS`): only a memfd answers with shrink and grow
 *    seals, and once `F_SEAL_SHRINK | F_SEAL_GROW` are on, the size can never
 *    change again. Write seals (`F_SEAL_WRITE`, `F_SEAL_FUTURE_WRITE`) refuse
 *    our writable mapping.
 * 2. **size** (`statx`), read only now, when it is final. Reading it before
 *    the seals let a sender shrink the memfd between the two checks and kill
 *    the receiver with `SIGBUS` on its first touch past the new end.
 * 3. **access mode** (`F_GETFL`): the descriptor must be `O_RDWR`; a
 *    receiver never widens the access it was given.
 * 4. **filesystem** (`fstatfs`): not hugetlbfs, whose mappings fail
 *    (`ENOMEM`) or fault (`SIGBUS`, after a hole is punched) when the huge
 *    page pool runs dry.
 *
 * Then {@link mapVerifiedMemfd} reopens and maps it, turning the refusals a
 * sender can still provoke (a mode that denies our open, a write seal added
 * after the check) into {@link ProtocolError}s too. What the sender can do
 * after that cannot hurt the mapping: sizes are sealed, `F_SEAL_WRITE` cannot
 * be added while our writable mapping exists (`EBUSY`), `F_SEAL_FUTURE_WRITE`
 * and `chmod` only affect later `mmap`s and `open`s, and punched holes read
 * back as zeros on shmem.
 *
 * @module
 */

import { ProtocolError, SystemCallError } from "../core/errors.ts";
import { type SurfaceGeometry, validateGeometry } from "../core/geometry.ts";
import {
  closeQuietly,
  ERRNO,
  errnoName,
  fstatfsType,
  fstatx,
  libc,
  readErrno,
  reopen,
  systemError,
  tryMapShared,
} from "./libc.ts";
import { LINUX } from "./structs.ts";
import type { Pointer } from "../../ffi/runtime.ts";

const SIZE_SEALS = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW;
const WRITE_SEALS = LINUX.F_SEAL_WRITE | LINUX.F_SEAL_FUTURE_WRITE;

/** The limits a received memfd is checked against. */
export interface MemfdLimits {
  /** The largest `allocSize` accepted (a channel's `maxSurfaceBytes`). */
  readonly maxSurfaceBytes: number;
}

/** What {@link verifyMemfd} established about a descriptor. */
export interface VerifiedMemfd {
  /** The inode number: the surface's id, the same in every process. */
  readonly id: number;
  /** `st_dev` major and minor and `st_ino`: the identity of the memory. */
  readonly devMajor: number;
  readonly devMinor: number;
  readonly ino: bigint;
  /** The seals seen (`F_SEAL_*`), shrink and grow among them. */
  readonly seals: number;
  /** The size in bytes: final, equal to `geometry.allocSize`. */
  readonly size: number;
}

/**
 * Checks that `fd` is memory this process may safely map as a surface of
 * `geometry`: the geometry is sound and within `limits`, and `fd` is an
 * `O_RDWR` descriptor of a memfd (not hugetlbfs) sealed against shrinking
 * and growing, not write-sealed, of exactly `geometry.allocSize` bytes.
 * Seals are read before the size, so the size read is final. Throws
 * {@link ProtocolError} naming the first check that failed (the caller
 * still owns `fd`), or `SystemCallError` for a failure of this process's
 * own (e.g. `EMFILE`). Several syscalls: call it once per new inode and
 * {@link checkKnownMemfd} for an inode already verified.
 */
export function verifyMemfd(
  fd: number,
  geometry: SurfaceGeometry,
  limits: MemfdLimits,
): VerifiedMemfd {
  const problem = validateGeometry(geometry);
  if (problem) throw new ProtocolError("BAD_GEOMETRY", problem);
  if (geometry.allocSize > limits.maxSurfaceBytes) {
    throw new ProtocolError(
      "TOO_LARGE",
      `surface of ${geometry.allocSize} bytes exceeds the limit of ${limits.maxSurfaceBytes}`,
    );
  }
  const lib = libc();
  // 1. Seals. Only shmem and hugetlbfs files answer; O_PATH descriptors fail with EBADF.
  const seals = lib.fcntl(fd, LINUX.F_GET_SEALS, 0);
  if (seals < 0) {
    const errno = readErrno();
    throw new ProtocolError(
      "NOT_SHARED_MEMORY",
      `received fd is not a memfd (F_GET_SEALS: ${errnoName(errno)}${
        errno === ERRNO.EBADF ? ", an O_PATH descriptor?" : ""
      })`,
    );
  }
  if ((seals & SIZE_SEALS) !== SIZE_SEALS) {
    // A named tmpfs file (/dev/shm) answers too, with F_SEAL_SEAL alone: it can never be sealed.
    const stat = fstatx(fd);
    if ((stat.mode & LINUX.S_IFMT) !== LINUX.S_IFREG || stat.nlink > 0) {
      throw new ProtocolError(
        "NOT_SHARED_MEMORY",
        `received fd is a file with a name (a /dev/shm or hugetlbfs file?), not a memfd ` +
          `(seals 0x${seals.toString(16)})`,
      );
    }
    throw new ProtocolError(
      "UNSEALED",
      `received memfd is not sealed against shrink and grow (seals 0x${seals.toString(16)}): ` +
        "its sender could truncate it under our mapping",
    );
  }
  if (seals & WRITE_SEALS) {
    throw new ProtocolError(
      "WRITE_SEALED",
      `received memfd is sealed against writing (seals 0x${seals.toString(16)}); ` +
        "surfaces are mapped writable",
    );
  }
  // 2. Size, final now that shrink and grow are sealed.
  const stat = fstatx(fd);
  if ((stat.mode & LINUX.S_IFMT) !== LINUX.S_IFREG) {
    throw new ProtocolError(
      "NOT_SHARED_MEMORY",
      `received fd is not a regular file (mode 0o${stat.mode.toString(8)})`,
    );
  }
  checkSize(Number(stat.size), geometry);
  // 3. Access mode.
  checkAccessMode(fd);
  // 4. Filesystem: shmem, not hugetlbfs.
  if (fstatfsType(fd) === LINUX.HUGETLBFS_MAGIC) {
    throw new ProtocolError(
      "HUGE_PAGES",
      "received memfd is backed by huge pages (MFD_HUGETLB): mapping it fails or faults " +
        "when the huge page pool runs dry",
    );
  }
  return {
    id: Number(stat.ino),
    devMajor: stat.devMajor,
    devMinor: stat.devMinor,
    ino: stat.ino,
    seals,
    size: geometry.allocSize,
  };
}

/**
 * The checks for a new descriptor of an inode that {@link verifyMemfd}
 * already passed (e.g. one in a mapping cache): its seals can only have
 * grown, so `size` (from this descriptor's `statx`, taken before or after —
 * the size cannot change any more) is final; what is left to check
 * is that size against this message's `geometry.allocSize`, and this
 * descriptor's access mode. Two cheap checks, no syscall but one `fcntl`.
 */
export function checkKnownMemfd(fd: number, size: number, geometry: SurfaceGeometry): void {
  checkSize(size, geometry);
  checkAccessMode(fd);
}

/**
 * `size` as a number (no BigInt per frame): a size past 2^53 reads as a
 * number past `Number.MAX_SAFE_INTEGER`, never equal to a valid `allocSize`.
 */
function checkSize(size: number, geometry: SurfaceGeometry): void {
  if (size !== geometry.allocSize) {
    throw new ProtocolError(
      "SIZE_MISMATCH",
      `received memfd has ${size} bytes, the header's allocSize is ${geometry.allocSize}`,
    );
  }
}

function checkAccessMode(fd: number): void {
  const flags = libc().fcntl(fd, LINUX.F_GETFL, 0);
  if (flags < 0) throw systemError("fcntl(F_GETFL)");
  if ((flags & LINUX.O_ACCMODE) !== LINUX.O_RDWR) {
    const mode = ["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][flags & LINUX.O_ACCMODE];
    throw new ProtocolError(
      "BAD_ACCESS",
      `received fd was opened ${mode}; a surface descriptor must be O_RDWR`,
    );
  }
}

/**
 * Maps a descriptor that {@link verifyMemfd} passed, read-write and shared,
 * through a new description of the memfd (so that a lock on `fd` does not
 * live as long as the mapping). The caller still owns `fd`; the returned
 * mapping of `size` bytes is the caller's to `munmap`. Throws
 * {@link ProtocolError} when the sender's doing refuses it: `NO_PERMISSION`
 * (the memfd's mode denies this process a read-write open), `WRITE_SEALED`
 * (a write seal added after the check), `UNMAPPABLE` (any other refusal of
 * the `mmap` that is not this process running out of something);
 * `SystemCallError` for `EMFILE`, `ENFILE`, `ENOMEM`, `EAGAIN`.
 */
export function mapVerifiedMemfd(fd: number, size: number): Pointer {
  let mapFd: number;
  try {
    mapFd = reopen(fd, LINUX.O_RDWR);
  } catch (error) {
    const errno = error instanceof SystemCallError ? error.errno : 0;
    if (errno === ERRNO.EACCES || errno === ERRNO.EPERM) {
      const mode = fstatx(fd).mode & 0o7777;
      throw new ProtocolError(
        "NO_PERMISSION",
        `received memfd (mode 0o${mode.toString(8)}) cannot be opened read-write by this ` +
          `process (open(/proc/self/fd): ${errnoName(errno)})`,
      );
    }
    throw error;
  }
  try {
    const pointer = tryMapShared(mapFd, size);
    if (pointer !== null) return pointer;
    const errno = readErrno();
    if (isLocalShortage(errno)) throw systemError("mmap", errno);
    const seals = libc().fcntl(fd, LINUX.F_GET_SEALS, 0);
    if (seals >= 0 && seals & WRITE_SEALS) {
      throw new ProtocolError(
        "WRITE_SEALED",
        `received memfd was sealed against writing after it was checked (mmap: ${
          errnoName(errno)
        })`,
      );
    }
    throw new ProtocolError(
      "UNMAPPABLE",
      `received memfd cannot be mapped shared read-write (mmap: ${errnoName(errno)})`,
    );
  } finally {
    closeQuietly(mapFd);
  }
}

/** errno values of an `mmap` that say this process ran out of something, not that the memory is bad. */
function isLocalShortage(errno: number): boolean {
  return errno === ERRNO.ENOMEM || errno === ERRNO.EAGAIN || errno === ERRNO.EMFILE ||
    errno === ERRNO.ENFILE;
}
