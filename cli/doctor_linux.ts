/**
 * `surfaceport doctor` on Linux: each kernel feature the memfd backend
 * relies on, probed for real (the call made and its effect checked, never
 * just "the call returned 0"), and one handoff through the library itself.
 * The libc calls are a parameter so that a test can hand in a libc whose
 * seals or locks do nothing and watch the probe say so.
 *
 * @module
 */

import { type Libc, libc, readErrno } from "../src/linux/libc.ts";
import {
  decodeFlockType,
  decodeStatx,
  encodeFlock,
  FLOCK_SIZE,
  LINUX,
  STATX_SIZE,
} from "../src/linux/structs.ts";
import { probeHandoff } from "./doctor_handoff.ts";
import { type Check, probe } from "./doctor_report.ts";

/** The libc calls the probes make, plus errno. */
export type LinuxCalls =
  & Pick<Libc, "memfd_create" | "ftruncate" | "fcntl" | "fcntl_lock" | "open" | "close" | "statx">
  & { errno(): number };

/** The real calls. */
export function realLinuxCalls(): LinuxCalls {
  const lib = libc();
  return {
    memfd_create: lib.memfd_create,
    ftruncate: lib.ftruncate,
    fcntl: lib.fcntl,
    fcntl_lock: lib.fcntl_lock,
    open: lib.open,
    close: lib.close,
    statx: lib.statx,
    errno: readErrno,
  };
}

const EPERM = 1;
const AT_FDCWD = -100;
const SEALS = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL;
const cstr = (text: string) => new TextEncoder().encode(`${text}\0`);

/** A sealable memfd of 4096 bytes; closed by the caller. */
function memfd(calls: LinuxCalls): number {
  const fd = calls.memfd_create(
    cstr("surfaceport-doctor"),
    LINUX.MFD_CLOEXEC | LINUX.MFD_ALLOW_SEALING,
  );
  if (fd < 0) throw new Error(`memfd_create(MFD_ALLOW_SEALING) failed: errno ${calls.errno()}`);
  if (calls.ftruncate(fd, 4096n) !== 0) {
    const errno = calls.errno();
    calls.close(fd);
    throw new Error(`ftruncate(memfd, 4096) failed: errno ${errno}`);
  }
  return fd;
}

/** Sealed memfds: the seals surfaceport adds hold (no grow, no shrink, no more seals). */
export function probeMemfdSeals(calls: LinuxCalls): Check {
  return probe("linux.memfd-seals", () => {
    const fd = memfd(calls);
    try {
      const added = calls.fcntl(fd, LINUX.F_ADD_SEALS, SEALS);
      const seals = calls.fcntl(fd, LINUX.F_GET_SEALS, 0);
      const grow = calls.ftruncate(fd, 8192n) === 0 ? 0 : calls.errno();
      const shrink = calls.ftruncate(fd, 0n) === 0 ? 0 : calls.errno();
      const reseal = calls.fcntl(fd, LINUX.F_ADD_SEALS, LINUX.F_SEAL_WRITE) === 0
        ? 0
        : calls.errno();
      const facts = { added, seals, growErrno: grow, shrinkErrno: shrink, sealAgainErrno: reseal };
      const holds = added === 0 && (seals & SEALS) === SEALS && grow === EPERM &&
        shrink === EPERM && reseal === EPERM;
      return {
        status: holds ? "ok" : "failed",
        detail: holds
          ? `F_SEAL_SHRINK|GROW|SEAL hold: growing, shrinking and sealing again fail with EPERM`
          : `seals do not hold: F_GET_SEALS=${seals}, grow errno ${grow}, shrink errno ${shrink}, ` +
            `seal again errno ${reseal} (each should be EPERM): a peer could resize a surface under its receiver`,
        facts,
      };
    } finally {
      calls.close(fd);
    }
  });
}

