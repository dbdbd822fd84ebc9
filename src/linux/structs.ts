/**
 * Byte layouts of the Linux structs surfaceport passes to libc, as small pure
 * codecs with explicit offsets. x86_64 and aarch64 (LP64, glibc) agree on
 * every offset here; `tests/linux_structs_test.ts` pins them to golden bytes.
 *
 * @module
 */

import { runtime } from "../../ffi/runtime.ts";

/** aarch64 numbers four `open` flags differently from x86_64 (asm-generic vs x86 fcntl.h). */
const ARM64 = runtime.arch === "aarch64";

/** Constants from the Linux UAPI / glibc headers (identical on x86_64 and aarch64 unless marked). */
export const LINUX = {
  AF_UNIX: 1,
  SOCK_SEQPACKET: 5,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  SO_PEERCRED: 17,
  /** ioctl: bytes a socket sent that its peer has not read yet (`TIOCOUTQ`). */
  SIOCOUTQ: 0x5411,
  SO_SNDTIMEO: 21,
  SO_SNDBUF: 7,
  MSG_CTRUNC: 0x8,
  MSG_TRUNC: 0x20,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  SHUT_RDWR: 2,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  O_RDONLY: 0,
  O_RDWR: 2,
  O_CLOEXEC: 0o2000000,
  /** 0o40000 on aarch64 */
  O_DIRECTORY: ARM64 ? 0o40000 : 0o200000,
  /** 0o100000 on aarch64 */
  O_NOFOLLOW: ARM64 ? 0o100000 : 0o400000,
  O_WRONLY: 1,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_NONBLOCK: 0o4000,
  O_PATH: 0o10000000,
  MFD_CLOEXEC: 1,
  MFD_ALLOW_SEALING: 2,
  F_GETFD: 1,
  F_GETFL: 3,
  O_ACCMODE: 3,
  F_DUPFD_CLOEXEC: 1030,
  F_ADD_SEALS: 1033,
  F_GET_SEALS: 1034,
  F_SEAL_SEAL: 1,
  F_SEAL_SHRINK: 2,
  F_SEAL_GROW: 4,
  F_SEAL_WRITE: 8,
  F_SEAL_FUTURE_WRITE: 0x10,
  F_OFD_GETLK: 36,
  F_OFD_SETLK: 37,
  F_RDLCK: 0,
  F_WRLCK: 1,
  F_UNLCK: 2,
  SEEK_SET: 0,
  PROT_READ: 1,
  PROT_WRITE: 2,
  MAP_SHARED: 1,
  AT_EMPTY_PATH: 0x1000,
  AT_FDCWD: -100,
  AT_SYMLINK_NOFOLLOW: 0x100,
  STATX_TYPE: 0x1,
  STATX_MODE: 0x2,
  STATX_NLINK: 0x4,
  STATX_UID: 0x8,
  STATX_INO: 0x100,
  STATX_SIZE: 0x200,
  S_IFMT: 0o170000,
  S_IFREG: 0o100000,
  S_IFSOCK: 0o140000,
  S_IFLNK: 0o120000,
  S_IFDIR: 0o040000,
  S_IFIFO: 0o010000,
  S_ISVTX: 0o1000,
  TMPFS_MAGIC: 0x01021994,
  HUGETLBFS_MAGIC: 0x958458f6,
  IN_NONBLOCK: 0o4000,
  IN_CLOEXEC: 0o2000000,
  IN_CLOSE_WRITE: 0x8,
  IN_CLOSE_NOWRITE: 0x10,
  EFD_CLOEXEC: 0o2000000,
  EFD_NONBLOCK: 0o4000,
} as const;

// --- struct iovec { void *iov_base; size_t iov_len; } ----------------------

/** `sizeof(struct iovec)` */
export const IOVEC_SIZE = 16;

/** Writes one `struct iovec` at `offset`. */
export function encodeIovec(view: DataView, offset: number, base: bigint, length: number): void {
  view.setBigUint64(offset + 0, base, true);
  view.setBigUint64(offset + 8, BigInt(length), true);
}

// --- struct msghdr ----------------------------------------------------------

/** `sizeof(struct msghdr)` */
export const MSGHDR_SIZE = 56;

