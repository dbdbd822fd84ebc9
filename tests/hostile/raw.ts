/**
 * A hostile peer made of raw libc calls: it connects to a surfaceport
 * listener like a client would, then sends whatever bytes and descriptors a
 * test asks for — anything `sendmsg` accepts, with no help (or checks) from
 * the library. Also makes the odd descriptors an attacker would pass:
 * pipes, sockets, `/dev/zero`, plain files, unsealed or mis-sized memfds.
 *
 * It has its own `Deno.dlopen` table so that it never depends on the code
 * under test for anything but the struct encoders.
 *
 * @module
 */

import {
  computeGeometry,
  type PixelFormat,
  type SurfaceGeometry,
} from "../../src/core/geometry.ts";
import { socketAddress } from "../../src/linux/listener.ts";
import {
  cmsgLen,
  cmsgSpace,
  encodeIovec,
  encodeMsghdr,
  IOVEC_SIZE,
  LINUX,
  MSGHDR_SIZE,
} from "../../src/linux/structs.ts";
import { encodeHeader, HEADER_SIZE, META_NONE } from "../../src/wire/wire.ts";

const symbols = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof symbols> | undefined;

/** The raw libc of the attacker. */
export function rawLibc(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", symbols);
  return lib.symbols;
}

function errno(): number {
  return new Deno.UnsafePointerView(rawLibc().__errno_location()!).getInt32();
}

function checked(call: string, result: number): number {
  if (result < 0) throw new Error(`${call} failed: errno ${errno()}`);
  return result;
}

function cString(text: string): Uint8Array {
  return new TextEncoder().encode(text + "\0");
}

/** Closes every descriptor in `fds` (those < 0 are skipped). */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) if (fd >= 0) rawLibc().close(fd);
}

/** Both ends of a new pipe: `[read, write]`. */
export function makePipe(): [number, number] {
  const fds = new Int32Array(2);
  checked("pipe2", rawLibc().pipe2(new Uint8Array(fds.buffer), LINUX.O_CLOEXEC));
  return [fds[0], fds[1]];
}

/** A new, unconnected Unix stream socket. */
export function makeSocket(): number {
  return checked(
    "socket",
    rawLibc().socket(LINUX.AF_UNIX, 1 /* SOCK_STREAM */ | LINUX.SOCK_CLOEXEC, 0),
  );
}

/** A new description of the file `fd` refers to, opened through `/proc/self/fd` with `flags`. */
export function reopenAs(fd: number, flags: number): number {
  return openPath(`/proc/self/fd/${fd}`, flags);
}

/** Opens `path` read-write (e.g. `/dev/zero`). */
export function openPath(path: string, flags: number = LINUX.O_RDWR): number {
  return checked(`open(${path})`, rawLibc().open(cString(path), flags | LINUX.O_CLOEXEC, 0));
}

/** Options of {@link makeMemfd}. */
export interface MemfdOptions {
  /** Seals to add (`F_SEAL_*`); default shrink + grow + seal, like a real surface. */
  seals?: number;
  /** Bytes to fill with `fill` (default none). */
  fill?: number;
  /** `memfd_create` flags besides `MFD_CLOEXEC` (default `MFD_ALLOW_SEALING`). */
  flags?: number;
  /** A file mode to set with `fchmod` (default: leave memfd_create's). */
  mode?: number;
}

/** `memfd_create`'s flag for huge pages. */
export const MFD_HUGETLB = 4;
/** `open`'s flag for a path-only descriptor. */
export const O_PATH = 0o10000000;

/** A memfd of `size` bytes with the given seals (none when `seals` is 0). */
export function makeMemfd(size: number, options: MemfdOptions = {}): number {
  const libc = rawLibc();
  const fd = checked(
    "memfd_create",
    libc.memfd_create(
      cString("hostile"),
      LINUX.MFD_CLOEXEC | (options.flags ?? LINUX.MFD_ALLOW_SEALING),
    ),
  );
  try {
    checked("ftruncate", libc.ftruncate(fd, BigInt(size)));
    if (options.fill !== undefined && size > 0) {
      const pointer = libc.mmap(
        null,
        BigInt(size),
        LINUX.PROT_READ | LINUX.PROT_WRITE,
        LINUX.MAP_SHARED,
        fd,
        0n,
      );
      if (pointer === null) throw new Error("mmap failed");
      new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, size)).fill(options.fill);
      libc.munmap(pointer, BigInt(size));
    }
    const seals = options.seals ?? (LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL);
    if (seals) checked("F_ADD_SEALS", libc.fcntl(fd, LINUX.F_ADD_SEALS, seals));
    if (options.mode !== undefined) checked("fchmod", libc.fchmod(fd, options.mode));
    return fd;
  } catch (error) {
    libc.close(fd);
    throw error;
  }
}

