/**
 * The Linux transport, one connection: a connected `SOCK_SEQPACKET` Unix
 * socket (message boundaries and hang-up detection from the kernel), one fd
 * per surface message in `SCM_RIGHTS`. How connections come to be (listen,
 * accept, connect, `SO_PEERCRED`) is in `listener.ts`.
 *
 * Every socket call is made with `MSG_DONTWAIT` on the JS thread first; only
 * when the kernel has nothing for us do we park on a nonblocking `poll` (one
 * thread hop), which also watches an eventfd so that `close()` and an abort
 * signal wake it at once.
 *
 * @module
 */

import type { BackendConnection, ConnectionLimits, ReceivedMessage } from "../contract/backend.ts";
import {
  ClosedError,
  PeerClosedError,
  type PeerCredentials,
  ProtocolError,
  throwIfAborted,
} from "../core/errors.ts";
import { runtime } from "../../ffi/runtime.ts";
import { HEADER_SIZE, HeaderDecoder } from "../wire/wire.ts";
import { encodeDoorbell, isDoorbell } from "../wire/doorbell_wire.ts";
import {
  type Bell,
  bellTower,
  createFlagPage,
  doorbellEnabled,
  doorbellStats,
  type FlagPage,
  mapFlagPage,
  newToken,
  openRing,
  ring,
  unmapFlagPage,
} from "./doorbell.ts";
import { addressOf, closeQuietly, ERRNO, libc, readErrno, systemError } from "./libc.ts";
import { newEventFd, waitReady, wake } from "./poller.ts";
import { MappingCache } from "./received.ts";
import { refillSpareDescriptions } from "./surface.ts";
import {
  cmsgSpace,
  type ControlRights,
  decodeControl,
  decodePollRevents,
  encodeIovec,
  encodeMsghdr,
  encodePollfd,
  encodeRights,
  IOVEC_LEN_OFFSET,
  IOVEC_SIZE,
  LINUX,
  MSGHDR_CONTROLLEN_OFFSET,
  MSGHDR_FLAGS_OFFSET,
  MSGHDR_SIZE,
  POLLFD_SIZE,
  scanControlRights,
} from "./structs.ts";

/** How many descriptors a receive makes room for: more than one is a protocol error, but we must see them to close them. */
const MAX_RECEIVED_FDS = 8;

/**
 * How many failed `recvmsg` attempts a spinning receive makes between two
 * looks at the clock (each attempt ~1 µs): the spin ends at most that much
 * late, and no clock read (~0.1 µs and a 32-byte heap number) is paid per
 * attempt.
 */
const SPIN_CLOCK_EVERY = 16;

/** The ioctl request as the BigInt its `unsigned long` parameter takes (made once). */
const SIOCOUTQ = BigInt(LINUX.SIOCOUTQ);

/** The one metadata buffer of every message without metadata (it is never written). */
const NO_META = new Uint8Array(0);

interface ConnectionResources {
  fds: number[];
  cache: MappingCache;
  /** The ring to the peer's doorbell, or -1. */
  ringFd: number;
  /** This side's doorbell, once bound. */
  bell: Bell | undefined;
  /** The peer's parked flag (we ring when it is set) and ours (the peer's DOORBELL brought it). */
  pages: FlagPage[];
}

const connectionFinalizer = new FinalizationRegistry<ConnectionResources>((r) => {
  r.cache.close();
  for (const fd of r.fds) closeQuietly(fd);
  if (r.ringFd >= 0) closeQuietly(r.ringFd);
  r.bell?.close();
  for (const page of r.pages) unmapFlagPage(page);
  bellTower.release();
});