/** The fields of a `struct msghdr`; pointers as addresses. */
export interface Msghdr {
  name: bigint;
  nameLength: number;
  iov: bigint;
  iovLength: number;
  control: bigint;
  controlLength: number;
  flags: number;
}

/**
 * Writes a `struct msghdr`: name@0 (ptr), namelen@8 (u32), iov@16 (ptr),
 * iovlen@24 (size_t), control@32 (ptr), controllen@40 (size_t), flags@48 (i32).
 */
export function encodeMsghdr(view: DataView, m: Msghdr): void {
  view.setBigUint64(0, m.name, true);
  view.setUint32(8, m.nameLength, true);
  view.setUint32(12, 0, true);
  view.setBigUint64(16, m.iov, true);
  view.setBigUint64(24, BigInt(m.iovLength), true);
  view.setBigUint64(32, m.control, true);
  view.setBigUint64(40, BigInt(m.controlLength), true);
  view.setInt32(48, m.flags, true);
  view.setUint32(52, 0, true);
}

/** Reads back a `struct msghdr` (the kernel updates controllen and flags on receive). */
export function decodeMsghdr(view: DataView): Msghdr {
  return {
    name: view.getBigUint64(0, true),
    nameLength: view.getUint32(8, true),
    iov: view.getBigUint64(16, true),
    iovLength: Number(view.getBigUint64(24, true)),
    control: view.getBigUint64(32, true),
    controlLength: Number(view.getBigUint64(40, true)),
    flags: view.getInt32(48, true),
  };
}

/** Offset of `msg_controllen` inside `struct msghdr`. */
export const MSGHDR_CONTROLLEN_OFFSET = 40;
/** Offset of `msg_flags` inside `struct msghdr`. */
export const MSGHDR_FLAGS_OFFSET = 48;
/** Offset of `iov_len` of the first iovec (relative to the iovec). */
export const IOVEC_LEN_OFFSET = 8;

// --- struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } ----

/** `sizeof(struct cmsghdr)`, and the offset of `CMSG_DATA`. */
export const CMSGHDR_SIZE = 16;

/** `CMSG_ALIGN(n)`: control data is aligned to `size_t`. */
export function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}

/** `CMSG_LEN(n)`: header plus `n` data bytes, unpadded. */
export function cmsgLen(n: number): number {
  return CMSGHDR_SIZE + n;
}

/** `CMSG_SPACE(n)`: header plus `n` data bytes, padded. */
export function cmsgSpace(n: number): number {
  return CMSGHDR_SIZE + cmsgAlign(n);
}

/**
 * Writes one `SCM_RIGHTS` control message carrying `fds` at offset 0 and
 * returns the `msg_controllen` to use (`CMSG_SPACE(4 * fds.length)`).
 */
export function encodeRights(view: DataView, fds: readonly number[]): number {
  const dataLength = 4 * fds.length;
  view.setBigUint64(0, BigInt(cmsgLen(dataLength)), true);
  view.setInt32(8, 1, /* SOL_SOCKET */ true);
  view.setInt32(12, 1, /* SCM_RIGHTS */ true);
  for (let i = 0; i < fds.length; i++) view.setInt32(CMSGHDR_SIZE + 4 * i, fds[i], true);
  const space = cmsgSpace(dataLength);
  for (let o = CMSGHDR_SIZE + dataLength; o < space; o++) view.setUint8(o, 0);
  return space;
}

/** What a received control buffer held. */
export interface DecodedControl {
  /** Every descriptor found in `SCM_RIGHTS` messages, in order. */
  fds: number[];
  /** Control messages that were not `SCM_RIGHTS` (level, type). */
  others: { level: number; type: number }[];
  /** True if a header claimed more bytes than the buffer holds (malformed). */
  malformed: boolean;
}

/**
 * Walks the control messages in the first `length` bytes of `view` like
 * `CMSG_FIRSTHDR`/`CMSG_NXTHDR` and collects every passed descriptor, so
 * that the caller can close all of them whatever else is wrong.
 */
