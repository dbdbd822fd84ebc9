/**
 * Binding a listening Unix socket, and what may be replaced at a filesystem
 * name: only a stale socket of this user's, in a directory no other user can
 * change ({@link listeningSocket}); every other file there is left alone
 * and named in the error. Used by the channel listener and the GStreamer
 * unixfd server alike (`listener.ts`).
 *
 * @module
 */

import { SystemCallError } from "../core/errors.ts";
import {
  check,
  closeQuietly,
  cString,
  ERRNO,
  fstatx,
  libc,
  procFdPath,
  readErrno,
  statxAt,
  systemError,
} from "./libc.ts";
import { newEventFd } from "./poller.ts";
import { encodeSockaddrUn, LINUX } from "./structs.ts";

const encoder = new TextEncoder();

/** A Unix socket address: `sockaddr_un` bytes, their length, and the path of a filesystem name. */
export interface UnixSocketAddress {
  bytes: Uint8Array;
  length: number;
  path?: string;
}

/** A listening socket: its descriptor, an eventfd to wake its waits, and its file if it has one. */
export interface ListeningSocket {
  fd: number;
  wakeFd: number;
  /** A filesystem name: the socket file this listener made, removed by {@link removeSocketFile}. */
  file?: SocketFile;
}

/** A socket file a listener made: its path and inode (so only that file is ever removed). */
export interface SocketFile {
  path: string;
  ino: bigint;
}

/**
 * A nonblocking, close-on-exec `AF_UNIX` socket of `type` bound to `address`
 * and listening, with an eventfd to wake its waits. A filesystem name already
 * taken is replaced only if it is a stale socket of this user's (see
 * {@link removeStaleSocket}); anything else there is EADDRINUSE saying what
 * it is. A new socket file gets mode 0600. On failure nothing is left open or
 * on disk. `bindCall` names the bind in errors.
 */
export function listeningSocket(
  type: number,
  address: UnixSocketAddress,
  backlog: number,
  bindCall: string,
): ListeningSocket {
  const lib = libc();
  const fd = check(
    "socket",
    lib.socket(LINUX.AF_UNIX, type | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0),
  );
  let file: SocketFile | undefined;
  try {
    if (lib.bind(fd, address.bytes, address.length) < 0) {
      const errno = readErrno();
      if (errno !== ERRNO.EADDRINUSE || !address.path) throw systemError(bindCall, errno);
      removeStaleSocket(type, address, bindCall);
      check(bindCall, lib.bind(fd, address.bytes, address.length));
    }
    if (address.path) file = restrictToOwner(address.path, bindCall);
    check("listen", lib.listen(fd, backlog));
    return { fd, wakeFd: newEventFd(), file };
  } catch (error) {
    closeQuietly(fd);
    // Our own socket file must not outlive a listener that never came to be.
    if (file) removeSocketFile(file);
    throw error;
  }
}

/**
 * Removes the socket file a listener made, unless something else has taken
 * its name since (then that is not ours to delete).
 */
export function removeSocketFile(file: SocketFile): void {
  const now = statxAt(LINUX.AT_FDCWD, file.path, LINUX.AT_SYMLINK_NOFOLLOW);
  if (typeof now === "number" || now.ino !== file.ino) return;
  if ((now.mode & LINUX.S_IFMT) !== LINUX.S_IFSOCK) return;
  libc().unlink(cString(file.path));
}

/**
 * Gives the socket file just bound at `path` mode 0600, through an `O_PATH`
 * descriptor opened without following a link: if another user swapped the
 * name for a link meanwhile, the chmod must not reach the link's target.
 */
function restrictToOwner(path: string, bindCall: string): SocketFile {
  const lib = libc();
  const fd = lib.open(cString(path), LINUX.O_PATH | LINUX.O_NOFOLLOW | LINUX.O_CLOEXEC, 0);
  if (fd < 0) throw systemError(`open(${path}, O_PATH | O_NOFOLLOW)`);
  try {
    const stat = fstatx(fd);
    if ((stat.mode & LINUX.S_IFMT) !== LINUX.S_IFSOCK || stat.uid !== lib.geteuid()) {
      throw occupied(bindCall, path, `was replaced by ${describe(stat)} right after bind`);
    }
    check("chmod", lib.chmod(procFdPath(fd), 0o600));
    return { path, ino: stat.ino };
  } finally {
    closeQuietly(fd);
  }
}

