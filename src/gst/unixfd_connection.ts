/**
 * Linux only: one end of a connection on the `SOCK_STREAM` Unix socket that
 * GStreamer's `unixfdsink` / `unixfdsrc` speak over (how connections come to
 * be: `socket.ts`). Nonblocking calls on the JS thread; waits park in the
 * shared poller like channels do.
 *
 * Reads ask for exactly the bytes the {@link UnixFdFramer} wants, so a read
 * never crosses into the next message and every descriptor arrives with
 * the message it belongs to. Every received descriptor is either handed out
 * in a decoded NEW_BUFFER or closed here, on every path.
 *
 * @module
 */

import {
  ClosedError,
  PeerClosedError,
  type PeerCredentials,
  throwIfAborted,
} from "../core/errors.ts";
import { addressOf, closeQuietly, ERRNO, libc, readErrno, systemError } from "../linux/libc.ts";
import { newEventFd, type WaitEnded, wake } from "../linux/poller.ts";
import { PollWaiter, waitReady } from "../linux/poll_wait.ts";
import {
  CMSGHDR_SIZE,
  cmsgSpace,
  type ControlRights,
  encodeIovec,
  encodeMsghdr,
  encodeRights,
  IOVEC_LEN_OFFSET,
  IOVEC_SIZE,
  LINUX,
  MSGHDR_CONTROLLEN_OFFSET,
  MSGHDR_FLAGS_OFFSET,
  MSGHDR_SIZE,
  scanControlRights,
} from "../linux/structs.ts";
import {
  decodeClientMessage,
  decodeSinkMessage,
  GstReleaseRecord,
  type ReusedSinkMessage,
  reusedSinkMessage,
} from "./decode.ts";
import { DEFAULT_MAX_PAYLOAD, type GstMessage, GstProtocolError } from "./protocol.ts";
import { UnixFdFramer } from "./framer.ts";

/** Room for the descriptors of one buffer: a NEW_BUFFER has at most 255 memories. */
const MAX_FDS = 255;

/**
 * Counters for tests: the parked waits of unixfd connections (each one a
 * wait on the shared poll, the allocation a frame cannot avoid when its
 * message is not there yet).
 */
export const unixFdStats = {
  /** Receives that found no whole message and parked. */
  receiveWaits: 0,
  /** Sends that found the socket full and parked. */
  sendWaits: 0,
};

function ignore(): void {}

const connectionFinalizer = new FinalizationRegistry<number[]>((fds) => {
  for (const fd of fds) closeQuietly(fd);
});

/** Which side of the protocol this end speaks. */
export type UnixFdRole = "client" | "server";

/** One end of a unixfd connection. */
export class UnixFdConnection {
  /** The peer's credentials (`SO_PEERCRED`). */
  readonly peer: PeerCredentials;
  /** `"client"`: we talk to a unixfdsink; `"server"`: a unixfdsrc talks to us. */
  readonly role: UnixFdRole;
  readonly #fd: number;
  readonly #wakeFd: number;
  readonly #framer: UnixFdFramer;
  #closed = false;
  #pendingWaits = 0;
  #sending: Promise<void> = Promise.resolve();

  readonly #msghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #msghdrWords = new Int32Array(this.#msghdr.buffer);
  readonly #iov = new Uint8Array(IOVEC_SIZE);
  readonly #iovWords = new Int32Array(this.#iov.buffer);
  readonly #control = new Uint8Array(cmsgSpace(4 * MAX_FDS));
  readonly #controlView = new DataView(this.#control.buffer);
  readonly #received: ControlRights = { fds: new Int32Array(this.#control.length / 4), count: 0 };
  readonly #buffer = new Uint8Array(64 * 1024);
  /** What a receive returns for a NEW_BUFFER: one record, rewritten by each (see {@link receive}). */
  readonly #reused: ReusedSinkMessage = reusedSinkMessage();
  /** What a receive returns for a RELEASE_BUFFER (server side): one record, rewritten. */
  readonly #release = new GstReleaseRecord();
  readonly #sendMsghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #sendIov = new Uint8Array(IOVEC_SIZE);
  readonly #sendControl = new Uint8Array(cmsgSpace(4 * MAX_FDS));
  /** {@link trySend}'s msghdr and iovec: built once per buffer sent from, then only the length changes. */
  readonly #tryMsghdr = new Uint8Array(MSGHDR_SIZE);
  /** The same with one descriptor attached ({@link #tryControl}). */
  readonly #tryMsghdrFd = new Uint8Array(MSGHDR_SIZE);
  readonly #tryControl = new Uint8Array(cmsgSpace(4));
  readonly #tryControlWords = new Int32Array(this.#tryControl.buffer);
  readonly #tryIov = new Uint8Array(IOVEC_SIZE);
  readonly #tryIovWords = new Int32Array(this.#tryIov.buffer);
  #tryFrom: Uint8Array | undefined;
  /** Sends queued by {@link send} and not finished: {@link trySend} must not overtake them. */
  #queuedSends = 0;