export function decodeControl(view: DataView, length: number): DecodedControl {
  const fds: number[] = [];
  const others: { level: number; type: number }[] = [];
  let malformed = false;
  let offset = 0;
  const end = Math.min(length, view.byteLength);
  while (offset + CMSGHDR_SIZE <= end) {
    const cmsgLength = Number(view.getBigUint64(offset, true));
    const level = view.getInt32(offset + 8, true);
    const type = view.getInt32(offset + 12, true);
    if (cmsgLength < CMSGHDR_SIZE || offset + cmsgLength > end) {
      malformed = true;
      break;
    }
    if (level === 1 && type === 1) {
      const count = Math.floor((cmsgLength - CMSGHDR_SIZE) / 4);
      for (let i = 0; i < count; i++) fds.push(view.getInt32(offset + CMSGHDR_SIZE + 4 * i, true));
    } else {
      others.push({ level, type });
    }
    offset += cmsgAlign(cmsgLength);
  }
  return { fds, others, malformed };
}

/** Descriptors found by {@link scanControlRights}: the first `count` of `fds`. */
export interface ControlRights {
  /** Room for every descriptor a control buffer can hold: its byte length / 4. */
  readonly fds: Int32Array;
  count: number;
}

/**
 * {@link decodeControl} for the receive hot path: collects the `SCM_RIGHTS`
 * descriptors into `into` (reused between calls; `into.fds` must have room
 * for `view.byteLength / 4`) and returns true if the control data is
 * malformed. Same walk, same rules; allocates nothing.
 */
export function scanControlRights(view: DataView, length: number, into: ControlRights): boolean {
  into.count = 0;
  let offset = 0;
  const end = Math.min(length, view.byteLength);
  while (offset + CMSGHDR_SIZE <= end) {
    // cmsg_len is a size_t: a high word makes it larger than any buffer (malformed).
    const cmsgLength = view.getUint32(offset + 4, true) !== 0
      ? Infinity
      : view.getUint32(offset, true);
    const level = view.getInt32(offset + 8, true);
    const type = view.getInt32(offset + 12, true);
    if (cmsgLength < CMSGHDR_SIZE || offset + cmsgLength > end) return true;
    if (level === 1 && type === 1) {
      const count = Math.floor((cmsgLength - CMSGHDR_SIZE) / 4);
      for (let i = 0; i < count; i++) {
        into.fds[into.count++] = view.getInt32(offset + CMSGHDR_SIZE + 4 * i, true);
      }
    }
    offset += cmsgAlign(cmsgLength);
  }
  return false;
}

// --- struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; } -----

/** `sizeof(struct sockaddr_un)` */
export const SOCKADDR_UN_SIZE = 110;

/**
 * Encodes a `struct sockaddr_un` and returns it with the address length to
 * pass to `bind`/`connect`. `abstract` puts a NUL first (Linux abstract
 * namespace: no file, gone with the socket); the length then covers exactly
 * the name, which is how abstract names are matched.
 */
export function encodeSockaddrUn(
  path: Uint8Array,
  abstract: boolean,
): { bytes: Uint8Array; length: number } {
  const bytes = new Uint8Array(SOCKADDR_UN_SIZE);
  const max = 107; // 108 bytes of sun_path, one of them the leading (abstract) or trailing NUL
  if (path.length === 0 || path.length > max) {
    throw new RangeError(`a socket name must be 1 to ${max} bytes, got ${path.length}`);
  }
  bytes[0] = 1; // AF_UNIX, little-endian u16
  bytes[1] = 0;
  if (abstract) {
    bytes.set(path, 3);
    return { bytes, length: 3 + path.length };
  }
  bytes.set(path, 2);
  return { bytes, length: 2 + path.length + 1 };
}

// --- struct ucred { pid_t pid; uid_t uid; gid_t gid; } ---------------------

/** `sizeof(struct ucred)` */
export const UCRED_SIZE = 12;

/** Reads a `struct ucred`. */
export function decodeUcred(view: DataView): { pid: number; uid: number; gid: number } {
  return {
    pid: view.getInt32(0, true),
    uid: view.getUint32(4, true),
    gid: view.getUint32(8, true),
  };
}

// --- struct flock -----------------------------------------------------------

/** `sizeof(struct flock)` */
export const FLOCK_SIZE = 32;