/** What is at a name, for errors: `"a regular file of uid 0"`. */
function describe(stat: { mode: number; uid: number }): string {
  const kind = {
    [LINUX.S_IFREG]: "a regular file",
    [LINUX.S_IFLNK]: "a symbolic link",
    [LINUX.S_IFDIR]: "a directory",
    [LINUX.S_IFIFO]: "a FIFO",
    [LINUX.S_IFSOCK]: "a socket",
  }[stat.mode & LINUX.S_IFMT] ?? "a device or other special file";
  return `${kind} of uid ${stat.uid}`;
}

/** EADDRINUSE for a filesystem name that surfaceport will not replace, saying why. */
function occupied(bindCall: string, path: string, why: string): SystemCallError {
  return new SystemCallError(
    bindCall,
    ERRNO.EADDRINUSE,
    "EADDRINUSE",
    `${JSON.stringify(path)} ${why}. surfaceport replaces only a socket of its own user that ` +
      "nothing accepts on; remove it yourself if it is not needed, or pick another name",
  );
}

/**
 * Removes the file that made `bind` fail with EADDRINUSE, if and only if it
 * is a socket (the name itself, not a link's target) owned by this user
 * (root included: root replaces only root's sockets) that nothing accepts on.
 * Anything else throws {@link occupied}. The checks and the unlink go through
 * one descriptor of the directory, and they are made only in a directory that
 * no other user can change (owned by this user or root, not writable by
 * others unless sticky): otherwise another user could swap the checked socket
 * for a link or another file between the check and the unlink.
 */
function removeStaleSocket(type: number, address: UnixSocketAddress, bindCall: string): void {
  const lib = libc();
  const path = address.path!;
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const base = path.slice(slash + 1);
  if (base === "" || base === "." || base === "..") {
    throw occupied(bindCall, path, "names a directory");
  }
  const dirFd = lib.open(cString(dir), LINUX.O_PATH | LINUX.O_DIRECTORY | LINUX.O_CLOEXEC, 0);
  if (dirFd < 0) throw systemError(`open(${dir})`);
  try {
    const me = lib.geteuid();
    const folder = fstatx(dirFd);
    const othersWrite = (folder.mode & 0o022) !== 0 && (folder.mode & LINUX.S_ISVTX) === 0;
    if ((folder.uid !== me && folder.uid !== 0) || othersWrite) {
      throw occupied(
        bindCall,
        path,
        `is in a directory that another user can change (${dir}: uid ${folder.uid}, mode ${
          (folder.mode & 0o7777).toString(8)
        })`,
      );
    }
    const entry = statxAt(dirFd, base, LINUX.AT_SYMLINK_NOFOLLOW);
    if (entry === ERRNO.ENOENT) return; // gone meanwhile: bind again
    if (typeof entry === "number") throw systemError(`statx(${path})`, entry);
    if ((entry.mode & LINUX.S_IFMT) !== LINUX.S_IFSOCK || entry.uid !== me) {
      throw occupied(bindCall, path, `is ${describe(entry)}, not a socket of uid ${me}`);
    }
    if (!nothingAccepts(type, dirFd, base, address)) {
      throw occupied(bindCall, path, "is a live socket: a listener accepts connections on it");
    }
    if (lib.unlinkat(dirFd, cString(base), 0) < 0 && readErrno() !== ERRNO.ENOENT) {
      throw systemError(`unlink(${path})`);
    }
  } finally {
    closeQuietly(dirFd);
  }
}

/** `connect` on a nonblocking socket: 0, or the errno. */
export function connectErrno(fd: number, address: UnixSocketAddress): number {
  for (;;) {
    if (libc().connect(fd, address.bytes, address.length) === 0) return 0;
    const errno = readErrno();
    if (errno !== ERRNO.EINTR) return errno;
  }
}

/**
 * True if nothing accepts connections of `type` on the socket `base` in the
 * directory `dirFd` (connect answers ECONNREFUSED), probed through
 * `/proc/self/fd/DIR/base` so that it is the checked directory's entry; by
 * the full path where that is too long or `/proc` is missing. A socket of
 * another type answers EPROTOTYPE: live, not ours to replace.
 */
function nothingAccepts(
  type: number,
  dirFd: number,
  base: string,
  address: UnixSocketAddress,
): boolean {
  const probe = libc().socket(LINUX.AF_UNIX, type | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0);
  if (probe < 0) return false;
  try {
    const viaDirectory = encoder.encode(`/proc/self/fd/${dirFd}/${base}`);
    let errno = viaDirectory.length <= 107
      ? connectErrno(probe, encodeSockaddrUn(viaDirectory, false))
      : ERRNO.ENOENT;
    if (errno === ERRNO.ENOENT) errno = connectErrno(probe, address);
    return errno === ERRNO.ECONNREFUSED;
  } finally {
    closeQuietly(probe);
  }
}
