/**
 * How a subscriber reaches its publisher: the checks of `subscribe()`'s
 * options, the first connection (waiting for the name up to `timeout`) with
 * its SUBSCRIBE, and, with `reconnect`, the wait for a restarted
 * publisher's name to come back, with backoff, and the SUBSCRIBE again.
 * `subscribe.ts` keeps the {@link Subscription}'s receive, its credits and
 * counters, and decides when to reconnect. See the "Publish / subscribe"
 * section of `docs/protocol.md`.
 *
 * @module
 */

import type {
  Backend,
  BackendConnection,
  ConnectionLimits,
  PeerPredicate,
} from "../contract/backend.ts";
import {
  abortableSleep,
  type ChannelOptions,
  connectBackend,
  resolveConnectOptions,
  type WaitOptions,
} from "../channel/options.ts";
import { ClosedError, PeerClosedError, throwIfAborted, TimeoutError } from "../core/errors.ts";
import { backend } from "../platform.ts";
import { type DeliveryPolicy, encodeSubscribe, MAX_DEPTH } from "../wire/pubsub_wire.ts";

/** Options of `subscribe()`: those of `connect()`, plus the delivery policy. */
export interface SubscribeOptions extends ChannelOptions {
  /**
   * `"latest"` (default): at most `depth` frames wait unconsumed; while
   * this subscriber does not read, the publisher keeps only the newest
   * frame for it (older ones are released and dropped) and is never slowed
   * down. `"queue"`: every frame, in order; the publisher's `send` waits
   * while this subscriber has `depth` frames it has not asked past.
   */
  policy?: DeliveryPolicy;
  /** Frames in flight to this subscriber, 1 to 64 (default 1). */
  depth?: number;
  /**
   * How long to wait for the publisher to appear, in ms (retrying while
   * nothing is bound under the name). Without it, `subscribe` fails at once
   * when no publisher is there.
   */
  timeout?: number;
  /** Gives up when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignal;
  /**
   * Survive publisher restarts: when the publisher goes away, `receive()`
   * waits for the name to come back (bounded by its own `timeout`),
   * subscribes again and continues. Frames published in between are
   * missed; `frame.sequence` restarts with the new publisher's numbering,
   * and `stats.reconnects` counts the restarts. Default false: `receive()`
   * rejects with `PeerClosedError` and iteration ends.
   */
  reconnect?: boolean;
}

/**
 * Internal: where a subscriber subscribes, and how: checked once by
 * {@link connectSubscriber}, kept by its `Subscription` for reconnecting.
 */
export interface PublisherAddress {
  /** The backend it connects over. */
  readonly backend: Backend;
  /** The publisher's name. */
  readonly name: string;
  /** The delivery policy its SUBSCRIBE asks for. */
  readonly policy: DeliveryPolicy;
  /** The frames in flight its SUBSCRIBE asks for (1 to {@link MAX_DEPTH}). */
  readonly depth: number;
  /** Checks the publisher's credentials at each connect. */
  readonly allowPeer: PeerPredicate;
  /** The limits of each connection. */
  readonly limits: ConnectionLimits;
}

/** Internal: what {@link connectSubscriber} connected, and with what. */
export interface SubscriberConnection {
  /** Where it subscribed (kept for reconnecting). */
  readonly publisher: PublisherAddress;
  /** The connection, SUBSCRIBE sent; the caller owns it. */
  readonly connection: BackendConnection;
  /** Whether the subscription survives publisher restarts (`reconnect`). */
  readonly reconnect: boolean;
}

/**
 * Internal: `subscribe()`'s first connection. Checks `options` (a
 * `TypeError` or `RangeError` before anything connects), connects to the
 * publisher bound under `name` (waiting for it up to `options.timeout`) and
 * sends SUBSCRIBE; closes the connection if that send fails.
 */
export async function connectSubscriber(
  name: string,
  options: SubscribeOptions,
): Promise<SubscriberConnection> {
  const policy = options.policy ?? "latest";
  if (policy !== "latest" && policy !== "queue") {
    throw new TypeError(`subscribe: policy must be "latest" or "queue", got ${String(policy)}`);
  }
  const depth = options.depth ?? 1;
  if (!Number.isInteger(depth) || depth < 1 || depth > MAX_DEPTH) {
    throw new RangeError(`subscribe: depth must be an integer from 1 to ${MAX_DEPTH}`);
  }
  if (options.reconnect !== undefined && typeof options.reconnect !== "boolean") {
    throw new TypeError("subscribe: reconnect must be a boolean");
  }
  const resolved = resolveConnectOptions("subscribe", options);
  const { limits, deadline, allowPeer } = resolved;
  const over = backend();
  const connection = await connectBackend(over, name, resolved, options.timeout, options.signal);
  try {
    await connection.sendControl(encodeSubscribe(policy, depth), deadline, options.signal);
  } catch (error) {
    connection.close();
    throw error;
  }
  return {
    publisher: { backend: over, name, policy, depth, allowPeer, limits },
    connection,
    reconnect: options.reconnect ?? false,
  };
}

/**
 * Internal: waits for `publisher`'s name to come back, until `deadline`
 * (retrying with backoff from 10 to 250 ms while nothing is bound under it
 * or the publisher there goes away at once), and subscribes again. Rejects
 * with `ClosedError` once `closing` aborts (the subscription closed),
 * `TimeoutError` at the deadline, the signal's reason, or any other error
 * of the connect. The caller owns the connection it resolves with.
 */
export async function resubscribe(
  publisher: PublisherAddress,
  deadline: number,
  options: WaitOptions,
  closing: AbortSignal,
): Promise<BackendConnection> {
  const signal = options.signal ? AbortSignal.any([options.signal, closing]) : closing;
  for (let backoff = 10;; backoff = Math.min(backoff * 2, 250)) {
    if (closing.aborted) throw new ClosedError("subscription", "receive");
    throwIfAborted(options.signal);
    let connection: BackendConnection | undefined;
    try {
      connection = await publisher.backend.connect(
        publisher.name,
        publisher.allowPeer,
        publisher.limits,
        deadline,
        signal,
      );
      await connection.sendControl(
        encodeSubscribe(publisher.policy, publisher.depth),
        deadline,
        signal,
      );
      if (closing.aborted) throw new ClosedError("subscription", "receive");
      return connection;
    } catch (error) {
      connection?.close();
      if (closing.aborted) throw new ClosedError("subscription", "receive");
      if (!publisher.backend.nameAbsent(error) && !(error instanceof PeerClosedError)) throw error;
    }
    const remaining = deadline - performance.now();
    if (remaining <= 0) throw new TimeoutError("receive", options.timeout ?? 0);
    try {
      await abortableSleep(Math.min(backoff, remaining), signal);
    } catch (error) {
      if (closing.aborted) throw new ClosedError("subscription", "receive");
      throw error;
    }
  }
}
