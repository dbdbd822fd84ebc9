/**
 * The send side of one Linux connection (`channel.ts`): the `msghdr`, iovec
 * and `SCM_RIGHTS` buffers a `sendmsg` reads, built once per connection, and
 * the one nonblocking `sendmsg` of a surface message (its descriptor in
 * `SCM_RIGHTS`) or of a control message (none), after which the peer's
 * doorbell is rung if the peer is parked on it (`channel_doorbell.ts`). The
 * receive side is `socket_receiver.ts`; waiting for room, `channel.ts`.
 *
 * {@link SocketSender} is a base class of `SocketConnection`, not an object
 * beside it like the receiver, so that a send reaches these buffers as
 * fields of the connection itself (no object more per frame).
 *
 * @module
 */

import { PeerClosedError } from "../core/errors.ts";
import { DoorbellConnection } from "./channel_doorbell.ts";
import { addressOf, ERRNO, libc, readErrno, systemError } from "./libc.ts";
import {
  cmsgSpace,
  encodeIovec,
  encodeMsghdr,
  encodeRights,
  IOVEC_SIZE,
  LINUX,
  MSGHDR_SIZE,
} from "./structs.ts";

/** The ioctl request as the BigInt its `unsigned long` parameter takes (made once). */
const SIOCOUTQ = BigInt(LINUX.SIOCOUTQ);

/** The sending half of a connected `SOCK_SEQPACKET` socket (see the module's description). */
export abstract class SocketSender extends DoorbellConnection {
  readonly #fd: number;

  // Message structures built once per connection, with their addresses: per call only the
  // lengths, the flags and the fd change, written through typed-array views (no DataView,
  // no BigInt, no pointer object per call).
  readonly #sendMsghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #sendIov = new Uint8Array(IOVEC_SIZE);
  readonly #sendIovWords = new Uint32Array(this.#sendIov.buffer);
  readonly #sendControl = new Uint8Array(cmsgSpace(4));
  readonly #sendControlWords = new Int32Array(this.#sendControl.buffer);
  /**
   * The last two message buffers sent and their addresses: a channel reuses
   * one buffer for its headers, a publisher one per frame in the steady state
   * and two in turn while a subscriber holds a frame (no pointer and BigInt
   * made per send either way).
   */
  #sentBuffer: Uint8Array | undefined;
  #sentAddress = 0n;
  #otherBuffer: Uint8Array | undefined;
  #otherAddress = 0n;
  /** The iovec's base address, as a 64-bit word. */
  readonly #sendIovBase = new BigUint64Array(this.#sendIov.buffer, 0, 1);
  // Control messages (publish/subscribe) carry no descriptor: their own msghdr without control data.
  readonly #controlMsghdr = new Uint8Array(MSGHDR_SIZE);
  readonly #controlIov = new Uint8Array(IOVEC_SIZE);
  readonly #controlIovWords = new Uint32Array(this.#controlIov.buffer);
  /** The control message buffer the iovec points at (a subscription reuses one for its credits). */
  #controlBuffer: Uint8Array | undefined;
  readonly #outq = new Uint8Array(4);
  readonly #outqValue = new Int32Array(this.#outq.buffer);

  /** Builds the message structures for sends on the connected socket `fd` (not owned here). */
  constructor(fd: number) {
    super();
    this.#fd = fd;
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
  }

  /**
   * One `sendmsg(MSG_DONTWAIT)` of `message` with the descriptor `handle` in
   * `SCM_RIGHTS` (it stays the caller's to close): a surface message, or
   * the DOORBELL. False if the socket buffer is full; throws
   * `PeerClosedError` when the peer is gone.
   */
  protected trySendWithDescriptor(message: Uint8Array, handle: number): boolean {
    this.#sendControlWords[4] = handle; // CMSG_DATA, offset 16
    const words = this.#sendIovWords;
    if (message !== this.#sentBuffer) {
      const address = message === this.#otherBuffer ? this.#otherAddress : addressOf(message);
      this.#otherBuffer = this.#sentBuffer;
      this.#otherAddress = this.#sentAddress;
      this.#sentBuffer = message;
      this.#sentAddress = address;
      this.#sendIovBase[0] = address;
    }
    words[2] = message.length; // iov_len, low word (the high word stays 0)
    const lib = libc();
    for (;;) {
      const sent = lib.sendmsg(this.#fd, this.#sendMsghdr, LINUX.MSG_DONTWAIT | LINUX.MSG_NOSIGNAL);
      if (sent >= 0) {
        this.ringIfParked();
        return true;
      }
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EAGAIN || errno === ERRNO.ENOBUFS) return false;
      if (errno === ERRNO.EPIPE || errno === ERRNO.ECONNRESET) throw new PeerClosedError();
      throw systemError("sendmsg", errno);
    }
  }

  /**
   * One `sendmsg(MSG_DONTWAIT)` of a control message (no descriptor). False
   * if the socket buffer is full; throws `PeerClosedError` when the peer is
   * gone.
   */
  protected trySendWithoutDescriptor(message: Uint8Array): boolean {
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
        this.ringIfParked();
        return true;
      }
      const errno = readErrno();
      if (errno === ERRNO.EINTR) continue;
      if (errno === ERRNO.EPIPE || errno === ERRNO.ECONNRESET) throw new PeerClosedError();
      if (errno === ERRNO.EAGAIN || errno === ERRNO.ENOBUFS) return false;
      throw systemError("sendmsg", errno);
    }
  }

  /** Bytes sent that the peer has not read yet (`ioctl(SIOCOUTQ)`). */
  protected unsentBytes(): number {
    if (libc().ioctl_int(this.#fd, SIOCOUTQ, this.#outq) < 0) {
      throw systemError("ioctl(SIOCOUTQ)");
    }
    return this.#outqValue[0];
  }
}
