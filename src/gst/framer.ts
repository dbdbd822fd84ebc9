/**
 * Framing of GStreamer's unixfd byte stream: how many bytes to read next,
 * and which descriptors belong to which message. Pure: no system calls.
 *
 * @module
 */

import { decodeCommandHeaderInto, type GstCommandHeader } from "./decode.ts";
import { COMMAND_HEADER_SIZE, DEFAULT_MAX_PAYLOAD, GstProtocolError } from "./protocol.ts";

/**
 * The most descriptors one message may bring: a NEW_BUFFER's `n_memory` is
 * a byte. Checked as they arrive, so a peer that trickles a large payload
 * with descriptors on every piece cannot make this process hold more.
 */
const MAX_FDS_PER_MESSAGE = 255;

/** A whole message as {@link UnixFdFramer.feed} returns it (rewritten by the next whole message). */
export interface FramedMessage {
  /** The command code. */
  command: number;
  /** Exactly the payload bytes (valid until the next {@link UnixFdFramer.feed}). */
  payload: Uint8Array;
  /** Every descriptor that arrived with the message (valid until the next feed). */
  fds: number[];
}

/**
 * A framing state machine for the byte stream: it says how many bytes it
 * wants next (the 8-byte header, then exactly the payload), so the socket
 * reader never reads past a message and descriptors always arrive with the
 * bytes of the message they belong to. {@link feed} collects every
 * descriptor it is given; on a throw, {@link takeFds} hands back the ones no
 * message took, for closing. Allocates nothing per message once its
 * buffers fit (the returned message, its payload view and its descriptor
 * list are reused).
 */
export class UnixFdFramer {
  readonly #maxPayload: number;
  readonly #header = new Uint8Array(COMMAND_HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #decodedHeader: GstCommandHeader = { command: 0, payloadSize: 0 };
  #headerFill = 0;
  #command = -1;
  #payload: Uint8Array = new Uint8Array(256);
  #payloadSize = -1;
  #payloadFill = 0;
  /**
   * The descriptors of the message being read; handed out with it once
   * whole. Emptied by writing its length only when it changes size (a
   * reset to 0 would drop its backing store, and the next push make one).
   */
  readonly #fds: number[] = [];
  /** True while {@link #fds} belongs to the last message returned (cleared by the next feed). */
  #handedOut = false;
  /** `#payload.subarray(0, size)`, kept while messages keep the same size and buffer. */
  #payloadView: Uint8Array = this.#payload.subarray(0, 0);
  readonly #message: FramedMessage = { command: -1, payload: this.#payloadView, fds: this.#fds };

  /** A framer rejecting payloads over `maxPayload` bytes. */
  constructor(maxPayload: number = DEFAULT_MAX_PAYLOAD) {
    this.#maxPayload = maxPayload;
  }

  /** Bytes the next read should ask for (never 0). */
  want(): number {
    if (this.#payloadSize < 0) return COMMAND_HEADER_SIZE - this.#headerFill;
    return this.#payloadSize - this.#payloadFill;
  }

  /**
   * Takes the first `length` of `bytes` (at most {@link want}) and the
   * first `fdCount` of `fds`, the descriptors that arrived with them.
   * Returns the complete message once it is whole (valid until the next
   * call: one object, rewritten), else `undefined`. Throws
   * `GstProtocolError` on an oversized payload, or more than 255
   * descriptors for one message.
   */
  feed(
    bytes: Uint8Array,
    fds: ArrayLike<number>,
    length: number = bytes.length,
    fdCount: number = fds.length,
  ): FramedMessage | undefined {
    const own = this.#fds;
    let held = own.length;
    if (this.#handedOut) {
      held = 0; // the last message's: its taker owns them now
      this.#handedOut = false;
    }
    if (own.length !== held + fdCount) own.length = held + fdCount;
    for (let i = 0; i < fdCount; i++) own[held + i] = fds[i];
    if (this.#fds.length > MAX_FDS_PER_MESSAGE) {
      throw new GstProtocolError(
        "FD_COUNT",
        `a message brought ${this.#fds.length} descriptors; a buffer has at most ` +
          `${MAX_FDS_PER_MESSAGE} memories`,
      );
    }
    let at = 0;
    if (length > this.want()) throw new RangeError("internal: fed more bytes than wanted");
    if (this.#payloadSize < 0) {
      const take = Math.min(length, COMMAND_HEADER_SIZE - this.#headerFill);
      for (let i = 0; i < take; i++) this.#header[this.#headerFill + i] = bytes[i];
      this.#headerFill += take;
      at = take;
      if (this.#headerFill < COMMAND_HEADER_SIZE) return undefined;
      decodeCommandHeaderInto(this.#headerView, this.#maxPayload, this.#decodedHeader);
      const { command, payloadSize } = this.#decodedHeader;
      this.#command = command;
      this.#payloadSize = payloadSize;
      this.#payloadFill = 0;
      if (this.#payload.length < payloadSize) {
        this.#payload = new Uint8Array(Math.max(payloadSize, this.#payload.length * 2));
      }
    }
    const take = length - at;
    const payload = this.#payload;
    const fill = this.#payloadFill;
    for (let i = 0; i < take; i++) payload[fill + i] = bytes[at + i];
    this.#payloadFill += take;
    if (this.#payloadFill < this.#payloadSize) return undefined;
    const size = this.#payloadSize;
    if (this.#payloadView.length !== size || this.#payloadView.buffer !== payload.buffer) {
      this.#payloadView = payload.subarray(0, size);
    }
    const message = this.#message;
    message.command = this.#command;
    message.payload = this.#payloadView;
    this.#handedOut = true;
    this.#headerFill = 0;
    this.#payloadSize = -1;
    this.#payloadFill = 0;
    return message;
  }

  /** True between messages (nothing of the next one read yet). */
  get atBoundary(): boolean {
    return this.#payloadSize < 0 && this.#headerFill === 0;
  }

  /** Hands back (and forgets) every descriptor no message took. */
  takeFds(): number[] {
    if (this.#handedOut) return [];
    const fds = [...this.#fds];
    this.#fds.length = 0;
    return fds;
  }
}
