/**
 * The Linux transport, how connections come to be: a listening
 * `SOCK_SEQPACKET` Unix socket (abstract or filesystem name), `accept`,
 * `connect`, and peers admitted by `SO_PEERCRED`. The connection itself is
 * `channel.ts`. The helpers for any listening Unix socket
 * ({@link listeningSocket}, {@link peerCredentials}) also serve the
 * GStreamer unixfd socket (`src/gst/socket.ts`).
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
  libc,
  peerCredentials,
  readErrno,
  systemError,
} from "./libc.ts";
import { newEventFd, waitReady, wake } from "./poller.ts";
import { SocketConnection } from "./channel.ts";
import { bellTower } from "./doorbell.ts";
import { encodeSockaddrUn, LINUX } from "./structs.ts";

export { peerCredentials };

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

interface ListenerResources {
  fd: number;
  wakeFd: number;
  /** A reserve descriptor, given up to accept (and refuse) a client when the table is full. */
  spare: number;
  path?: string;
}

const listenerFinalizer = new FinalizationRegistry<ListenerResources>((r) => {
  closeQuietly(r.fd);
  closeQuietly(r.wakeFd);
  closeQuietly(r.spare);
  if (r.path) libc().unlink(cString(r.path));
  bellTower.release();
});

/** A listening `SOCK_SEQPACKET` socket that admits peers by `SO_PEERCRED`. */
export class SocketListener implements BackendListener {
  readonly address: string;
  readonly #resources: ListenerResources;
  readonly #allowPeer: PeerPredicate;
  readonly #limits: ConnectionLimits;
  #closed = false;
  #pendingWaits = 0;

  constructor(name: string, allowPeer: PeerPredicate, limits: ConnectionLimits) {
    const address = socketAddress(name);
    const { fd, wakeFd } = listeningSocket(LINUX.SOCK_SEQPACKET, address, 4096, "bind");
    this.address = address.path ?? `@${ABSTRACT_PREFIX}${name}`;
    this.#resources = { fd, wakeFd, spare: openSpare(), path: address.path };
    this.#allowPeer = allowPeer;
    this.#limits = limits;
    bellTower.acquire(); // clients ring this process from their first message on
    listenerFinalizer.register(this, this.#resources, this);
  }

  async accept(signal?: AbortSignal): Promise<BackendConnection> {
    const lib = libc();
    for (;;) {
      if (this.#closed) throw new ClosedError("listener", "accept");
      throwIfAborted(signal);
      const fd = lib.accept4(this.#resources.fd, null, null, LINUX.SOCK_CLOEXEC);
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
        const connection = new SocketConnection(fd, peer, this.#limits);
        connection.offerDoorbell();
        return connection;
      } catch (error) {
        closeQuietly(fd);
        if (
          error instanceof SystemCallError &&
          (error.errno === ERRNO.EMFILE || error.errno === ERRNO.ENFILE)
        ) {
          throw refusal(error.call, error.errno); // the client was accepted and is now refused
        }
        throw error;
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

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    listenerFinalizer.unregister(this);
    bellTower.release();
    if (this.#resources.path) libc().unlink(cString(this.#resources.path));
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

/**
 * A nonblocking, close-on-exec `AF_UNIX` socket of `type` bound to `address`
 * and listening, with an eventfd to wake its waits. A filesystem socket left
 * by a listener that died is replaced if nobody answers on it; a new one gets
 * mode 0600. On failure nothing is left open or on disk. `bindCall` names the
 * bind in errors.
 */
export function listeningSocket(
  type: number,
  address: UnixSocketAddress,
  backlog: number,
  bindCall: string,
): { fd: number; wakeFd: number } {
  const lib = libc();
  const fd = check(
    "socket",
    lib.socket(LINUX.AF_UNIX, type | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0),
  );
  let bound = false;
  try {
    if (lib.bind(fd, address.bytes, address.length) < 0) {
      const errno = readErrno();
      if (errno === ERRNO.EADDRINUSE && address.path && isStaleSocket(type, address)) {
        lib.unlink(cString(address.path));
        check(bindCall, lib.bind(fd, address.bytes, address.length));
      } else {
        throw systemError(bindCall, errno);
      }
    }
    bound = true;
    if (address.path) check("chmod", lib.chmod(cString(address.path), 0o600));
    check("listen", lib.listen(fd, backlog));
    return { fd, wakeFd: newEventFd() };
  } catch (error) {
    closeQuietly(fd);
    // Our own socket file must not outlive a listener that never came to be.
    if (bound && address.path) lib.unlink(cString(address.path));
    throw error;
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

/** True if nothing accepts connections of `type` on the filesystem socket at `address`. */
function isStaleSocket(type: number, address: UnixSocketAddress): boolean {
  const probe = libc().socket(LINUX.AF_UNIX, type | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0);
  if (probe < 0) return false;
  try {
    return connectErrno(probe, address) === ERRNO.ECONNREFUSED;
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
  // The listener may ring us as soon as it accepts: our doorbell must exist before we connect.
  bellTower.acquire();
  try {
    return await connectTo(name, address, allowPeer, limits, deadline, signal);
  } finally {
    bellTower.release();
  }
}

async function connectTo(
  name: string,
  address: UnixSocketAddress,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<BackendConnection> {
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
    const connection = new SocketConnection(fd, peer, limits);
    connection.offerDoorbell();
    return connection;
  } catch (error) {
    closeQuietly(fd);
    throw error;
  }
}