/** One end of a connected `SOCK_SEQPACKET` socket. */
export class SocketConnection implements BackendConnection {
  readonly peer: PeerCredentials;
  readonly #fd: number;
  readonly #sendWake: number;
  readonly #receiveWake: number;
  readonly #limits: ConnectionLimits;
  readonly #cache: MappingCache;
  #closed = false;
  #pendingWaits = 0;
  /** The last tryReceive() found nothing, and receive() has not run since. */
  #foundEmpty = false;
  readonly #resources: ConnectionResources;
  /** The ring to the peer's doorbell, or -1 if it has none. */
  #ringFd = -1;
  /** The peer's parked flag: a message sent while it is set rings the doorbell (and clears it). */
  #peerParked: Int32Array | undefined;
  /** This side's parked flag (on the page the peer's DOORBELL brought), set while parked on the bell. */
  #parked: Int32Array | undefined;
  /** This side's doorbell, bound when the peer's DOORBELL and its stream's HELLO agree. */
  #bell: Bell | undefined;
  /** The peer sent a DOORBELL (only its first counts). */
  #doorbellClaimed = false;
  /** Withdraws a claim whose stream has not come yet. */
  #unclaim: (() => void) | undefined;

  // Message structures built once per connection, with their addresses: per call only the
  // lengths, the flags and the fd change, written through typed-array views (no DataView,
  // no BigInt, no pointer object per call).
  readonly #sendMsghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #sendIov = new Uint8Array(IOVEC_SIZE);
  readonly #sendIovWords = new Uint32Array(this.#sendIov.buffer);
  readonly #sendControl = new Uint8Array(cmsgSpace(4));
  readonly #sendControlWords = new Int32Array(this.#sendControl.buffer);
  /** The last message buffer sent and its address: a channel reuses one buffer for its headers. */
  #sentBuffer: Uint8Array | undefined;
  readonly #receiveMsghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #receiveMsghdrWords = new Int32Array(this.#receiveMsghdr.buffer);
  /** The receive iovec: referenced by address from the msghdr, so it must stay reachable. */
  readonly #receiveIov = new Uint8Array(IOVEC_SIZE);
  readonly #receiveControl = new Uint8Array(cmsgSpace(4 * MAX_RECEIVED_FDS));
  readonly #receiveControlView = new DataView(this.#receiveControl.buffer);
  readonly #received: ControlRights = {
    fds: new Int32Array(this.#receiveControl.length / 4),
    count: 0,
  };
  readonly #receiveBuffer: Uint8Array;
  readonly #headerDecoder: HeaderDecoder;
  /**
   * What every receive returns, rewritten in place (no object or number box
   * per message): its taker reads it before receiving again, as the
   * {@link ReceivedMessage} contract says.
   */
  readonly #message: ReceivedMessage = {
    metaKind: 0,
    sequence: 0,
    timestamp: 0.5, // a double from the start: later timestamps are stored in place
    meta: NO_META,
    surface: undefined as unknown as ReceivedMessage["surface"],
  };
  readonly #pollOne = new Uint8Array(POLLFD_SIZE);
  // Control messages (publish/subscribe) carry no descriptor: their own msghdr without control data.
  readonly #controlMsghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #controlIov = new Uint8Array(IOVEC_SIZE);
  readonly #controlIovWords = new Uint32Array(this.#controlIov.buffer);
  /** The control message buffer the iovec points at (a subscription reuses one for its credits). */
  #controlBuffer: Uint8Array | undefined;
  readonly #outq = new Uint8Array(4);
  readonly #outqValue = new Int32Array(this.#outq.buffer);

  constructor(fd: number, peer: PeerCredentials, limits: ConnectionLimits) {
    this.#fd = fd;
    this.peer = peer;
    this.#limits = limits;
    // Channel senders send OFD-locked descriptions: forwarding dup()s them.
    this.#cache = new MappingCache(limits.mappingCacheSize, limits, true);
    const sendWake = newEventFd();
    let receiveWake: number;
    try {
      receiveWake = newEventFd();
    } catch (error) {
      closeQuietly(sendWake);
      throw error;
    }
    this.#sendWake = sendWake;
    this.#receiveWake = receiveWake;
    // Exactly the largest valid message: anything longer, even by one byte, comes with MSG_TRUNC
    // (MESSAGE_TRUNCATED, as docs/errors.md says); a buffer one byte longer let a message of
    // 136 + maxMetaBytes + 1 bytes in whole, and it was reported as SHORT_MESSAGE.
    this.#receiveBuffer = new Uint8Array(HEADER_SIZE + limits.maxMetaBytes);
    this.#headerDecoder = new HeaderDecoder(
      this.#receiveBuffer,
      limits.maxSurfaceBytes,
      limits.maxMetaBytes,
    );

    encodeRights(new DataView(this.#sendControl.buffer), [-1]);
    encodeMsghdr(new DataView(this.#sendMsghdr.buffer), {
      name: 0n,
      nameLength: 0,
      iov: addressOf(this.#sendIov),
      iovLength: 1,
      control: addressOf(this.#sendControl),
      controlLength: this.#sendControl.length,
      flags: 0,
    });
    encodeMsghdr(new DataView(this.#controlMsghdr.buffer), {
      name: 0n,
      nameLength: 0,
      iov: addressOf(this.#controlIov),
      iovLength: 1,
      control: 0n,
      controlLength: 0,
      flags: 0,
    });
    const receiveIov = this.#receiveIov;
    encodeIovec(
      new DataView(receiveIov.buffer),
      0,
      addressOf(this.#receiveBuffer),
      this.#receiveBuffer.length,
    );
    encodeMsghdr(new DataView(this.#receiveMsghdr.buffer), {
      name: 0n,
      nameLength: 0,
      iov: addressOf(receiveIov),
      iovLength: 1,
      control: addressOf(this.#receiveControl),
      controlLength: this.#receiveControl.length,
      flags: 0,
    });
    this.#resources = {
      fds: [fd, sendWake, receiveWake],
      cache: this.#cache,
      ringFd: -1,
      bell: undefined,
      pages: [],
    };
    bellTower.acquire(); // released at close (or by the finalizer)
    connectionFinalizer.register(this, this.#resources, this);
  }

  /**
   * Offers the peer this side's rings (see `doorbell.ts`): if the peer has a
   * doorbell, presents a fresh token on it and names the token in a
   * DOORBELL message on this connection. Called once, right after the
   * connection is made; without a doorbell at the peer (or with the peer in
   * this very process), sends nothing.
   */
  offerDoorbell(): void {
    // Both ends in this process share one event loop: no doorbell between them.
    if (this.peer.pid === runtime.pid || !doorbellEnabled()) return;
    const token = newToken();
    const ringFd = openRing(this.peer, token);
    if (ringFd < 0) return;
    const made = createFlagPage();
    if (made === undefined) return closeQuietly(ringFd);
    let sent = false;
    try {
      // The DOORBELL carries the page's memfd (consumed by #trySend, sent or not).
      sent = this.#trySend(encodeDoorbell(token), made.fd);
    } catch {
      // the peer is gone already: no doorbell
    } finally {
      closeQuietly(made.fd);
    }
    if (!sent) {
      unmapFlagPage(made.page);
      return closeQuietly(ringFd);
    }
    this.#ringFd = ringFd;
    this.#peerParked = made.page.flag;
    this.#resources.ringFd = ringFd;
    this.#resources.pages.push(made.page);
  }

  /** Rings the peer's doorbell (its parked flag was set); a ring the peer closed is dropped. */
  #ring(): void {
    if (ring(this.#ringFd)) return;
    closeQuietly(this.#ringFd);
    this.#ringFd = -1;
    this.#peerParked = undefined;
    this.#resources.ringFd = -1;
  }

  /**
   * The peer's DOORBELL (in the receive buffer) with `fd`, the memfd of its
   * flag page (or -1): bind the stream that presents its token. A DOORBELL
   * without a valid page, or after the first, binds nothing. Closes `fd`.
   */
  #claimDoorbell(fd: number): void {
    const page = fd >= 0 && !this.#doorbellClaimed && !this.#closed ? mapFlagPage(fd) : undefined;
    closeQuietly(fd);
    if (page === undefined) return; // one per connection: a flood of them claims nothing more
    this.#doorbellClaimed = true;
    this.#resources.pages.push(page);
    const token = this.#receiveBuffer.slice(16, 32);
    this.#unclaim = bellTower.claim(token, (bell) => {
      this.#unclaim = undefined;
      if (this.#closed) return bell.close();
      this.#bell = bell;
      this.#parked = page.flag;
      this.#resources.bell = bell;
    });
  }

  /**
   * This side's parked flag if the next park will be on the doorbell (the
   * flag is then set: the caller looks for a message once more before it
   * parks, since the peer only rings for messages sent after it saw the
   * flag), else `undefined`.
   */
  #announcePark(): Int32Array | undefined {
    const parked = this.#parked;
    if (parked === undefined || !this.#bell!.live) return undefined;
    Atomics.store(parked, 0, 1);
    return parked;
  }

  /**
   * Parks until the peer may have sent something: on the doorbell when it
   * rings (one wake-up, by the runtime's reactor), else on the shared poll.
   */
  async #park(operation: string, deadline: number, signal?: AbortSignal): Promise<void> {
    this.#pendingWaits++;
    try {
      const bell = this.#bell;
      if (bell !== undefined && bell.live) {
        doorbellStats.bellWaits++;
        await bell.wait(operation, deadline, signal);
      } else {
        doorbellStats.pollWaits++;
        await waitReady(this.#fd, LINUX.POLLIN, this.#receiveWake, operation, deadline, signal);
      }
    } finally {
      if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    }
  }

  async send(
    message: Uint8Array,
    handle: number,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<void> {
    try {
      this.#assertOpen("send");
      throwIfAborted(signal);
      while (!this.#trySend(message, handle)) {
        await this.#wait(LINUX.POLLOUT, this.#sendWake, "send", deadline, signal);
        this.#assertOpen("send");
      }
    } finally {
      // A queued message holds its own reference to the description; ours goes either way.
      closeQuietly(handle);
    }
  }

  trySend(message: Uint8Array, handle: number): boolean {
    try {
      this.#assertOpen("send");
      if (!this.#trySend(message, handle)) return false;
    } catch (error) {
      closeQuietly(handle);
      throw error;
    }
    closeQuietly(handle); // the queued message holds its own reference
    return true;
  }

  /** One `sendmsg(MSG_DONTWAIT)`; false if the socket buffer is full. */
  #trySend(message: Uint8Array, handle: number): boolean {
    this.#sendControlWords[4] = handle; // CMSG_DATA, offset 16
    const words = this.#sendIovWords;
    if (message !== this.#sentBuffer) {
      encodeIovec(new DataView(this.#sendIov.buffer), 0, addressOf(message), message.length);
      this.#sentBuffer = message;
    }
    words[2] = message.length; // iov_len, low word (the high word stays 0)
    const lib = libc();
    for (;;) {
      const sent = lib.sendmsg(this.#fd, this.#sendMsghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL);
      if (sent >= 0) {
        if (this.#peerParked !== undefined && Atomics.exchange(this.#peerParked, 0, 0) !== 0) {
          this.#ring();
        }
        return true;
      }
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EAGAIN || errno === ERRNO.ENOBUFS) return false;
      if (errno === ERRNO.EPIPE || errno === ERRNO.ECONNRESET) throw new PeerClosedError();
      throw systemError("sendmsg", errno);
    }
  }

  tryReceive(): ReceivedMessage | undefined {
    this.#assertOpen("receive");
    const message = this.#tryReceive();
    this.#foundEmpty = message === undefined;
    return message;
  }

  async sendControl(message: Uint8Array, deadline: number, signal?: AbortSignal): Promise<void> {
    this.#assertOpen("send");
    throwIfAborted(signal);
    while (!this.#trySendControl(message)) {
      await this.#wait(LINUX.POLLOUT, this.#sendWake, "send", deadline, signal);
      this.#assertOpen("send");
    }
  }

  trySendControl(message: Uint8Array): boolean {
    this.#assertOpen("send");
    return this.#trySendControl(message);
  }

  /** One `sendmsg(MSG_DONTWAIT)` of a control message; false if the socket buffer is full. */
  #trySendControl(message: Uint8Array): boolean {
    if (message !== this.#controlBuffer) {
      encodeIovec(new DataView(this.#controlIov.buffer), 0, addressOf(message), message.length);
      this.#controlBuffer = message;
    }
    this.#controlIovWords[2] = message.length; // iov_len, low word
    for (;;) {
      const sent = libc().sendmsg(
        this.#fd,
        this.#controlMsghdr,
        LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL,
      );
      if (sent >= 0) {
        if (this.#peerParked !== undefined && Atomics.exchange(this.#peerParked, 0, 0) !== 0) {
          this.#ring();
        }
        return true;
      }
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EPIPE || errno === ERRNO.ECONNRESET) throw new PeerClosedError();
      if (errno === ERRNO.EAGAIN || errno === ERRNO.ENOBUFS) return false;
      throw systemError("sendmsg", errno);
    }
  }

  unreadByPeer(): number {
    this.#assertOpen("send");
    if (libc().ioctl_int(this.#fd, SIOCOUTQ, this.#outq) < 0) {
      throw systemError("ioctl(SIOCOUTQ)");
    }
    return this.#outqValue[0];
  }

  async receiveControl(deadline: number, signal?: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      this.#assertOpen("receive");
      throwIfAborted(signal);
      let message = this.#tryReceiveControl();
      if (message) return message;
      const parked = this.#announcePark();
      if (parked !== undefined) {
        message = this.#tryReceiveControl();
        if (message) {
          Atomics.store(parked, 0, 0);
          return message;
        }
      }
      await this.#park("receive", deadline, signal);
      if (parked !== undefined && !this.#closed) Atomics.store(parked, 0, 0);
    }
  }

  tryReceiveControl(): Uint8Array | undefined {
    this.#assertOpen("receive");
    return this.#tryReceiveControl();
  }

  /** The next control message: its bytes, `undefined`, or a typed error (DOORBELLs are taken here). */
  #tryReceiveControl(): Uint8Array | undefined {
    for (;;) {
      const message = this.#tryReceiveControlOne();
      if (message !== null) return message;
    }
  }

  /** One `recvmsg(MSG_DONTWAIT)` of a control message: its bytes, `undefined`, null for a DOORBELL taken, or a typed error. */
  #tryReceiveControlOne(): Uint8Array | undefined | null {
    const msghdr = new DataView(this.#receiveMsghdr.buffer);
    msghdr.setBigUint64(MSGHDR_CONTROLLEN_OFFSET, BigInt(this.#receiveControl.length), true);
    msghdr.setInt32(MSGHDR_FLAGS_OFFSET, 0, true);
    new DataView(this.#receiveIov.buffer).setBigUint64(
      IOVEC_LEN_OFFSET,
      BigInt(this.#receiveBuffer.length),
      true,
    );
    const length = this.#recvmsg();
    if (length < 0) return undefined;
    const controlLength = Number(msghdr.getBigUint64(MSGHDR_CONTROLLEN_OFFSET, true));
    const control = decodeControl(new DataView(this.#receiveControl.buffer), controlLength);
    const flags = msghdr.getInt32(MSGHDR_FLAGS_OFFSET, true);
    if (
      control.fds.length <= 1 && !control.malformed &&
      (flags & (LINUX.MSG_TRUNC | LINUX.MSG_CTRUNC)) === 0 &&
      isDoorbell(this.#receiveBuffer, length)
    ) {
      this.#claimDoorbell(control.fds[0] ?? -1);
      return null;
    }
    // A control message carries no descriptor: any that came along is closed here.
    for (const fd of control.fds) closeQuietly(fd);
    if (length === 0 && control.fds.length === 0 && this.#peerHungUp()) {
      throw new PeerClosedError();
    }
    if (control.fds.length > 0 || control.malformed || flags & LINUX.MSG_CTRUNC) {
      throw new ProtocolError("EXTRA_HANDLES", "a control message carries descriptors");
    }
    if (flags & LINUX.MSG_TRUNC) {
      throw new ProtocolError("MESSAGE_TRUNCATED", "control message is too large");
    }
    return this.#receiveBuffer.slice(0, length);
  }

  async receive(deadline: number, signal?: AbortSignal): Promise<ReceivedMessage> {
    this.#assertOpen("receive");
    throwIfAborted(signal);
    // A tryReceive() that just found nothing (the channel's fast path) need not be repeated:
    // one recvmsg less per receive that waits. What arrives meanwhile, the spin or poll sees.
    let message = this.#foundEmpty ? undefined : this.#tryReceive();
    this.#foundEmpty = false;
    if (message) return message;
    // About to wait: the time to reopen the descriptions that sends used (not while sending).
    refillSpareDescriptions();
    if (this.#limits.spinMicros > 0) {
      // Low-latency mode: retry on this thread before paying the hop to a worker thread. The
      // clock is read every SPIN_CLOCK_EVERY attempts, not on each.
      const spinUntil = Math.min(performance.now() + this.#limits.spinMicros / 1000, deadline);
      do {
        for (let i = 0; i < SPIN_CLOCK_EVERY; i++) {
          message = this.#tryReceive();
          if (message) return message;
        }
      } while (performance.now() < spinUntil);
    }
    for (;;) {
      const parked = this.#announcePark();
      if (parked !== undefined) {
        message = this.#tryReceive();
        if (message) {
          Atomics.store(parked, 0, 0);
          return message;
        }
      }
      await this.#park("receive", deadline, signal);
      if (parked !== undefined && !this.#closed) Atomics.store(parked, 0, 0);
      this.#assertOpen("receive");
      throwIfAborted(signal);
      message = this.#tryReceive();
      if (message) return message;
      doorbellStats.emptyWakes++;
    }
  }

  /** The next message: a checked message, `undefined` if none is waiting, or a typed error. */
  #tryReceive(): ReceivedMessage | undefined {
    for (;;) {
      const message = this.#tryReceiveOne();
      if (message !== null) return message;
    }
  }

  /** One `recvmsg(MSG_DONTWAIT)`: a checked message, `undefined` if none is waiting, null for a DOORBELL taken, or a typed error. */
  #tryReceiveOne(): ReceivedMessage | undefined | null {
    const msghdr = this.#receiveMsghdrWords;
    // The kernel rewrites msg_controllen and msg_flags: reset them (the high word of
    // msg_controllen stays 0: the buffer is far smaller than 4 GiB).
    msghdr[MSGHDR_CONTROLLEN_OFFSET / 4] = this.#receiveControl.length;
    msghdr[MSGHDR_FLAGS_OFFSET / 4] = 0;
    const length = this.#recvmsg();
    if (length < 0) return undefined;
    const controlLength = msghdr[MSGHDR_CONTROLLEN_OFFSET / 4];
    const flags = msghdr[MSGHDR_FLAGS_OFFSET / 4];
    const received = this.#received;
    const malformed = scanControlRights(this.#receiveControlView, controlLength, received);
    if (
      received.count <= 1 && !malformed && (flags & (LINUX.MSG_TRUNC | LINUX.MSG_CTRUNC)) === 0 &&
      isDoorbell(this.#receiveBuffer, length)
    ) {
      this.#claimDoorbell(received.count === 1 ? received.fds[0] : -1);
      return null;
    }
    const { fds } = received;
    // Every received fd is closed on every path, except the one a returned surface owns.
    let adopted = false;
    try {
      if (length === 0 && received.count === 0 && this.#peerHungUp()) {
        throw new PeerClosedError();
      }
      if (flags & LINUX.MSG_CTRUNC) {
        throw new ProtocolError(
          "CONTROL_TRUNCATED",
          `control data was truncated (more than ${MAX_RECEIVED_FDS} fds?)`,
        );
      }
      if (malformed) {
        throw new ProtocolError("CONTROL_TRUNCATED", "malformed control message");
      }
      if (flags & LINUX.MSG_TRUNC) {
        throw new ProtocolError(
          "MESSAGE_TRUNCATED",
          `message is larger than ${this.#receiveBuffer.length} bytes (the header and ` +
            "maxMetaBytes of metadata)",
        );
      }
      const header = this.#headerDecoder.decode(length);
      if (received.count === 0) {
        throw new ProtocolError("NO_HANDLE", "surface message carries no fd");
      }
      if (received.count > 1) {
        throw new ProtocolError(
          "EXTRA_HANDLES",
          `surface message carries ${received.count} fds, expected 1`,
        );
      }
      const surface = this.#cache.import(fds[0], header.geometry);
      adopted = true; // the surface owns the fd now
      const meta = header.metaLength === 0
        ? NO_META
        : this.#receiveBuffer.slice(HEADER_SIZE, HEADER_SIZE + header.metaLength);
      // The decoder reuses its header record: only its scalars leave this call.
      const message = this.#message;
      message.metaKind = header.metaKind;
      message.sequence = header.sequence;
      message.timestamp = header.timestamp;
      message.meta = meta;
      message.surface = surface;
      return message;
    } finally {
      if (!adopted) {
        for (let i = 0; i < received.count; i++) closeQuietly(fds[i]);
      }
    }
  }

  /**
   * One `recvmsg(MSG_DONTWAIT)` into the receive buffers (retried on EINTR):
   * the length, or -1 if nothing is waiting; a hang-up (`ECONNRESET`) or
   * another failure throws.
   */
  #recvmsg(): number {
    const lib = libc();
    for (;;) {
      const length = Number(
        lib.recvmsg(this.#fd, this.#receiveMsghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_CMSG_CLOEXEC),
      );
      if (length >= 0) return length;
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EAGAIN) return -1;
      if (errno === ERRNO.ECONNRESET) throw new PeerClosedError();
      throw systemError("recvmsg", errno);
    }
  }

  /** A zero-length read is either an empty message or the end: POLLHUP tells which. */
  #peerHungUp(): boolean {
    const view = new DataView(this.#pollOne.buffer);
    encodePollfd(view, 0, this.#fd, LINUX.POLLIN | 0x2000 /* POLLRDHUP */);
    libc().poll(this.#pollOne, 1n, 0);
    return (decodePollRevents(view, 0) & (LINUX.POLLHUP | 0x2000)) !== 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    connectionFinalizer.unregister(this);
    // Wake pending waits; they see #closed and throw ClosedError. The fds are
    // closed only when no poll can still be watching them, so their numbers
    // are never reused under a pending poll.
    wake(this.#sendWake);
    wake(this.#receiveWake);
    libc().shutdown(this.#fd, LINUX.SHUT_RDWR);
    // After the shutdown, so that the peer woken by the ring's end sees the hang-up.
    if (this.#ringFd >= 0) closeQuietly(this.#ringFd);
    this.#ringFd = -1;
    this.#resources.ringFd = -1;
    this.#unclaim?.();
    this.#bell?.close();
    this.#peerParked = undefined;
    this.#parked = undefined;
    bellTower.release();
    this.#cache.close();
    if (this.#pendingWaits === 0) this.#closeFds();
  }

  /** Closes the descriptors and unmaps the flag pages, once no wait can still use them. */
  #closeFds(): void {
    // A parked receive that wakes after close() still clears its flag: only then may its page go.
    for (const page of this.#resources.pages) unmapFlagPage(page);
    this.#resources.pages.length = 0;
    closeQuietly(this.#fd);
    closeQuietly(this.#sendWake);
    closeQuietly(this.#receiveWake);
  }

  async #wait(
    events: number,
    wakeFd: number,
    operation: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<void> {
    this.#pendingWaits++;
    try {
      await waitReady(this.#fd, events, wakeFd, operation, deadline, signal);
    } finally {
      if (--this.#pendingWaits === 0 && this.#closed) this.#closeFds();
    }
  }

  #assertOpen(operation: string): void {
    if (this.#closed) throw new ClosedError("channel", operation);
  }
}
