/**
 * The consumer side of publish/subscribe: {@link subscribe} connects to a
 * publisher, announces its policy and depth (SUBSCRIBE), and returns one
 * credit per frame when the application asks for the next one (CREDIT), so
 * that a "latest" subscriber that stops reading gets the newest frame when
 * it reads again. See the "Publish / subscribe" section of
 * `docs/protocol.md`.
 *
 * @module
 */

import type {
  Backend,
  BackendConnection,
  ConnectionLimits,
  PeerPredicate,
  ReceivedMessage,
} from "../contract/backend.ts";
import { deadlineOf, type WaitOptions } from "../channel/options.ts";
import { type Frame, frameOf, framesUntilClosed } from "../channel/frame.ts";
import {
  ClosedError,
  PeerClosedError,
  type PeerCredentials,
  ProtocolError,
  throwIfAborted,
  TimeoutError,
} from "../core/errors.ts";
import {
  CONTROL_SIZE,
  type DeliveryPolicy,
  encodeCredit,
  MAX_DEPTH,
  writeCredit,
} from "../wire/pubsub_wire.ts";
import { customInspect, inspectOnNode } from "../core/inspect.ts";
import {
  connectSubscriber,
  type PublisherAddress,
  resubscribe,
  type SubscribeOptions,
} from "./subscribe_connect.ts";

/** What {@link Subscription}'s `#failure` returns when the receive goes on with a new connection. */
const RECONNECT = Symbol("reconnect");

/** The options of a `receive` called without any (one object, not one per call). */
const NO_OPTIONS: WaitOptions = Object.freeze({});

/** What a {@link Subscription} counted. */
export interface SubscriptionStats {
  /** Frames received. */
  received: number;
  /**
   * Frames missed, as gaps in `frame.sequence` past the highest sequence
   * seen (per publisher: gaps across a restart are not counted; a sequence
   * that does not increase counts nothing). At most 2^53−1.
   */
  dropped: number;
  /** Times it reconnected to a restarted publisher. */
  reconnects: number;
}

function ignore(): void {}

/** The subscription whose wait's promise is being made: {@link captureWaitResolvers} fills it. */
// deno-lint-ignore no-explicit-any
let capturingSubscription: Subscription<any> | undefined;

/** Takes a wait's resolvers into {@link capturingSubscription} (no closure per wait). */
let captureWaitResolvers: (
  // deno-lint-ignore no-explicit-any
  resolve: (frame: any) => void,
  reject: (error: unknown) => void,
) => void;

/** A subscription to a publisher. Create one with {@link subscribe}. */
export class Subscription<M = unknown> {
  /** The publisher's name. */
  readonly name: string;
  /** Where and how it subscribes again after a publisher restart. */
  readonly #publisher: PublisherAddress;
  readonly #reconnect: boolean;
  readonly #closing = new AbortController();
  readonly #credit = new Uint8Array(CONTROL_SIZE);
  readonly #creditView = new DataView(this.#credit.buffer);
  #connection: BackendConnection | undefined;
  /** Frames received since the last CREDIT: returned when the application asks for the next one. */
  #unacknowledged = 0;
  /** The connection whose credits wait for room in its socket (see #returnCreditsLater). */
  #creditsWaitOn: BackendConnection | undefined;
  #lastSequence = -1;
  #received = 0;
  #dropped = 0;
  #reconnects = 0;
  #closed = false;
  #receiveTail: Promise<unknown> = Promise.resolve();
  /** The connection the running `#wait` receives on, with its deadline and options. */
  #waiting: BackendConnection | undefined;
  #waitingDeadline = Infinity;
  #waitingOptions: WaitOptions = NO_OPTIONS;
  /** receive() calls queued on {@link #receiveTail} and not yet settled. */
  #receivesPending = 0;
  /** The running {@link #wait}'s promise's resolvers, when its connection calls back. */
  #resolveWait: (frame: Frame<M> | Promise<Frame<M>>) => void = ignore;
  #rejectWait: (error: unknown) => void = ignore;

  static {
    captureWaitResolvers = (resolve, reject) => {
      capturingSubscription!.#resolveWait = resolve;
      capturingSubscription!.#rejectWait = reject;
    };
  }

