/**
 * Framing of GStreamer's unixfd byte stream: how many bytes to read next,
 * and which descriptors belong to which message. Pure: no system calls.
 *
 * @module
 */

import {
  COMMAND_HEADER_SIZE,
  decodeCommandHeader,
  DEFAULT_MAX_PAYLOAD,
  GstProtocolError,
} from "./protocol.ts";

/**
 * The most descriptors one message may bring: a NEW_BUFFER's `n_memory` is
 * a byte. Checked as they arrive, so a peer that trickles a large payload
 * with descriptors on every piece cannot make this process hold more.
 */
const MAX_FDS_PER_MESSAGE = 255;

/**
 * A framing state machine for the byte stream: it says how many bytes it
 * wants next (the 8-byte header, then exactly the payload), so the socket
 * reader never reads past a message and descriptors always arrive with the
 * bytes of the message they belong to. {@link feed} collects every
 * descriptor it is given; on a throw, {@link takeFds} hands back the ones no
 * message took, for closing.
 */
export class UnixFdFramer {
  readonly #maxPayload: number;
  readonly #header = new Uint8Array(COMMAND_HEADER_SIZE);
  #headerFill = 0;
  #command = -1;
  #payload: Uint8Array = new Uint8Array(256);
  #payloadSize = -1;
  #payloadFill = 0;
  #fds: number[] = [];

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
   * Takes `bytes` (at most {@link want} of them) and the descriptors that
   * arrived with them. Returns a complete `{command, payload, fds}` once a
   * message is whole (the payload is valid until the next call), else
   * `undefined`. Throws `GstProtocolError` on an oversized payload, or more
   * than 255 descriptors for one message.
   */
  feed(
    bytes: Uint8Array,
    fds: readonly number[],
  ): { command: number; payload: Uint8Array; fds: number[] } | undefined {
    for (const fd of fds) this.#fds.push(fd);
    if (this.#fds.length > MAX_FDS_PER_MESSAGE) {
      throw new GstProtocolError(
        "FD_COUNT",
        `a message brought ${this.#fds.length} descriptors; a buffer has at most ` +
          `${MAX_FDS_PER_MESSAGE} memories`,
      );
    }
    let at = 0;
    if (bytes.length > this.want()) throw new RangeError("internal: fed more bytes than wanted");
    if (this.#payloadSize < 0) {
      const take = Math.min(bytes.length, COMMAND_HEADER_SIZE - this.#headerFill);
      this.#header.set(bytes.subarray(0, take), this.#headerFill);
      this.#headerFill += take;
      at = take;
      if (this.#headerFill < COMMAND_HEADER_SIZE) return undefined;
      const { command, payloadSize } = decodeCommandHeader(this.#header, this.#maxPayload);
      this.#command = command;
      this.#payloadSize = payloadSize;
      this.#payloadFill = 0;
      if (this.#payload.length < payloadSize) {
        this.#payload = new Uint8Array(Math.max(payloadSize, this.#payload.length * 2));
      }
    }
    const take = bytes.length - at;
    this.#payload.set(bytes.subarray(at), this.#payloadFill);
    this.#payloadFill += take;
    if (this.#payloadFill < this.#payloadSize) return undefined;
    const message = {
      command: this.#command,
      payload: this.#payload.subarray(0, this.#payloadSize),
      fds: this.#fds,
    };
    this.#fds = [];
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
    const fds = this.#fds;
    this.#fds = [];
    return fds;
  }
}
