/**
 * Linux only: the `SOCK_STREAM` Unix socket that GStreamer's `unixfdsink` /
 * `unixfdsrc` speak over, how its connections come to be: its addresses
 * (`@name` or a path), connecting as a client (the from-gst bridge connects
 * to a sink) and listening as a server (the to-gst bridge serves sources;
 * its accept core is the channel listener's, `src/linux/listener.ts`). Each
 * connection is a {@link UnixFdConnection} (`unixfd_connection.ts`).
 *
 * @module
 */

import type { PeerPredicate } from "../contract/backend.ts";
import { PeerRefusedError, throwIfAborted, TimeoutError } from "../core/errors.ts";
import { check, closeQuietly, ERRNO, libc, systemError } from "../linux/libc.ts";
import { connectErrno } from "../linux/bind.ts";
import { AcceptingSocket, peerCredentials } from "../linux/listener.ts";
import { encodeSockaddrUn, LINUX } from "../linux/structs.ts";
import { UnixFdConnection } from "./unixfd_connection.ts";

// Named here too for the from-gst bridge, its held buffers and the allocation test, which
// imported them from here before the connection had a file of its own.
export { type UnixFdConnection, unixFdStats } from "./unixfd_connection.ts";

const SOCK_STREAM = 1;
const encoder = new TextEncoder();

/**
 * A GStreamer unixfd socket address: `@name` is the abstract name `name`
 * (GStreamer's `socket-type=abstract socket-path=name`), anything else a
 * filesystem path (`socket-path=PATH`, the default socket type).
 */
export function unixFdAddress(
  address: string,
): { bytes: Uint8Array; length: number; path?: string; display: string } {
  if (typeof address !== "string" || address.length === 0 || address === "@") {
    throw new TypeError(
      `a unixfd socket address must be a path or @name, got ${JSON.stringify(address)}`,
    );
  }
  if (address.includes("\0")) throw new TypeError("a unixfd socket address must not contain NUL");
  if (address.startsWith("@")) {
    return { ...encodeSockaddrUn(encoder.encode(address.slice(1)), true), display: address };
  }
  return { ...encodeSockaddrUn(encoder.encode(address), false), path: address, display: address };
}

/**
 * Connects to a `unixfdsink` at `address` and checks its credentials with
 * `allowPeer`. Retries while nothing listens yet (ENOENT / ECONNREFUSED)
 * until `deadline`, so a bridge may start before its pipeline.
 */
export async function connectUnixFd(
  address: string,
  allowPeer: PeerPredicate,
  deadline: number,
  signal?: AbortSignal,
): Promise<UnixFdConnection> {
  const target = unixFdAddress(address);
  for (let backoff = 5;; backoff = Math.min(backoff * 2, 100)) {
    throwIfAborted(signal);
    const fd = check(
      "socket",
      libc().socket(LINUX.AF_UNIX, SOCK_STREAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC, 0),
    );
    const errno = connectErrno(fd, target);
    if (errno === 0) {
      try {
        const peer = peerCredentials(fd);
        if (!allowPeer(peer)) {
          throw new PeerRefusedError(
            peer,
            `connect(${target.display}): the unixfdsink runs as uid ${peer.uid} (pid ${peer.pid}), ` +
              "which allowPeer refused",
          );
        }
        return new UnixFdConnection(fd, peer, "client");
      } catch (error) {
        closeQuietly(fd);
        throw error;
      }
    }
    closeQuietly(fd);
    const retry = errno === ERRNO.ENOENT || errno === ERRNO.ECONNREFUSED || errno === ERRNO.EAGAIN;
    if (!retry) throw systemError(`connect(${target.display})`, errno);
    if (performance.now() + backoff > deadline) {
      if (deadline === Infinity || deadline <= performance.now()) {
        throw systemError(`connect(${target.display})`, errno);
      }
      throw new TimeoutError(`connect(${target.display})`, Math.round(backoff));
    }
    await new Promise((resolve) => setTimeout(resolve, backoff));
  }
}

/**
 * A listening unixfd socket for `unixfdsrc` clients, admitting them by
 * `SO_PEERCRED`: the listener's accept core, so out of descriptors it
 * refuses the waiting client and keeps serving, like a channel listener.
 */
export class UnixFdServer {
  /** The address as given (`@name` or a path). */
  readonly address: string;
  readonly #socket: AcceptingSocket;

  /** Binds and listens on `address`; a path socket is created with mode 0600 and removed on close. */
  constructor(address: string, allowPeer: PeerPredicate) {
    const target = unixFdAddress(address);
    this.#socket = new AcceptingSocket(SOCK_STREAM, target, {
      backlog: 64,
      bindCall: `bind(${target.display})`,
      allowPeer,
      acceptFlags: LINUX.SOCK_NONBLOCK,
    }, "unixfd server");
    this.address = address;
  }

  /**
   * Accepts the next admitted client (refused ones are disconnected and
   * skipped). Out of descriptors it rejects with EMFILE / ENFILE after
   * refusing the waiting client: accept again.
   */
  accept(signal?: AbortSignal): Promise<UnixFdConnection> {
    return this.#socket.accept((fd, peer) => new UnixFdConnection(fd, peer, "server"), signal);
  }

  /** Stops listening (removing a path socket) and wakes a pending accept. Idempotent. */
  close(): void {
    this.#socket.close();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