  /** Wraps a connected socket `fd` (owned from now on). */
  constructor(
    fd: number,
    peer: PeerCredentials,
    role: UnixFdRole,
    maxPayload = DEFAULT_MAX_PAYLOAD,
  ) {
    this.#fd = fd;
    this.peer = peer;
    this.role = role;
    this.#framer = new UnixFdFramer(maxPayload);
    this.#wakeFd = newEventFd();
    connectionFinalizer.register(this, [fd, this.#wakeFd], this);
    // The receive msghdr points at fixed buffers: each receive only sets lengths and flags.
    encodeIovec(new DataView(this.#iov.buffer), 0, addressOf(this.#buffer), this.#buffer.length);
    encodeMsghdr(new DataView(this.#msghdr.buffer), {
      name: 0n,
      nameLength: 0,
      iov: addressOf(this.#iov),
      iovLength: 1,
      control: addressOf(this.#control),
      controlLength: this.#control.length,
      flags: 0,
    });
    encodeMsghdr(new DataView(this.#tryMsghdr.buffer), {
      name: 0n,
      nameLength: 0,
      iov: addressOf(this.#tryIov),
      iovLength: 1,
      control: 0n,
      controlLength: 0,
      flags: 0,
    });
    const controlLength = encodeRights(new DataView(this.#tryControl.buffer), [-1]);
    encodeMsghdr(new DataView(this.#tryMsghdrFd.buffer), {
      name: 0n,
      nameLength: 0,
      iov: addressOf(this.#tryIov),
      iovLength: 1,
      control: addressOf(this.#tryControl),
      controlLength,
      flags: 0,
    });
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Receives the next message, waiting until `deadline` (ms,
   * `performance.now()` clock) or `signal`. Throws `PeerClosedError` at the
   * end of the stream and {@link GstProtocolError} for a malformed message
   * (its descriptors closed; the connection is then unusable: close it).
   * A NEW_BUFFER message, its buffer and its descriptor list are one
   * object rewritten by every receive: read them before receiving again.
   */
  async receive(deadline = Infinity, signal?: AbortSignal): Promise<GstMessage> {
    for (;;) {
      if (this.#closed) throw new ClosedError("unixfd connection", "receive");
      throwIfAborted(signal);
      const message = this.tryReceive();
      if (message) return message;
      await this.waitReadable(deadline, signal);
    }
  }

  /**
   * Parks on the shared poll until the socket is readable (true), the
   * connection is closed (false) or `deadline` / `signal` (rejects): what
   * a {@link tryReceive} that found nothing waits for. One promise, settled
   * by the connection's one wait record (re-armed per wait: a from-gst
   * bridge behind a live source parks at every frame); a second wait while
   * one is parked goes through a record of its own.
   */
  waitReadable(deadline = Infinity, signal?: AbortSignal): Promise<boolean> {
    unixFdStats.receiveWaits++;
    const parked = this.#parked ??= new PollWaiter(this.#parkedEnded);
    if (parked.armed) return this.#wait(LINUX.POLLIN, "receive", deadline, signal);
    const promise = new Promise<boolean>(this.#captureParked);
    try {
      parked.arm(this.#fd, LINUX.POLLIN, this.#wakeFd, "receive", deadline, signal);
    } catch (error) {
      this.#resolveParked = this.#rejectParked = ignore;
      return Promise.reject(error);
    }
    this.#pendingWaits++;
    return promise;
  }

  /** {@link waitReadable}'s wait record, made at its first park, and its promise's resolvers. */
  #parked: PollWaiter | undefined;
  #resolveParked: (ready: boolean) => void = ignore;
  #rejectParked: (error: unknown) => void = ignore;
  /** The promise's executor, made once (no closure per wait). */
  readonly #captureParked = (
    resolve: (ready: boolean) => void,
    reject: (error: unknown) => void,
  ): void => {
    this.#resolveParked = resolve;
    this.#rejectParked = reject;
  };
  readonly #parkedEnded: WaitEnded = (ready, failure) => {
    const resolve = this.#resolveParked;
    const reject = this.#rejectParked;
    this.#resolveParked = this.#rejectParked = ignore;
    if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    if (failure === undefined) resolve(ready);
    else reject(failure);
  };

  /**
   * {@link waitReadable} with no promise: parks on the shared poll until the
   * socket is readable, then calls `onReadable(true, undefined)` (false:
   * woken, the connection was closed; or the poll's error as `failure`).
   * For a wait repeated per message by one owner: the record is made at the
   * first call and re-armed by each, so a wait costs only the poll's round.
   * At most one at a time; `onReadable` must not throw.
   */
  armReadable(onReadable: WaitEnded): void {
    if (this.#closed) throw new ClosedError("unixfd connection", "receive");
    this.#readable ??= new PollWaiter(this.#readableEnded);
    this.#onReadable = onReadable;
    this.#readable.arm(this.#fd, LINUX.POLLIN, this.#wakeFd, "receive", Infinity, undefined);
    this.#pendingWaits++;
    unixFdStats.receiveWaits++;
  }

  /** {@link armReadable}'s wait, made at its first call. */
  #readable: PollWaiter | undefined;
  #onReadable: WaitEnded = () => {};
  readonly #readableEnded: WaitEnded = (ready, failure) => {
    if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    this.#onReadable(ready, failure);
  };

  /**
   * {@link receive} without waiting: the next message if one is whole in
   * the socket, else undefined. No promise, and (once warm) no allocation
   * for a NEW_BUFFER.
   */
  tryReceive(): GstMessage | undefined {
    if (this.#closed) throw new ClosedError("unixfd connection", "receive");
    const msghdr = this.#msghdrWords;
    const received = this.#received;
    for (;;) {
      const want = Math.min(this.#framer.want(), this.#buffer.length);
      // The kernel rewrites msg_controllen and msg_flags; the high words stay 0 (small buffers).
      this.#iovWords[IOVEC_LEN_OFFSET / 4] = want;
      msghdr[MSGHDR_CONTROLLEN_OFFSET / 4] = this.#control.length;
      msghdr[MSGHDR_FLAGS_OFFSET / 4] = 0;
      const n = Number(
        libc().recvmsg(this.#fd, this.#msghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_CMSG_CLOEXEC),
      );
      if (n < 0) {
        const errno = readErrno();
        if (errno === ERRNO.EINTR) continue;
        if (errno === ERRNO.EAGAIN) return undefined;
        if (errno === ERRNO.ECONNRESET) throw this.#fail(new PeerClosedError());
        throw this.#fail(systemError("recvmsg", errno));
      }
      const controlLength = msghdr[MSGHDR_CONTROLLEN_OFFSET / 4];
      const flags = msghdr[MSGHDR_FLAGS_OFFSET / 4];
      const malformed = scanControlRights(this.#controlView, controlLength, received);
      if (flags & LINUX.MSG_CTRUNC || malformed) {
        for (let i = 0; i < received.count; i++) closeQuietly(received.fds[i]);
        throw this.#fail(
          new GstProtocolError(
            "UNEXPECTED_FDS",
            "control data truncated (more than 255 descriptors?)",
          ),
        );
      }
      let framed;
      try {
        framed = this.#framer.feed(this.#buffer, received.fds, n, received.count);
      } catch (error) {
        throw this.#fail(error as Error);
      }
      if (n === 0 && received.count === 0) {
        throw this.#fail(
          new PeerClosedError(
            this.#framer.atBoundary
              ? "the GStreamer side closed the connection"
              : "the GStreamer side closed the connection in the middle of a message",
          ),
        );
      }
      if (!framed) continue;
      try {
        return this.role === "client"
          ? decodeSinkMessage(framed.command, framed.payload, framed.fds, this.#reused)
          : decodeClientMessage(framed.command, framed.payload, framed.fds, this.#release);
      } catch (error) {
        for (const fd of framed.fds) closeQuietly(fd);
        throw this.#fail(error as Error);
      }
    }
  }

  /** Closes every descriptor the framer still holds and passes `error` on. */
  #fail(error: Error): Error {
    for (const fd of this.#framer.takeFds()) closeQuietly(fd);
    return error;
  }

  /**
   * Sends `bytes` (one whole message) with `fds` attached to its first
   * byte, waiting for room until `deadline`. The descriptors stay the
   * caller's. Sends are serialized, so concurrent calls never interleave.
   */
  send(bytes: Uint8Array, fds: readonly number[] = [], deadline = Infinity): Promise<void> {
    const previous = this.#sending;
    this.#queuedSends++;
    const next = previous.then(
      () => this.#send(bytes, fds, deadline),
      () => this.#send(bytes, fds, deadline),
    ).finally(() => this.#queuedSends--);
    this.#sending = next.catch(() => {});
    return next;
  }

  /**
   * One nonblocking `sendmsg` of the first `length` bytes of `bytes`, with
   * `fd` attached when given (it stays the caller's; it went with the first
   * byte if any byte went), no promise: how many bytes went (possibly
   * fewer: the rest is the caller's to send next, before anything else), or -1 when the
   * socket has no room or a {@link send} is still queued (the caller waits
   * with {@link waitWritable}). Throws `PeerClosedError` when the peer went
   * away, else the `sendmsg` error.
   */
  trySend(bytes: Uint8Array, length: number, fd = -1): number {
    if (this.#closed) throw new ClosedError("unixfd connection", "send");
    if (this.#queuedSends > 0) return -1;
    if (this.#tryFrom !== bytes) {
      this.#tryFrom = bytes;
      encodeIovec(new DataView(this.#tryIov.buffer), 0, addressOf(bytes), length);
    }
    this.#tryIovWords[IOVEC_LEN_OFFSET / 4] = length;
    // The descriptor is the last int of the one SCM_RIGHTS header built in the constructor.
    if (fd >= 0) this.#tryControlWords[CMSGHDR_SIZE / 4] = fd;
    const msghdr = fd >= 0 ? this.#tryMsghdrFd : this.#tryMsghdr;
    for (;;) {
      const n = Number(
        libc().sendmsg(this.#fd, msghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL),
      );
      if (n >= 0) return n;
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EAGAIN || errno === ERRNO.ENOBUFS) return -1;
      if (errno === ERRNO.EPIPE || errno === ERRNO.ECONNRESET) {
        throw new PeerClosedError("the GStreamer side closed the connection");
      }
      throw systemError("sendmsg", errno);
    }
  }

  /**
   * Waits until the socket has room to send (or `deadline`), and for every
   * {@link send} queued before: what a {@link trySend} that returned -1
   * waits for. Rejects with `ClosedError` once closed.
   */
  async waitWritable(deadline = Infinity): Promise<void> {
    await this.#sending;
    if (this.#closed) throw new ClosedError("unixfd connection", "send");
    unixFdStats.sendWaits++;
    await this.#wait(LINUX.POLLOUT, "send", deadline, undefined);
  }

  async #send(bytes: Uint8Array, fds: readonly number[], deadline: number): Promise<void> {
    let sent = 0;
    let withFds = fds.length > 0;
    while (sent < bytes.length) {
      if (this.#closed) throw new ClosedError("unixfd connection", "send");
      const rest = bytes.subarray(sent);
      encodeIovec(new DataView(this.#sendIov.buffer), 0, addressOf(rest), rest.length);
      const controlLength = withFds ? encodeRights(new DataView(this.#sendControl.buffer), fds) : 0;
      encodeMsghdr(new DataView(this.#sendMsghdr.buffer), {
        name: 0n,
        nameLength: 0,
        iov: addressOf(this.#sendIov),
        iovLength: 1,
        control: withFds ? addressOf(this.#sendControl) : 0n,
        controlLength,
        flags: 0,
      });
      const n = Number(
        libc().sendmsg(this.#fd, this.#sendMsghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL),
      );
      if (n >= 0) {
        sent += n;
        withFds = false; // the descriptors went with the first byte
        continue;
      }
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EAGAIN || errno === ERRNO.ENOBUFS) {
        unixFdStats.sendWaits++;
        await this.#wait(LINUX.POLLOUT, "send", deadline, undefined);
        continue;
      }
      if (errno === ERRNO.EPIPE || errno === ERRNO.ECONNRESET) {
        throw new PeerClosedError("the GStreamer side closed the connection");
      }
      throw systemError("sendmsg", errno);
    }
  }

  #wait(
    events: number,
    operation: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    this.#pendingWaits++;
    return waitReady(this.#fd, events, this.#wakeFd, operation, deadline, signal)
      .then(this.#waitEnded, this.#waitFailed);
  }

  /** The last wait to end after close() closes the descriptors (bound once: no closure per wait). */
  readonly #waitEnded = (ready: boolean): boolean => {
    if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    return ready;
  };
  readonly #waitFailed = (error: unknown): never => {
    if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    throw error;
  };

  /** Closes the connection and wakes pending calls. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    connectionFinalizer.unregister(this);
    for (const fd of this.#framer.takeFds()) closeQuietly(fd);
    wake(this.#wakeFd);
    libc().shutdown(this.#fd, LINUX.SHUT_RDWR);
    if (this.#pendingWaits === 0) this.#closeFds();
  }

  #closeFds(): void {
    closeQuietly(this.#fd);
    closeQuietly(this.#wakeFd);
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
