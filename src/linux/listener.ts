/**
 * The Linux transport, how connections come to be: a listening
 * `SOCK_SEQPACKET` Unix socket (abstract or filesystem name), `accept`,
 * `connect`, and peers admitted by `SO_PEERCRED`. The connection itself is
 * `channel.ts`; binding (and what may be replaced at a filesystem name) is
 * `bind.ts`. The accept core ({@link AcceptingSocket}) and
 * {@link peerCredentials} also serve the GStreamer unixfd socket
 * (`src/gst/socket.ts`).
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
import {
  connectErrno,
  listeningSocket,
  removeSocketFile,
  type SocketFile,
  type UnixSocketAddress,
} from "./bind.ts";
import { wake } from "./poller.ts";
import { waitReady } from "./poll_wait.ts";
import { SocketConnection } from "./channel.ts";
import { bellTower } from "./bell_tower.ts";
import { encodeSockaddrUn, LINUX } from "./structs.ts";

export { peerCredentials };

/** A listener dropped without close() gives the doorbell back (see SocketListener). */
const towerFinalizer = new FinalizationRegistry<undefined>(() => bellTower.release());

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
  #closed = false;

  constructor(name: string, allowPeer: PeerPredicate, limits: ConnectionLimits) {
    const address = socketAddress(name);
    this.#socket = new AcceptingSocket(LINUX.SOCK_SEQPACKET, address, {
      backlog: 4096,
      bindCall: "bind",
      allowPeer,
    });
    this.address = address.path ?? `@${ABSTRACT_PREFIX}${name}`;
    this.#limits = limits;
    bellTower.acquire(); // clients may ring this process from their first message on
    towerFinalizer.register(this, undefined, this);
  }

  accept(signal?: AbortSignal): Promise<BackendConnection> {
    return this.#socket.accept((fd, peer) => {
      const connection = new SocketConnection(fd, peer, this.#limits);
      connection.offerDoorbell();
      return connection;
    }, signal);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    towerFinalizer.unregister(this);
    bellTower.release();
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