/**
 * Writes a whole-file `struct flock` for the OFD lock commands:
 * l_type@0 (i16), l_whence@2 (i16), l_start@8 (i64), l_len@16 (i64),
 * l_pid@24 (i32, must be 0 for OFD locks).
 */
export function encodeFlock(view: DataView, type: number): void {
  view.setInt16(0, type, true);
  view.setInt16(2, 0, /* SEEK_SET */ true);
  view.setUint32(4, 0, true);
  view.setBigInt64(8, 0n, true);
  view.setBigInt64(16, 0n, true);
  view.setInt32(24, 0, true);
  view.setUint32(28, 0, true);
}

/** Reads `l_type` back from a `struct flock` (`F_UNLCK` after `F_OFD_GETLK` means no conflict). */
export function decodeFlockType(view: DataView): number {
  return view.getInt16(0, true);
}

// --- struct dirent ----------------------------------------------------------

/** Offset of `d_name` in glibc's `struct dirent` on LP64 (after d_ino, d_off, d_reclen, d_type). */
export const DIRENT_NAME_OFFSET = 19;

// --- struct statx -----------------------------------------------------------

/** `sizeof(struct statx)` */
export const STATX_SIZE = 256;

/** The fields of `struct statx` surfaceport reads. */
export interface Statx {
  mask: number;
  mode: number;
  nlink: number;
  /** The owner (asked for with `STATX_UID`). */
  uid: number;
  ino: bigint;
  size: bigint;
  devMajor: number;
  devMinor: number;
}

/**
 * Reads `struct statx`: mask@0 (u32), nlink@16 (u32), uid@20 (u32), mode@28 (u16), ino@32 (u64),
 * size@40 (u64), dev_major@136 (u32), dev_minor@140 (u32).
 */
export function decodeStatx(view: DataView): Statx {
  return {
    mask: view.getUint32(0, true),
    nlink: view.getUint32(16, true),
    uid: view.getUint32(20, true),
    mode: view.getUint16(28, true),
    ino: view.getBigUint64(32, true),
    size: view.getBigUint64(40, true),
    devMajor: view.getUint32(136, true),
    devMinor: view.getUint32(140, true),
  };
}

/**
 * The fields of `struct statx` the receive path reads, as plain numbers (no
 * BigInt allocation per frame). A 64-bit value past 2^53 reads as
 * `Infinity`: larger than any size or inode a caller compares it with.
 */
export interface StatxNumbers {
  mode: number;
  ino: number;
  size: number;
  devMajor: number;
  devMinor: number;
}

function u64Number(view: DataView, offset: number): number {
  const high = view.getUint32(offset + 4, true);
  return high >= 0x200000 ? Infinity : high * 0x1_0000_0000 + view.getUint32(offset, true);
}

/** Reads the same fields as {@link decodeStatx} into `into`, allocating nothing. */
export function decodeStatxInto(view: DataView, into: StatxNumbers): StatxNumbers {
  into.mode = view.getUint16(28, true);
  into.ino = u64Number(view, 32);
  into.size = u64Number(view, 40);
  into.devMajor = view.getUint32(136, true);
  into.devMinor = view.getUint32(140, true);
  return into;
}

// --- struct statfs ---------------------------------------------------------

/** `sizeof(struct statfs)` (x86_64 and aarch64 glibc). */
export const STATFS_SIZE = 120;

/** Reads `f_type` of `struct statfs` (a `long` at offset 0): the filesystem's magic number. */
export function decodeStatfsType(view: DataView): number {
  return Number(view.getBigUint64(0, true) & 0xffffffffn);
}

// --- struct pollfd { int fd; short events; short revents; } ----------------

/** `sizeof(struct pollfd)` */
export const POLLFD_SIZE = 8;

/** Writes `struct pollfd` number `index`. */
export function encodePollfd(view: DataView, index: number, fd: number, events: number): void {
  view.setInt32(index * 8, fd, true);
  view.setInt16(index * 8 + 4, events, true);
  view.setInt16(index * 8 + 6, 0, true);
}

/** Reads `revents` of `struct pollfd` number `index`. */
export function decodePollRevents(view: DataView, index: number): number {
  return view.getInt16(index * 8 + 6, true);
}
