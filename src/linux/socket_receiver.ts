/**
 * The receive side of one Linux connection (`channel.ts`): the `msghdr`,
 * iovec and `SCM_RIGHTS` buffers a `recvmsg` fills, built once per
 * connection, and the checked decoding of what arrives: a surface message
 * (its fd imported through the connection's mapping cache), a control
 * message, or a DOORBELL, handed back to the connection to claim.
 *
 * @module
 */

import type { ConnectionLimits, ReceivedMessage } from "../contract/backend.ts";
import { PeerClosedError, ProtocolError } from "../core/errors.ts";
import { HEADER_SIZE, HeaderDecoder } from "../wire/wire.ts";
import { isDoorbell } from "../wire/doorbell_wire.ts";
import { CONTROL_SIZE } from "../wire/pubsub_wire.ts";
import { addressOf, closeQuietly, ERRNO, libc, readErrno, systemError } from "./libc.ts";
import type { MappingCache } from "./received.ts";
import {
  cmsgSpace,
  type ControlRights,
  decodePollRevents,
  encodeIovec,
  encodeMsghdr,
  encodePollfd,
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

/** {@link SocketReceiver}'s one `recvmsg` found nothing waiting. */
const NOTHING = -1;
/** {@link SocketReceiver}'s one `recvmsg` took a DOORBELL (handed to its `onDoorbell`). */
const DOORBELL_TAKEN = -2;

/** The one metadata buffer of every message without metadata (it is never written). */
const NO_META = new Uint8Array(0);

/**
 * The receive buffers of one connected `SOCK_SEQPACKET` socket and the
 * checked reading of each message. Every call is one nonblocking
 * `recvmsg`; waiting is the connection's business. Owns no descriptor: the
 * socket is the connection's, a received fd is closed or adopted here.
 */
export class SocketReceiver {
  readonly #fd: number;
  readonly #cache: MappingCache;
  /** Takes a DOORBELL's flag-page fd (or -1) while its token is in {@link buffer}; closes the fd. */
  readonly #onDoorbell: (fd: number) => void;
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
  /** The last receive's `msg_flags`. */
  #flags = 0;
  /** Whether the last receive's control data was malformed. */
  #malformed = false;
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
  /** The first 16 bytes of {@link #receiveBuffer}, as words. */
  readonly #receiveWords: Uint32Array;
  /** What {@link tryReceiveControl} returns for a 16-byte message, rewritten each time. */
  readonly #controlMessage = new Uint8Array(CONTROL_SIZE);
  readonly #controlWords = new Uint32Array(this.#controlMessage.buffer);

  /**
   * Receive buffers for socket `fd` sized by `limits`; surfaces are imported
   * through `cache`, and a DOORBELL goes to `onDoorbell` (see `#onDoorbell`).
   */
  constructor(
    fd: number,
    limits: ConnectionLimits,
    cache: MappingCache,
    onDoorbell: (fd: number) => void,
  ) {
    this.#fd = fd;
    this.#cache = cache;
    this.#onDoorbell = onDoorbell;
    // Exactly the largest valid message: anything longer, even by one byte, comes with MSG_TRUNC
    // (MESSAGE_TRUNCATED, as docs/errors.md says); a buffer one byte longer let a message of
    // 136 + maxMetaBytes + 1 bytes in whole, and it was reported as SHORT_MESSAGE.
    this.#receiveBuffer = new Uint8Array(HEADER_SIZE + limits.maxMetaBytes);
    this.#receiveWords = new Uint32Array(this.#receiveBuffer.buffer, 0, CONTROL_SIZE / 4);
    this.#headerDecoder = new HeaderDecoder(
      this.#receiveBuffer,
      limits.maxSurfaceBytes,
      limits.maxMetaBytes,
    );
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
  }

  /** The buffer the last message was received into (a DOORBELL's token is at bytes 16–32). */
  get buffer(): Uint8Array {
    return this.#receiveBuffer;
  }

  /**
   * The next control message: its bytes, `undefined`, or a typed error
   * (DOORBELLs are taken here). A message of {@link CONTROL_SIZE}
   * bytes (every valid one) comes in one reused array, valid until the next
   * receive on this socket; any other length as a copy.
   */
  tryReceiveControl(): Uint8Array | undefined {
    for (;;) {
      const message = this.#tryReceiveControlOne();
      if (message !== null) return message;
    }
  }

  /** One `recvmsg(MSG_DONTWAIT)` of a control message: its bytes, `undefined`, null for a DOORBELL taken, or a typed error. */
  #tryReceiveControlOne(): Uint8Array | undefined | null {
    const length = this.#receiveOne();
    if (length === NOTHING) return undefined;
    if (length === DOORBELL_TAKEN) return null;
    const flags = this.#flags;
    const malformed = this.#malformed;
    const received = this.#received;
    // A control message carries no descriptor: any that came along is closed here.
    for (let i = 0; i < received.count; i++) closeQuietly(received.fds[i]);
    if (length === 0 && received.count === 0 && this.#peerHungUp()) {
      throw new PeerClosedError();
    }
    if (received.count > 0 || malformed || flags & LINUX.MSG_CTRUNC) {
      throw new ProtocolError("EXTRA_HANDLES", "a control message carries descriptors");
    }
    if (flags & LINUX.MSG_TRUNC) {
      throw new ProtocolError("MESSAGE_TRUNCATED", "control message is too large");
    }
    if (length !== CONTROL_SIZE) return this.#receiveBuffer.slice(0, length);
    const words = this.#controlWords;
    const from = this.#receiveWords;
    words[0] = from[0];
    words[1] = from[1];
    words[2] = from[2];
    words[3] = from[3];
    return this.#controlMessage;
  }

  /** The next message: a checked message, `undefined` if none is waiting, or a typed error. */
  tryReceive(): ReceivedMessage | undefined {
    for (;;) {
      const message = this.#tryReceiveOne();
      if (message !== null) return message;
    }
  }

  /** One `recvmsg(MSG_DONTWAIT)`: a checked message, `undefined` if none is waiting, null for a DOORBELL taken, or a typed error. */
  #tryReceiveOne(): ReceivedMessage | undefined | null {
    const length = this.#receiveOne();
    if (length === NOTHING) return undefined;
    if (length === DOORBELL_TAKEN) return null;
    const flags = this.#flags;
    const malformed = this.#malformed;
    const received = this.#received;
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
  /**
   * One `recvmsg(MSG_DONTWAIT)` into the reused buffers, shared by both kinds of receive: the
   * length, {@link NOTHING} if none is waiting, or {@link DOORBELL_TAKEN}. Its flags, whether the
   * control data was malformed and the descriptors it carried are left in `#flags`, `#malformed`
   * and `#received`. The lengths and flags are reset and read through 32-bit words, the control
   * data scanned into reused fields (no DataView, no BigInt, no array per message).
   */
  #receiveOne(): number {
    const msghdr = this.#receiveMsghdrWords;
    // The kernel rewrites msg_controllen and msg_flags: reset them (the high word of
    // msg_controllen stays 0: the buffer is far smaller than 4 GiB).
    msghdr[MSGHDR_CONTROLLEN_OFFSET / 4] = this.#receiveControl.length;
    msghdr[MSGHDR_FLAGS_OFFSET / 4] = 0;
    const length = this.#recvmsg();
    if (length < 0) return NOTHING;
    const controlLength = msghdr[MSGHDR_CONTROLLEN_OFFSET / 4];
    const flags = this.#flags = msghdr[MSGHDR_FLAGS_OFFSET / 4];
    const received = this.#received;
    const malformed = this.#malformed = scanControlRights(
      this.#receiveControlView,
      controlLength,
      received,
    );
    if (
      received.count <= 1 && !malformed && (flags & (LINUX.MSG_TRUNC | LINUX.MSG_CTRUNC)) === 0 &&
      isDoorbell(this.#receiveBuffer, length)
    ) {
      this.#onDoorbell(received.count === 1 ? received.fds[0] : -1);
      return DOORBELL_TAKEN;
    }
    return length;
  }

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
}
