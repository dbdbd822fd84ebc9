/**
 * Frames: a received surface with its metadata, sequence number and
 * timestamp, as channels and subscriptions hand them out.
 *
 * @module
 */

import type { ReceivedMessage, SurfaceBacking } from "../contract/backend.ts";
import { ClosedError, PeerClosedError } from "../core/errors.ts";
import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import { nowMicros as clockNow } from "../platform.ts";
import { Surface } from "../surface/surface.ts";
import { decodeMeta } from "../wire/wire.ts";

/**
 * A surface received from a peer, with what was sent along with it: the
 * frame is the received {@link Surface} itself (`frame.bytes()`,
 * `frame.width`..., and `frame.surface` is the frame), one object per frame.
 * `M` is the metadata's type as the application knows it (not checked: it
 * is whatever the sender sent).
 */
export class Frame<M = unknown> extends Surface {
  /** The metadata as sent: a `Uint8Array` (an empty one too), a parsed JSON value, or `undefined`. */
  readonly meta: M | undefined;
  /**
   * The sender's sequence number: on a channel 0, 1, 2, ..., numbered at
   * `send()`, so a gap means the sender's send failed (timed out, aborted);
   * from a publisher its own frame counter, the same for every subscriber,
   * so a gap also shows frames this subscriber missed.
   */
  readonly sequence: number;
  /**
   * The timestamp's high 32 bits and its low 32 bits as a signed 32-bit
   * integer: two small integers, where the number itself (~2^50 µs) would
   * need a heap box per frame (16 B).
   */
  readonly #timestampHigh: number;
  readonly #timestampLow: number;

  /** @ignore */
  constructor(
    backing: SurfaceBacking,
    meta: M | undefined,
    sequence: number,
    timestamp: number,
  ) {
    // The surface's one finalizer registration (held value: the backing itself) releases the
    // backing if the frame is dropped: no closure, no second registration.
    super(backing, backing, true, "received");
    this.meta = meta;
    this.sequence = sequence;
    const high = Math.floor(timestamp / TWO_32);
    this.#timestampHigh = high;
    this.#timestampLow = (timestamp - high * TWO_32) | 0;
  }

  /**
   * When the sender sent it, in microseconds since the Unix epoch (unless it
   * passed its own): `nowMicros() - frame.timestamp` is the handoff latency.
   */
  get timestamp(): number {
    return this.#timestampHigh * TWO_32 + (this.#timestampLow >>> 0);
  }

  /**
   * The received surface: the very memory the sender wrote, not a copy.
   * The frame itself (a frame is its surface; kept for code written when
   * they were two objects).
   */
  get surface(): Surface {
    return this;
  }

  static {
    inspectOnNode(this);
  }

  /** What `console.log` shows: sequence, age, metadata, the surface. */
  override [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    const state = {
      sequence: this.sequence,
      timestamp: this.timestamp,
      ageMicros: clockNow() - this.timestamp,
      meta: this.meta,
      closed: this.closed,
    };
    return `Frame ${inspect(state, options)} of ${super[customInspect](inspect, options)}`;
  }
}

const TWO_32 = 2 ** 32;

/** Internal: the {@link Frame} for a received message; the frame owns its backing. */
export function frameOf<M>(received: ReceivedMessage): Frame<M> {
  let meta;
  try {
    meta = decodeMeta(received.metaKind, received.meta) as M | undefined;
  } catch (error) {
    received.surface.release();
    throw error;
  }
  return new Frame<M>(received.surface, meta, received.sequence, received.timestamp);
}

/**
 * Internal: yields `receive()`'s frames until the peer is gone
 * (`PeerClosedError`) or `isClosed()` says this side closed (`ClosedError`);
 * any other error ends the iteration by throwing. The async iterator of
 * channels and subscriptions.
 */
export function framesUntilClosed<M>(
  receive: () => Promise<Frame<M>>,
  isClosed: () => boolean,
): AsyncGenerator<Frame<M>, void, undefined> {
  return new FrameIterator(receive, isClosed);
}

/**
 * What an `async function*` looping over `receive()` would be, written out:
 * a frame costs one `then` on `receive()`'s promise and its result object,
 * where the generator's resumption cost ~0.9 KB per frame (issue 20).
 */
class FrameIterator<M> implements AsyncGenerator<Frame<M>, void, undefined> {
  readonly #receive: () => Promise<Frame<M>>;
  readonly #isClosed: () => boolean;
  #done = false;

  constructor(receive: () => Promise<Frame<M>>, isClosed: () => boolean) {
    this.#receive = receive;
    this.#isClosed = isClosed;
  }

  next(): Promise<IteratorResult<Frame<M>, void>> {
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    try {
      return this.#receive().then(this.#yielded, this.#failed);
    } catch (error) {
      return Promise.reject(error).catch(this.#failed);
    }
  }

  readonly #yielded = (frame: Frame<M>): IteratorResult<Frame<M>, void> => {
    if (!this.#done) return { value: frame, done: false };
    frame.close(); // (the iteration was ended meanwhile: nobody would close it)
    return { value: undefined, done: true };
  };

  readonly #failed = (error: unknown): IteratorResult<Frame<M>, void> => {
    this.#done = true;
    if (error instanceof PeerClosedError || (error instanceof ClosedError && this.#isClosed())) {
      return { value: undefined, done: true };
    }
    throw error;
  };

  return(): Promise<IteratorResult<Frame<M>, void>> {
    this.#done = true;
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(error: unknown): Promise<IteratorResult<Frame<M>, void>> {
    this.#done = true;
    return Promise.reject(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }
}