/** OFD locks: a read lock through one description is seen through another, and goes with it. */
export function probeOfdLocks(calls: LinuxCalls): Check {
  return probe("linux.ofd-locks", () => {
    const fd = memfd(calls);
    const flock = new Uint8Array(FLOCK_SIZE);
    const view = new DataView(flock.buffer);
    const conflict = () => {
      encodeFlock(view, LINUX.F_WRLCK);
      if (calls.fcntl_lock(fd, LINUX.F_OFD_GETLK, flock) !== 0) {
        throw new Error(`fcntl(F_OFD_GETLK) failed: errno ${calls.errno()}`);
      }
      return { type: decodeFlockType(view), pid: view.getInt32(24, true) };
    };
    let other = -1;
    try {
      other = calls.open(cstr(`/proc/self/fd/${fd}`), LINUX.O_RDWR | LINUX.O_CLOEXEC, 0);
      if (other < 0) throw new Error(`open(/proc/self/fd/N) failed: errno ${calls.errno()}`);
      encodeFlock(view, LINUX.F_RDLCK);
      const locked = calls.fcntl_lock(other, LINUX.F_OFD_SETLK, flock) === 0 ? 0 : calls.errno();
      const whileHeld = conflict();
      calls.close(other);
      other = -1;
      const afterClose = conflict();
      // An OFD lock reports l_pid -1: a classic POSIX lock would name this process.
      const holds = locked === 0 && whileHeld.type === LINUX.F_RDLCK && whileHeld.pid === -1 &&
        afterClose.type === LINUX.F_UNLCK;
      return {
        status: holds ? "ok" : "failed",
        detail: holds
          ? "a read lock through a second description is seen (l_pid -1) and goes when it is closed"
          : `OFD locks do not behave: set ${locked}, seen while held ${
            JSON.stringify(whileHeld)
          }, ` +
            `after close ${
              JSON.stringify(afterClose)
            }: SurfacePool could reuse a surface a consumer holds`,
        facts: { setErrno: locked, whileHeld, afterClose },
      };
    } finally {
      if (other >= 0) calls.close(other);
      calls.close(fd);
    }
  });
}

/**
 * statx on a descriptor (`AT_EMPTY_PATH`, as the receive path calls it): a
 * regular file of the size given, whose inode is the one a path lookup of
 * `/proc/self/fd/N` finds.
 */
export function probeStatx(calls: LinuxCalls): Check {
  return probe("linux.statx", () => {
    const fd = memfd(calls);
    try {
      const mask = LINUX.STATX_TYPE | LINUX.STATX_MODE | LINUX.STATX_INO | LINUX.STATX_SIZE;
      const read = (dirfd: number, path: string, flags: number) => {
        const buffer = new Uint8Array(STATX_SIZE);
        if (calls.statx(dirfd, cstr(path), flags, mask, buffer) !== 0) {
          throw new Error(`statx(${path || "AT_EMPTY_PATH"}) failed: errno ${calls.errno()}`);
        }
        const d = decodeStatx(new DataView(buffer.buffer));
        return { ino: Number(d.ino), size: Number(d.size), mode: d.mode, mask: d.mask };
      };
      const byFd = read(fd, "", LINUX.AT_EMPTY_PATH);
      const byPath = read(AT_FDCWD, `/proc/self/fd/${fd}`, 0);
      const regular = (byFd.mode & 0o170000) === 0o100000;
      const holds = (byFd.mask & mask) === mask && regular && byFd.size === 4096 &&
        byFd.ino === byPath.ino;
      return {
        status: holds ? "ok" : "failed",
        detail: holds
          ? `a regular file of 4096 bytes, inode ${byFd.ino} as a path lookup finds it`
          : `statx disagrees: ${JSON.stringify({ byFd, byPath })} (a 4096-byte regular file, ` +
            "one inode, expected)",
        facts: { byFd, byPath },
      };
    } finally {
      calls.close(fd);
    }
  });
}

/** The registry directory `list()` reads: absent, or ours and private. */
export function probeRegistry(uid: number = libc().geteuid()): Check {
  const path = `/tmp/surfaceport-${uid}`;
  return probe("linux.registry", () => {
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
      return { status: "not-run", detail: `${path} not looked at: no --allow-read` };
    }
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        return {
          status: "ok",
          detail: `${path} does not exist yet (made, mode 0700, by the first listen/publish ` +
            "with --allow-read --allow-write)",
        };
      }
      throw error;
    }
    const mode = (info.mode ?? 0) & 0o7777;
    const facts = { path, isDirectory: info.isDirectory, uid: info.uid, mode: mode.toString(8) };
    const usable = info.isDirectory && info.uid === uid && (mode & 0o077) === 0;
    return {
      status: usable ? "ok" : "failed",
      detail: usable
        ? `${path}: a directory of uid ${uid}, mode ${mode.toString(8)}`
        : `${path} is not a private directory of uid ${uid} (${JSON.stringify(facts)}): ` +
          "list() ignores it and endpoints do not register; remove it",
      facts,
    };
  });
}

/** Every Linux check, in order. */
export async function linuxChecks(calls: LinuxCalls = realLinuxCalls()): Promise<Check[]> {
  return [
    probeMemfdSeals(calls),
    probeOfdLocks(calls),
    probeStatx(calls),
    await probeHandoff("linux.peercred-handoff"),
    probeRegistry(),
  ];
}