/** A well-formed surface message header (plus `meta`) for `geometry`. */
export function surfaceMessage(
  geometry: SurfaceGeometry,
  options: { metaKind?: number; meta?: Uint8Array; sequence?: bigint } = {},
): Uint8Array {
  const meta = options.meta ?? new Uint8Array(0);
  const message = new Uint8Array(HEADER_SIZE + meta.length);
  encodeHeader(
    new DataView(message.buffer),
    geometry,
    options.metaKind ?? META_NONE,
    meta.length,
    options.sequence ?? 0n,
    0,
  );
  message.set(meta, HEADER_SIZE);
  return message;
}

/** The geometry the hostile tests use by default: 64x32 BGRA (8 KiB). */
export function smallGeometry(format: PixelFormat = "BGRA"): SurfaceGeometry {
  return computeGeometry(64, 32, format);
}

/** How a {@link RawPeer} builds its control data. */
export interface RawSendOptions {
  /** Descriptors for one `SCM_RIGHTS` message (default none). */
  fds?: readonly number[];
  /** Control bytes to send as they are, instead of building them from `fds`. */
  control?: Uint8Array;
}

/** A raw `SOCK_SEQPACKET` client socket connected to a surfaceport listener. */
export class RawPeer {
  readonly fd: number;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Connects to the listener under `name` (blocking; a Unix connect completes at once). */
  static connect(name: string): RawPeer {
    const libc = rawLibc();
    const fd = checked(
      "socket",
      libc.socket(LINUX.AF_UNIX, LINUX.SOCK_SEQPACKET | LINUX.SOCK_CLOEXEC, 0),
    );
    const address = socketAddress(name);
    if (libc.connect(fd, address.bytes, address.length) < 0) {
      const e = errno();
      libc.close(fd);
      throw new Error(`connect failed: errno ${e}`);
    }
    return new RawPeer(fd);
  }

  /**
   * One nonblocking `sendmsg` of `bytes` with the control data `options`
   * describe. Returns 0, or the errno if the kernel refused it (11, EAGAIN,
   * when the receiver's queue is full: an in-process attacker must never
   * block the event loop its victim runs on).
   */
  send(bytes: Uint8Array, options: RawSendOptions = {}): number {
    let control = options.control;
    if (!control && options.fds && options.fds.length > 0) {
      control = new Uint8Array(cmsgSpace(4 * options.fds.length));
      const view = new DataView(control.buffer);
      view.setBigUint64(0, BigInt(cmsgLen(4 * options.fds.length)), true);
      view.setInt32(8, LINUX.SOL_SOCKET, true);
      view.setInt32(12, LINUX.SCM_RIGHTS, true);
      options.fds.forEach((fd, i) => view.setInt32(16 + 4 * i, fd, true));
    }
    const payload = bytes.length > 0 ? bytes : new Uint8Array(1); // a valid pointer for iov_base
    const iov = new Uint8Array(IOVEC_SIZE);
    encodeIovec(new DataView(iov.buffer), 0, address(payload), bytes.length);
    const msghdr = new Uint8Array(MSGHDR_SIZE);
    encodeMsghdr(new DataView(msghdr.buffer), {
      name: 0n,
      nameLength: 0,
      iov: address(iov),
      iovLength: 1,
      control: control ? address(control) : 0n,
      controlLength: control?.length ?? 0,
      flags: 0,
    });
    const sent = rawLibc().sendmsg(this.fd, msghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL);
    return sent < 0 ? errno() : 0;
  }

  /**
   * Like {@link send}, but waits (without blocking the event loop) while the
   * receiver's queue is full, up to `ms`; throws on any other refusal.
   */
  async sendWaiting(bytes: Uint8Array, options: RawSendOptions = {}, ms = 10000): Promise<void> {
    const end = performance.now() + ms;
    for (;;) {
      const e = this.send(bytes, options);
      if (e === 0) return;
      if (e !== 11 /* EAGAIN */ || performance.now() > end) {
        throw new Error(`sendmsg failed: errno ${e}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Like {@link send}, but throws if the kernel refused the message. */
  sendOrThrow(bytes: Uint8Array, options: RawSendOptions = {}): void {
    const e = this.send(bytes, options);
    if (e !== 0) throw new Error(`sendmsg failed: errno ${e}`);
  }

  /** Sends a valid surface message with a fresh, properly sealed memfd (closed here after). */
  async sendValid(geometry: SurfaceGeometry = smallGeometry(), fill = 0x5a): Promise<void> {
    const fd = makeMemfd(geometry.allocSize, { fill });
    try {
      await this.sendWaiting(surfaceMessage(geometry), { fds: [fd] });
    } finally {
      closeAll(fd);
    }
  }

  /**
   * Bytes this socket has sent that the peer has not read yet (`SIOCOUTQ`):
   * 0 once the receiver's `recvmsg` took the last message off the queue.
   */
  unreadBytes(): number {
    const value = new Int32Array(1);
    checked("ioctl(SIOCOUTQ)", rawLibc().ioctl(this.fd, 0x5411n, new Uint8Array(value.buffer)));
    return value[0];
  }

  /** Closes the socket. */
  close(): void {
    rawLibc().close(this.fd);
  }
}

function address(bytes: Uint8Array): bigint {
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes));
}