  /** @ignore */
  constructor(
    over: Backend,
    name: string,
    connection: BackendConnection,
    policy: DeliveryPolicy,
    depth: number,
    reconnect: boolean,
    allowPeer: PeerPredicate,
    limits: ConnectionLimits,
  ) {
    this.name = name;
    this.#publisher = { backend: over, name, policy, depth, allowPeer, limits };
    this.#connection = connection;
    this.#reconnect = reconnect;
  }

  /** The current publisher's credentials; `undefined` while reconnecting. */
  get publisher(): PeerCredentials | undefined {
    return this.#connection?.peer;
  }

  /** Counters since {@link subscribe} (a snapshot). */
  get stats(): SubscriptionStats {
    return { received: this.#received, dropped: this.#dropped, reconnects: this.#reconnects };
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Receives the next frame: first returns the credits for the frames
   * received before (so the publisher may send again), then waits. With
   * "latest", a subscriber that did not read for a while gets the newest
   * frame. Rejects with `TimeoutError`, the signal's reason, `ClosedError`,
   * `ProtocolError` for a bad message (the subscription stays usable), or
   * `PeerClosedError` when the publisher is gone (unless `reconnect`).
   * Close each frame when done: the publisher's pool reuses its surface
   * only after every subscriber let go.
   */
  receive(options: WaitOptions = NO_OPTIONS): Promise<Frame<M>> {
    try {
      if (this.#closed) throw new ClosedError("subscription", "receive");
      const deadline = deadlineOf("receive", options.timeout);
      throwIfAborted(options.signal);
      const connection = this.#connection;
      if (this.#receivesPending === 0 && connection?.tryReceive) {
        // Nothing queued: the credits go out and a frame already waiting is taken now, with no
        // promise layers and no thread hop (as Channel.receive does).
        let received;
        try {
          this.#returnCredits(connection);
          received = connection.tryReceive();
        } catch (error) {
          if (error instanceof ProtocolError) {
            this.#unacknowledged++; // a bad message used a credit too
            throw error;
          }
          // The publisher is gone (or this closed): the slow path meets the same error and
          // reconnects or reports it as receive() always has.
        }
        if (received) return Promise.resolve(this.#take(received));
      }
      this.#receivesPending++;
      if (this.#receivesPending === 1) {
        // None before it: it waits at once, on the connection's own promise (no async frame).
        return this.#receiveTail = this.#wait(deadline, options);
      }
      const run = () => this.#wait(deadline, options);
      return this.#receiveTail = this.#receiveTail.then(run, run);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Counts a received message and wraps it in a Frame (both receive paths). */
  #take(received: ReceivedMessage): Frame<M> {
    this.#unacknowledged++;
    const frame = frameOf<M>(received);
    this.#received++;
    // A gap counts only past the highest sequence seen, so a publisher whose numbers jump back
    // and forth cannot count its frames twice; the sum saturates at 2^53-1 (across restarts).
    if (frame.sequence > this.#lastSequence) {
      if (this.#lastSequence >= 0) {
        this.#dropped = Math.min(
          Number.MAX_SAFE_INTEGER,
          this.#dropped + (frame.sequence - this.#lastSequence - 1),
        );
      }
      this.#lastSequence = frame.sequence;
    }
    return frame;
  }

  /**
   * One queued receive: on a connection, its credits go out and its
   * `receive` is awaited through one `then` (the common case: the
   * publisher's next frame); while reconnecting, or after an error that
   * may lead to reconnecting, the loop in {@link #receiveLoop}. Settles
   * {@link #receivesPending}.
   */
  #wait(deadline: number, options: WaitOptions): Promise<Frame<M>> {
    const connection = this.#connection;
    if (this.#closed || !connection) return this.#settled(this.#receiveLoop(deadline, options));
    try {
      this.#returnCredits(connection);
      // One #wait runs at a time (receives queue): its arguments wait in fields, not a closure.
      this.#waiting = connection;
      this.#waitingDeadline = deadline;
      this.#waitingOptions = options;
      if (connection.receiveThen) {
        // The connection calls back: this promise is the receive's only one (no `then` on the
        // connection's own).
        capturingSubscription = this;
        const waited = new Promise<Frame<M>>(captureWaitResolvers);
        capturingSubscription = undefined;
        connection.receiveThen(deadline, options.signal, this.#waitCalledBack);
        return waited;
      }
      return connection.receive(deadline, options.signal).then(this.#waitEnded, this.#waitFailed);
    } catch (error) {
      return this.#settled(this.#receiveFailed(connection, error, deadline, options));
    }
  }

  /** The running {@link #wait}'s `receiveThen` ended: settles its promise. */
  readonly #waitCalledBack = (received: ReceivedMessage | undefined, failure: unknown): void => {
    const resolve = this.#resolveWait;
    const reject = this.#rejectWait;
    this.#resolveWait = ignore;
    this.#rejectWait = ignore;
    if (received === undefined) return resolve(this.#waitFailed(failure));
    try {
      resolve(this.#waitEnded(received));
    } catch (error) {
      reject(error);
    }
  };

  /** The running {@link #wait}'s message came (one function for every receive). */
  readonly #waitEnded = (received: ReceivedMessage): Frame<M> => {
    this.#waiting = undefined;
    this.#waitingOptions = NO_OPTIONS; // (it may hold a signal)
    this.#receivesPending--;
    return this.#take(received);
  };

  /** The running {@link #wait}'s receive failed. */
  readonly #waitFailed = (error: unknown): Promise<Frame<M>> => {
    const connection = this.#waiting!;
    const options = this.#waitingOptions;
    this.#waiting = undefined;
    this.#waitingOptions = NO_OPTIONS;
    return this.#settled(this.#receiveFailed(connection, error, this.#waitingDeadline, options));
  };

  /** Settles {@link #receivesPending} once `result` settles (the slow paths). */
  async #settled(result: Promise<Frame<M>>): Promise<Frame<M>> {
    try {
      return await result;
    } finally {
      this.#receivesPending--;
    }
  }

  /** A receive on `connection` failed: reconnect, or report it as {@link receive} documents. */
  #receiveFailed(
    connection: BackendConnection,
    error: unknown,
    deadline: number,
    options: WaitOptions,
  ): Promise<Frame<M>> {
    if (error instanceof ProtocolError) this.#unacknowledged++; // it used a credit too
    const failure = this.#failure(connection, error, options);
    return failure === RECONNECT ? this.#receiveLoop(deadline, options) : Promise.reject(failure);
  }

  /**
   * What a failed receive on `connection` becomes: the error to report, or
   * {@link RECONNECT} (the publisher is gone and `reconnect` is set: the
   * connection is closed and forgotten).
   */
  #failure(connection: BackendConnection, error: unknown, options: WaitOptions): unknown {
    if (error instanceof TimeoutError && options.timeout !== undefined) {
      return new TimeoutError("receive", options.timeout);
    }
    if (error instanceof PeerClosedError && this.#reconnect && !this.#closed) {
      if (this.#connection === connection) this.#connection = undefined;
      connection.close();
      return RECONNECT;
    }
    if (error instanceof ClosedError && this.#closed) {
      return new ClosedError("subscription", "receive");
    }
    return error;
  }

  /** Receives while reconnecting: waits for the publisher to come back, then for a frame. */
  async #receiveLoop(deadline: number, options: WaitOptions): Promise<Frame<M>> {
    for (;;) {
      if (this.#closed) throw new ClosedError("subscription", "receive");
      const connection = this.#connection ?? await this.#resubscribe(deadline, options);
      try {
        this.#returnCredits(connection);
        let received;
        try {
          received = await connection.receive(deadline, options.signal);
        } catch (error) {
          if (error instanceof ProtocolError) this.#unacknowledged++; // it used a credit too
          throw error;
        }
        return this.#take(received);
      } catch (error) {
        const failure = this.#failure(connection, error, options);
        if (failure !== RECONNECT) throw failure;
      }
    }
  }

  /**
   * Returns the credits for the frames received so far without ever waiting:
   * a publisher that stops reading them (its socket full) must not stand
   * between this subscriber and frames it already has. What cannot go now
   * is sent by {@link #returnCreditsLater} once there is room, together with
   * any credit that comes meanwhile (one CREDIT for up to 64 frames).
   */
  #returnCredits(connection: BackendConnection): void {
    if (this.#creditsWaitOn === connection) return; // they go out together when there is room
    while (this.#unacknowledged > 0) {
      const count = Math.min(this.#unacknowledged, MAX_DEPTH);
      writeCredit(this.#creditView, count);
      if (!connection.trySendControl?.(this.#credit)) {
        this.#returnCreditsLater(connection);
        return;
      }
      this.#unacknowledged -= count;
    }
  }

  /** Sends the pending credits as room appears (or at once where there is no `trySendControl`). */
  async #returnCreditsLater(connection: BackendConnection): Promise<void> {
    this.#creditsWaitOn = connection;
    try {
      while (this.#unacknowledged > 0 && this.#connection === connection && !this.#closed) {
        const count = Math.min(this.#unacknowledged, MAX_DEPTH);
        await connection.sendControl(encodeCredit(count), Infinity, this.#closing.signal);
        this.#unacknowledged -= count;
      }
    } catch {
      // Closed, or the publisher is gone: receive() sees that on its own.
    } finally {
      if (this.#creditsWaitOn === connection) this.#creditsWaitOn = undefined;
    }
  }

  /**
   * Waits for the publisher's name to come back, until `deadline`, subscribes
   * again (see {@link resubscribe}) and takes the new connection, whose
   * credits and sequence numbers start anew.
   */
  async #resubscribe(deadline: number, options: WaitOptions): Promise<BackendConnection> {
    const connection = await resubscribe(this.#publisher, deadline, options, this.#closing.signal);
    if (this.#closed) {
      // close() ran while the connection was handed back: it is this one's to close.
      connection.close();
      throw new ClosedError("subscription", "receive");
    }
    this.#connection = connection;
    this.#reconnects++;
    this.#unacknowledged = 0; // credits are per connection: the old publisher is gone
    this.#lastSequence = -1; // a new publisher numbers its frames anew
    return connection;
  }

  /**
   * Yields frames until the subscription is closed, or the publisher goes
   * away (without `reconnect`). A `ProtocolError` ends the iteration by
   * throwing.
   */
  [Symbol.asyncIterator](): AsyncGenerator<Frame<M>, void, undefined> {
    return framesUntilClosed(() => this.receive(), () => this.#closed);
  }

  /** Disconnects; a pending `receive` rejects with `ClosedError`. Frames already received stay valid. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort(new ClosedError("subscription", "receive"));
    this.#connection?.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  static {
    inspectOnNode(this);
  }

  /** Shows the name, policy and counters in `console.log`. */
  [customInspect](): string {
    const state = this.#closed ? "closed" : this.#connection ? "connected" : "reconnecting";
    return `Subscription(${
      JSON.stringify(this.name)
    }, ${this.#publisher.policy}/${this.#publisher.depth}, ${state}, received ${this.#received}, dropped ${this.#dropped}, reconnects ${this.#reconnects})`;
  }
}

/** Settles a queue tail without holding on to the value it settled with. */

/**
 * Subscribes to the publisher bound under `name` (see `publish()`),
 * checking its credentials with `allowPeer` (default: same uid). The first
 * frame is the publisher's most recent one, if it kept it.
 *
 * Start order: with `timeout`, waits for the publisher to appear (retrying
 * while nothing is bound under the name) and rejects with `TimeoutError`
 * after `timeout` ms; without it, fails at once when there is no
 * publisher, as `connect()` does.
 *
 * @example
 * ```ts
 * import { subscribe } from "@surfaceport/surfaceport";
 *
 * using subscription = await subscribe("camera", { policy: "latest", timeout: 5000 });
 * for await (const frame of subscription) {
 *   console.log(frame.sequence, frame.meta); // gaps: frames this slow consumer skipped
 *   frame.close();
 * }
 * ```
 */
export async function subscribe<M = unknown>(
  name: string,
  options: SubscribeOptions = {},
): Promise<Subscription<M>> {
  const { publisher, connection, reconnect } = await connectSubscriber(name, options);
  return new Subscription<M>(
    publisher.backend,
    name,
    connection,
    publisher.policy,
    publisher.depth,
    reconnect,
    publisher.allowPeer,
    publisher.limits,
  );
}
