/**
 * Frames: a received surface with its metadata, sequence number and
 * timestamp, as channels and subscriptions hand them out.
 *
 * @module
 */

import type { ReceivedMessage } from "../contract/backend.ts";
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
 * A surface received from a peer, with what was sent along with it. `M` is
 * the metadata's type as the application knows it (not checked: it is
 * whatever the sender sent).
 */
export class Frame<M = unknown> {
  /** The received surface: the very memory the sender wrote, not a copy. */
  readonly surface: Surface;
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
   * When the sender sent it, in microseconds since the Unix epoch (unless it
   * passed its own): `nowMicros() - frame.timestamp` is the handoff latency.
   */
  readonly timestamp: number;

  /** @ignore */
  constructor(surface: Surface, meta: M | undefined, sequence: number, timestamp: number) {
    this.surface = surface;
    this.meta = meta;
    this.sequence = sequence;
    this.timestamp = timestamp;
  }

  /** Closes the surface: the sender's pool may reuse it once no one else holds it. */
  close(): void {
    this.surface.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  static {
    inspectOnNode(this);
  }

  /** What `console.log` shows: sequence, age, metadata, the surface. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    const state = {
      sequence: this.sequence,
      timestamp: this.timestamp,
      ageMicros: clockNow() - this.timestamp,
      meta: this.meta,
      closed: this.surface.closed,
      surface: this.surface,
    };
    return `Frame ${inspect(state, options)}`;
  }
}

/** Internal: the {@link Frame} for a received message; the frame owns its surface. */
export function frameOf<M>(received: ReceivedMessage): Frame<M> {
  // The surface's one finalizer registration (held value: the backing itself) releases the
  // backing if the frame is dropped: no closure, no second registration.
  const surface = new Surface(received.surface, received.surface, true, "received");
  try {
    const meta = decodeMeta(received.metaKind, received.meta) as M | undefined;
    return new Frame<M>(surface, meta, received.sequence, received.timestamp);
  } catch (error) {
    surface.close();
    throw error;
  }
}

/**
 * Internal: yields `receive()`'s frames until the peer is gone
 * (`PeerClosedError`) or `isClosed()` says this side closed (`ClosedError`);
 * any other error ends the iteration by throwing. The async iterator of
 * channels and subscriptions.
 */
export async function* framesUntilClosed<M>(
  receive: () => Promise<Frame<M>>,
  isClosed: () => boolean,
): AsyncGenerator<Frame<M>, void, undefined> {
  for (;;) {
    try {
      yield await receive();
    } catch (error) {
      if (error instanceof PeerClosedError || (error instanceof ClosedError && isClosed())) {
        return;
      }
      throw error;
    }
  }
}
