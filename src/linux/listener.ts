/**
 * The Linux transport, how connections come to be: a listening
 * `SOCK_SEQPACKET` Unix socket (abstract or filesystem name), `accept`,
 * `connect`, and peers admitted by `SO_PEERCRED`. The connection itself is
 * `channel.ts`. The accept core ({@link AcceptingSocket}) and the helpers for
 * any Unix socket ({@link listeningSocket}, {@link peerCredentials}) also
 * serve the GStreamer unixfd socket (`src/gst/socket.ts`).
 *
 * @module
 */

import type {
  BackendConnection,
  BackendListener,
  ConnectionLimits,
  PeerPredicate,
} from "../contract/backend.ts";
import {
  ClosedError,
  type PeerCredentials,
  PeerRefusedError,
  SystemCallError,
  throwIfAborted,
  TimeoutError,
} from "../core/errors.ts";
import {
  check,
  closeQuietly,
  cString,
  ERRNO,
  errnoName,
  fstatx,
  libc,
  procFdPath,
  readErrno,
  statxAt,
  systemError,
} from "./libc.ts";
import { newEventFd, waitReady, wake } from "./poller.ts";
import { SocketConnection } from "./channel.ts";
import { decodeUcred, encodeSockaddrUn, LINUX, UCRED_SIZE } from "./structs.ts";

/** The prefix of abstract socket names: `"\0surfaceport/" + name`. */
export const ABSTRACT_PREFIX = "surfaceport/";

const encoder = new TextEncoder();

/** Resolves a channel name to a socket address (see `docs/protocol.md`). */
export function socketAddress(name: string): UnixSocketAddress {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(`a channel name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  if (name.includes("\0")) throw new TypeError("a channel name must not contain NUL characters");
  if (name.includes("/")) {
    return { ...encodeSockaddrUn(encoder.encode(name), false), path: name };
  }
  return encodeSockaddrUn(encoder.encode(ABSTRACT_PREFIX + name), true);
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

interface ListenerResources {
  fd: number;
  wakeFd: number;
  /** A reserve descriptor, given up to accept (and refuse) a client when the table is full. */
  spare: number;
  file?: SocketFile;
}

const listenerFinalizer = new FinalizationRegistry<ListenerResources>((r) => {
  closeQuietly(r.fd);
  closeQuietly(r.wakeFd);
  closeQuietly(r.spare);
  if (r.file) removeSocketFile(r.file);
});

/**
 * The accept core of every listening Unix socket here — channels
 * (`SOCK_SEQPACKET`, {@link SocketListener}) and the GStreamer unixfd server
 * (`SOCK_STREAM`, `src/gst/socket.ts`): binds (see {@link listeningSocket}),
 * accepts without blocking the event loop, admits peers by `SO_PEERCRED`,
 * and, out of descriptors, refuses the waiting client with a spare
 * descriptor rather than leaving it queued. One owner of the socket, its
 * eventfd, the spare and the socket file.
 */
export class AcceptingSocket {
  /** The socket file, for a filesystem name. */
  readonly file: SocketFile | undefined;
  readonly #resources: ListenerResources;
  readonly #allowPeer: PeerPredicate;
  readonly #acceptFlags: number;
  readonly #what: string;
  #closed = false;
  #pendingWaits = 0;

  /**
   * Binds `address` with a socket of `type` and listens; accepted sockets
   * get `acceptFlags` (`SOCK_CLOEXEC` always). `what` names it in errors.
   */
  constructor(
    type: number,
    address: UnixSocketAddress,
    options: { backlog: number; bindCall: string; allowPeer: PeerPredicate; acceptFlags?: number },
    what = "listener",
  ) {
    const { fd, wakeFd, file } = listeningSocket(type, address, options.backlog, options.bindCall);
    this.file = file;
    this.#resources = { fd, wakeFd, spare: openSpare(), file };
    this.#allowPeer = options.allowPeer;
    this.#acceptFlags = LINUX.SOCK_CLOEXEC | (options.acceptFlags ?? 0);
    this.#what = what;
    listenerFinalizer.register(this, this.#resources, this);
  }

  /**
   * Accepts the next admitted peer and hands its socket to `adopt` (which
   * owns it from then on, and may throw: then it is closed here). Refused
   * peers are disconnected and skipped. Out of descriptors, the waiting
   * client is refused (it sees the end of the stream) and this rejects with
   * EMFILE / ENFILE saying so; the socket keeps serving: accept again.
   */
  async accept<T>(
    adopt: (fd: number, peer: PeerCredentials) => T,
    signal?: AbortSignal,
  ): Promise<T> {
    const lib = libc();
    for (;;) {
      if (this.#closed) throw new ClosedError(this.#what, "accept");
      throwIfAborted(signal);
      const fd = lib.accept4(this.#resources.fd, null, null, this.#acceptFlags);
      if (fd < 0) {
        const errno = readErrno();
        if (errno === ERRNO.EAGAIN || errno === ERRNO.EINTR || errno === 103 /* ECONNABORTED */) {
          if (errno === ERRNO.EAGAIN) await this.#wait(signal);
          continue;
        }
        if (errno === ERRNO.EMFILE || errno === ERRNO.ENFILE) {
          throw this.#refuseOne("accept4", errno);
        }
        throw systemError("accept4", errno);
      }
      let peer: PeerCredentials;
      try {
        peer = peerCredentials(fd);
        if (!this.#allowPeer(peer)) {
          closeQuietly(fd); // refused: skip to the next peer
          continue;
        }
      } catch (error) {
        closeQuietly(fd);
        throw accepted(error);
      }
      try {
        return adopt(fd, peer);
      } catch (error) {
        closeQuietly(fd);
        throw accepted(error);
      }
    }
  }

  /**
   * Out of descriptors with a client waiting: without a free number it
   * cannot even be accepted, and would stay queued (and wake every poll).
   * The spare descriptor makes room to accept it and hang up on it at once
   * (it sees `PeerClosedError`); then the spare is taken back.
   */
  #refuseOne(call: string, errno: number): SystemCallError {
    if (this.#resources.spare >= 0) {
      closeQuietly(this.#resources.spare);
      closeQuietly(libc().accept4(this.#resources.fd, null, null, LINUX.SOCK_CLOEXEC));
      this.#resources.spare = openSpare();
    }
    return refusal(call, errno);
  }

  async #wait(signal?: AbortSignal): Promise<void> {
    this.#pendingWaits++;
    try {
      await waitReady(
        this.#resources.fd,
        LINUX.POLLIN,
        this.#resources.wakeFd,
        "accept",
        Infinity,
        signal,
      );
    } finally {
      if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    }
  }

  /** Stops listening (removing its socket file) and wakes a pending accept. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    listenerFinalizer.unregister(this);
    if (this.#resources.file) removeSocketFile(this.#resources.file);
    wake(this.#resources.wakeFd);
    libc().shutdown(this.#resources.fd, LINUX.SHUT_RDWR);
    if (this.#pendingWaits === 0) this.#closeFds();
  }

  #closeFds(): void {
    closeQuietly(this.#resources.fd);
    closeQuietly(this.#resources.wakeFd);
    closeQuietly(this.#resources.spare);
    this.#resources.spare = -1;
  }
}

/** An error after a client was accepted: out of descriptors, it is a refusal of that client. */
function accepted(error: unknown): unknown {
  if (
    error instanceof SystemCallError &&
    (error.errno === ERRNO.EMFILE || error.errno === ERRNO.ENFILE)
  ) {
    return refusal(error.call, error.errno); // the client was accepted and is now refused
  }
  return error;
}

/** A listening `SOCK_SEQPACKET` socket that admits peers by `SO_PEERCRED`. */
export class SocketListener implements BackendListener {
  readonly address: string;
  readonly #socket: AcceptingSocket;
  readonly #limits: ConnectionLimits;

  constructor(name: string, allowPeer: PeerPredicate, limits: ConnectionLimits) {
    const address = socketAddress(name);
    this.#socket = new AcceptingSocket(LINUX.SOCK_SEQPACKET, address, {
      backlog: 4096,
      bindCall: "bind",
      allowPeer,
    });
    this.address = address.path ?? `@${ABSTRACT_PREFIX}${name}`;
    this.#limits = limits;
  }

  accept(signal?: AbortSignal): Promise<BackendConnection> {
    return this.#socket.accept((fd, peer) => new SocketConnection(fd, peer, this.#limits), signal);
  }

  close(): void {
    this.#socket.close();
  }
}

const DEV_NULL = cString("/dev/null");

/** A descriptor held in reserve (of `/dev/null`), or -1 if none could be opened. */
function openSpare(): number {
  return libc().open(DEV_NULL, LINUX.O_RDONLY | LINUX.O_CLOEXEC, 0);
}

/** The error `accept()` rejects with when it had to refuse a client for lack of descriptors. */
function refusal(call: string, errno: number): SystemCallError {
  return new SystemCallError(
    call,
    errno,
    errnoName(errno),
    `${
      errno === ERRNO.EMFILE ? "this process" : "the system"
    } is out of descriptors, so a connecting client was refused (it sees PeerClosedError); ` +
      "the listener keeps serving: close frames, surfaces or channels (or raise `ulimit -n`) and " +
      "accept again",
  );
}

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

/**
 * Connects to the listener under `name`, checks its credentials with
 * `allowPeer`, and returns the connection. A Unix-socket connect completes at
 * once or fails with EAGAIN while the listener's backlog is full; then it is
 * retried with a short back-off until `deadline`.
 */
export async function connectSocket(
  name: string,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  deadline: number,
  signal?: AbortSignal,
): Promise<BackendConnection> {
  const address = socketAddress(name);
  throwIfAborted(signal);
  const fd = check(
    "socket",
    libc().socket(
      LINUX.AF_UNIX,
      LINUX.SOCK_SEQPACKET | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC,
      0,
    ),
  );
  try {
    for (let backoff = 1;; backoff = Math.min(backoff * 2, 50)) {
      const errno = connectErrno(fd, address);
      if (errno === 0) break;
      if (errno !== ERRNO.EAGAIN) throw systemError(`connect(${JSON.stringify(name)})`, errno);
      if (performance.now() + backoff > deadline) throw new TimeoutError("connect", backoff);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      throwIfAborted(signal);
    }
    const peer = peerCredentials(fd);
    if (!allowPeer(peer)) {
      throw new PeerRefusedError(
        peer,
        `connect(${
          JSON.stringify(name)
        }): the listener runs as uid ${peer.uid} (pid ${peer.pid}), which allowPeer refused`,
      );
    }
    return new SocketConnection(fd, peer, limits);
  } catch (error) {
    closeQuietly(fd);
    throw error;
  }
}
