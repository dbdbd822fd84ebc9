/**
 * One producer, many consumers: {@link publish} binds a name that any number
 * of subscribers (`subscribe()` in `src/pubsub/subscribe.ts`, or a C / Python peer
 * speaking `docs/protocol.md`) connect to. Platform-neutral: it runs on the
 * backend's connections and listeners, like `Channel` and `Listener`.
 *
 * Flow control is by credit (the "Publish / subscribe" section of
 * `docs/protocol.md`): a subscriber's SUBSCRIBE names its policy and depth,
 * and the publisher keeps at most `depth` frames in flight to it; each
 * CREDIT returns some. When a subscriber has no credit, a "latest" one gets
 * only the newest frame, held here (an older held frame is released and
 * counted in `dropped`), and a "queue" one makes `send` wait. Every frame
 * held for a subscriber holds its own capability, so the surface counts as
 * in use until it is sent and released, or dropped.
 *
 * @module
 */

import type { Backend, BackendConnection, BackendListener } from "../contract/backend.ts";
import {
  type ChannelOptions,
  deadlineOf,
  resolveLimits,
  resolvePeerCheck,
  type SendOptions,
} from "../channel/options.ts";
import {
  ClosedError,
  PeerClosedError,
  ProtocolError,
  throwIfAborted,
  TimeoutError,
} from "../core/errors.ts";
import { backend, nowMicros as clockNow } from "../platform.ts";
import { decodeControlMessage, MESSAGE_SUBSCRIBE } from "../wire/pubsub_wire.ts";
import { register, type Registration } from "../channel/registry.ts";
import {
  BlockedWatch,
  type Budget,
  type BudgetOptions,
  resolveBudget,
  surfaceBudget,
} from "./budget.ts";
import {
  type Outgoing,
  SendBatch,
  type SubscriberInfo,
  SubscriberState,
} from "./subscriber_state.ts";
import { backingOf, Surface } from "../surface/surface.ts";
import {
  DEFAULT_MAX_META_BYTES,
  encodeHeader,
  encodeMeta,
  HEADER_SIZE,
  type Meta,
} from "../wire/wire.ts";
import { customInspect, inspectOnNode } from "../core/inspect.ts";

/**
 * Options of {@link publish}: those of `listen()`, what a publisher keeps,
 * and what it grants each subscriber (`maxDepth`, `maxSubscribers`,
 * `stallTimeout`, `onCutOff`: see `docs/protocol.md`, "Budgets").
 */
export interface PublishOptions extends ChannelOptions, BudgetOptions {
  /**
   * Keep the most recent frame (one capability, so its surface stays in
   * use until the next frame) and hand it to each new subscriber at once.
   * Default true.
   */
  keepLast?: boolean;
}

/** A publisher that sent nothing for this long watches every subscriber for hang-ups (ms). */
export const IDLE_MS = 100;

/**
 * How long a new subscriber has to send SUBSCRIBE before it counts as a
 * plain peer (ms), counted from when the publisher accepts its connection.
 */
export const SUBSCRIBE_GRACE_MS = 500;

/** How many connections the accept loop takes before it lets the event loop turn. */
const ACCEPT_BURST = 8;

/** What a {@link Publisher} counted since it was made. */
export interface PublisherStats {
  /** Subscribers cut off: stalled, or broke the control protocol. */
  cutOff: number;
  /** Peers hung up on because `maxSubscribers` were connected. */
  refused: number;
}
/**
 * A bound name that hands each frame to every current subscriber. Create
 * one with {@link publish}. While open it keeps the process running (it
 * waits for subscribers, like a server): close it when done.
 */
export class Publisher<M = unknown> {
  /** The name it was bound under. */
  readonly name: string;
  /** The bound address: `@surfaceport/NAME` (abstract), a socket path, or the bootstrap name. */
  readonly address: string;
  readonly #backend: Backend;
  readonly #listener: BackendListener;
  readonly #registration: Registration | undefined;
  readonly #subscribers = new Set<SubscriberState>();
  readonly #keepLast: boolean;
  readonly #budget: Budget;
  #last: Outgoing | undefined;
  #cutOff = 0;
  #refused = 0;
  readonly #blocked: BlockedWatch;
  #registryTimer: ReturnType<typeof setTimeout> | undefined;
  #sequence = 0n;
  #closed = false;
  /** No frame was sent for {@link IDLE_MS}: every subscriber gets a parked wait (hang-ups). */
  #idle = true;
  #lastSend = 0;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;

  /** @ignore */
  constructor(
    over: Backend,
    name: string,
    listener: BackendListener,
    registration: Registration | undefined,
    keepLast: boolean,
    budget: Budget,
  ) {
    this.name = name;
    this.address = listener.address;
    this.#backend = over;
    this.#listener = listener;
    this.#registration = registration;
    this.#keepLast = keepLast;
    this.#budget = budget;
    this.#blocked = new BlockedWatch(
      this.#subscribers,
      budget.stallTimeout,
      (subscriber) => this.#pump(subscriber),
      (subscriber, reason) => this.#drop(subscriber, reason),
    );
    this.#acceptLoop();
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The current subscribers (a snapshot). */
  get subscribers(): SubscriberInfo[] {
    return [...this.#subscribers].map((s) => s.info());
  }

  /** What it counted: subscribers cut off, peers refused (a snapshot). */
  get stats(): PublisherStats {
    return { cutOff: this.#cutOff, refused: this.#refused };
  }

  /**
   * The most surfaces its subscribers (and its own most recent frame) can
   * keep in use at once while they keep to their budgets: `maxSubscribers
   * × (maxDepth + 1)`, plus 1 with `keepLast`. A pool of this many surfaces
   * plus those the producer holds itself (at least the one it paints) never
   * runs out because of subscribers that stop reading; a smaller one may,
   * and the producer then skips frames (`cli testcard` does). Frames a
   * subscriber received and keeps open after asking for more are not
   * counted: see "What a consumer can cost" in `docs/protocol.md`.
   */
  get surfaceBudget(): number {
    return surfaceBudget(this.#budget, this.#keepLast);
  }

  /**
   * Hands `surface` to every current subscriber, each with its own
   * capability, so a pool sees the surface in use until every one of them
   * let go (or died). The caller's surface stays open.
   *
   * Resolves once the frame is handed to every "queue" subscriber, and
   * handed to or held for every "latest" one (a held frame goes out when
   * that subscriber returns a credit, unless a newer frame replaces it):
   * "latest" subscribers never make it wait. `timeout` / `signal` bound
   * the wait for "queue" subscribers; on expiry the frame is withdrawn from
   * those that have not got it and the promise rejects (`TimeoutError`, or
   * the signal's reason). A subscriber that goes away, or is cut off as
   * stalled (`stallTimeout`), meanwhile counts as served. Every subscriber sees the same `sequence` for a frame. If a
   * capability cannot be made for some subscriber (e.g. `EMFILE`), the
   * frame is withdrawn the same way and the promise rejects with that error.
   */
  send(surface: Surface, meta?: M, options: SendOptions = {}): Promise<void> {
    let batch: SendBatch | undefined;
    try {
      if (this.#closed) throw new ClosedError("publisher", "send");
      if (!(surface instanceof Surface)) throw new TypeError("send: expected a Surface");
      const deadline = deadlineOf("send", options.timeout);
      throwIfAborted(options.signal);
      const timestamp = options.timestamp ?? clockNow();
      if (typeof timestamp !== "number" || !(Math.abs(Math.trunc(timestamp)) <= 2 ** 53 - 1)) {
        throw new RangeError(`send: timestamp ${timestamp} is not a number within ±(2^53-1)`);
      }
      const encoded = encodeMeta(meta as Meta);
      if (encoded.bytes.length > DEFAULT_MAX_META_BYTES) {
        throw new RangeError(
          `send: metadata is ${encoded.bytes.length} bytes, the limit is ${DEFAULT_MAX_META_BYTES}`,
        );
      }
      const backing = backingOf(surface, "send");
      const message = new Uint8Array(HEADER_SIZE + encoded.bytes.length);
      encodeHeader(
        new DataView(message.buffer),
        backing.geometry,
        encoded.kind,
        encoded.bytes.length,
        this.#sequence++,
        timestamp,
      );
      message.set(encoded.bytes, HEADER_SIZE);
      const b = this.#backend;
      this.#busy();
      for (const subscriber of this.#subscribers) {
        // Credits that came back since the last frame, read now without waiting.
        if (!this.#drainControl(subscriber)) continue;
        const item: Outgoing = { message, handle: backing.exportHandle() };
        if (subscriber.state === "subscribed" && subscriber.policy === "queue") {
          batch ??= new SendBatch(b, deadline, options.timeout, options.signal);
          item.batch = batch;
          batch.add(subscriber, item);
          subscriber.queue.push(item);
        } else {
          this.#hold(subscriber, item);
        }
        // No call (and no promise) for a subscriber that cannot take it now.
        if (!subscriber.sending && subscriber.hasCredit) this.#pump(subscriber);
        this.#waitIfNeeded(subscriber);
        this.#blocked.note(subscriber);
      }
      // Only now the last frame: a SUBSCRIBE drained in the loop above must not be offered this
      // frame as "the last one" and then get it again as the frame itself.
      if (this.#keepLast) {
        const handle = backing.exportHandle();
        if (this.#last) b.releaseHandle(this.#last.handle);
        this.#last = { message, handle };
      }
      if (!batch || batch.remaining === 0) return Promise.resolve();
      return batch.promise;
    } catch (error) {
      // Failed part-way (e.g. exporting a capability hit EMFILE): withdraw the frame from the
      // "queue" subscribers it was queued for, and reject through the batch's own promise, so
      // that no orphaned batch rejects later where nobody listens.
      if (batch) {
        batch.fail(error);
        return batch.promise;
      }
      return Promise.reject(error);
    }
  }

  /** Holds `item` as the subscriber's newest frame, releasing (dropping) an older one. */
  #hold(subscriber: SubscriberState, item: Outgoing): void {
    if (subscriber.pending) {
      this.#backend.releaseHandle(subscriber.pending.handle);
      subscriber.dropped++;
    }
    subscriber.pending = item;
  }

  async #acceptLoop(): Promise<void> {
    for (let backoff = 10, accepted = 0; !this.#closed;) {
      let connection: BackendConnection;
      try {
        // Connections waiting in the backlog are accepted without the event loop turning (a
        // resolved accept is a microtask): after a few, let it turn, so that a flood of
        // connect-and-close peers delays the subscribers' frames by one burst at most.
        if (++accepted % ACCEPT_BURST === 0) await new Promise((resolve) => setTimeout(resolve, 0));
        connection = await this.#listener.accept();
        backoff = 10;
      } catch {
        if (this.#closed) return;
        // e.g. EMFILE: try again a little later rather than spin or stop serving.
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(backoff * 2, 1000);
        continue;
      }
      if (this.#closed) {
        connection.close();
        return;
      }
      if (this.#subscribers.size >= this.#budget.maxSubscribers) {
        this.#refused++;
        connection.close(); // it sees the end of the stream
        continue;
      }
      this.#admit(connection);
    }
  }

  #admit(connection: BackendConnection): void {
    const subscriber = new SubscriberState(connection);
    this.#subscribers.add(subscriber);
    subscriber.graceTimer = setTimeout(() => {
      if (subscriber.state !== "pending" || !this.#drainControl(subscriber)) return;
      if (subscriber.state === "pending") {
        subscriber.state = "plain";
        this.#offerLast(subscriber);
      }
      this.#pump(subscriber);
      this.#blocked.note(subscriber);
    }, SUBSCRIBE_GRACE_MS);
    this.#registryChanged();
    this.#waitIfNeeded(subscriber);
  }

  /**
   * Holds the most recent frame for a subscriber that has been sent nothing
   * and holds nothing yet, once it is subscribed or plain (not at connect:
   * a peer that connects and leaves at once costs no capability).
   */
  #offerLast(subscriber: SubscriberState): void {
    if (!this.#last || subscriber.sent > 0 || subscriber.hasWaiting) return;
    try {
      const handle = this.#backend.duplicateHandle(this.#last.handle);
      subscriber.pending = { message: this.#last.message, handle };
    } catch {
      // out of descriptors: this subscriber starts with the next frame
    }
  }

  /** Applies one control message; throws on a protocol violation. */
  #handleControl(subscriber: SubscriberState, bytes: Uint8Array): void {
    const message = decodeControlMessage(bytes);
    if (message.type === MESSAGE_SUBSCRIBE) {
      if (subscriber.state === "subscribed") {
        throw new ProtocolError("BAD_CONTROL", "a second SUBSCRIBE");
      }
      clearTimeout(subscriber.graceTimer);
      subscriber.policy = message.policy;
      subscriber.requestedDepth = message.depth;
      subscriber.depth = Math.min(message.depth, this.#budget.maxDepth);
      // inFlight stays: every frame sent on the connection (a plain peer's too) needs a credit.
      subscriber.state = "subscribed";
      this.#offerLast(subscriber);
      if (message.policy === "queue" && subscriber.pending) {
        subscriber.queue.push(subscriber.pending);
        subscriber.pending = undefined;
      }
    } else {
      if (subscriber.state !== "subscribed") {
        throw new ProtocolError("BAD_CONTROL", "CREDIT before SUBSCRIBE");
      }
      subscriber.inFlight = Math.max(0, subscriber.inFlight - message.count);
    }
  }

  /**
   * Applies every control message queued now, without waiting. False if the
   * subscriber is gone or misbehaved (then it is dropped).
   */
  #drainControl(subscriber: SubscriberState): boolean {
    if (subscriber.closed) return false;
    try {
      for (;;) {
        const bytes = subscriber.connection.tryReceiveControl();
        if (!bytes) return true;
        this.#handleControl(subscriber, bytes);
      }
    } catch (error) {
      this.#drop(subscriber, error); // gone (PeerClosedError), or a protocol violation
      return false;
    }
  }

  /**
   * Whether a subscriber needs a parked wait for its control messages: while
   * something waits for its credit or SUBSCRIBE, and while the publisher is
   * idle (to see hang-ups). A subscriber that keeps up has its credits read
   * by the next `send` instead: no wake-up of a worker thread per frame.
   */
  #needsWait(subscriber: SubscriberState): boolean {
    return !subscriber.closed &&
      (this.#idle || subscriber.state === "pending" || subscriber.pending !== undefined ||
        subscriber.queue.length > 0);
  }

  #waitIfNeeded(subscriber: SubscriberState): void {
    if (!subscriber.waiting && this.#needsWait(subscriber)) this.#waitControl(subscriber);
  }

  /** Parks for control messages while {@link #needsWait}; never rejects. */
  async #waitControl(subscriber: SubscriberState): Promise<void> {
    subscriber.waiting = true;
    try {
      while (this.#needsWait(subscriber)) {
        const bytes = await subscriber.connection.receiveControl(Infinity);
        if (subscriber.closed) return;
        this.#handleControl(subscriber, bytes);
        if (!this.#drainControl(subscriber)) return;
        this.#pump(subscriber);
      }
    } catch (error) {
      this.#drop(subscriber, error); // gone (PeerClosedError), closed here, or a protocol violation
    } finally {
      subscriber.waiting = false;
    }
  }

  /** A frame is being sent: not idle; after {@link IDLE_MS} without one, idle again. */
  #busy(): void {
    this.#lastSend = performance.now();
    this.#idle = false;
    this.#idleTimer ??= setTimeout(this.#checkIdle, IDLE_MS);
  }

  readonly #checkIdle = (): void => {
    this.#idleTimer = undefined;
    if (this.#closed) return;
    const quiet = performance.now() - this.#lastSend;
    if (quiet < IDLE_MS) {
      this.#idleTimer = setTimeout(this.#checkIdle, IDLE_MS - quiet);
      return;
    }
    this.#idle = true;
    for (const subscriber of this.#subscribers) this.#waitIfNeeded(subscriber);
  };

  /** Sends what the subscriber has credit for; one pump per subscriber at a time, never rejects. */
  async #pump(subscriber: SubscriberState): Promise<void> {
    if (subscriber.sending) return;
    subscriber.sending = true;
    try {
      while (!subscriber.closed && subscriber.hasCredit) {
        let item: Outgoing | undefined;
        if (subscriber.state === "subscribed" && subscriber.policy === "queue") {
          item = subscriber.queue.shift();
        } else {
          item = subscriber.pending;
          subscriber.pending = undefined;
        }
        if (!item) return;
        subscriber.inFlight++; // before the wait: a credit may arrive while the kernel is full
        const batch = item.batch;
        try {
          await subscriber.connection.send(
            item.message,
            item.handle,
            batch?.deadline ?? Infinity,
            batch?.signal,
          );
        } catch (error) {
          subscriber.inFlight--;
          if (error instanceof PeerClosedError || error instanceof ClosedError) {
            batch?.done();
            this.#drop(subscriber);
            return;
          }
          if (batch) {
            // This send() timed out or was aborted; the backend released the handle.
            subscriber.dropped++;
            batch.fail(error);
            continue;
          }
          this.#drop(subscriber); // anything else: this subscriber cannot be served
          return;
        }
        subscriber.sent++;
        batch?.done();
      }
    } catch {
      this.#drop(subscriber);
    } finally {
      subscriber.sending = false;
      this.#waitIfNeeded(subscriber); // e.g. out of credit with a frame held
      this.#blocked.note(subscriber);
    }
  }

  /** The registry entry's subscriber count is rewritten at most once per {@link IDLE_MS}. */
  #registryChanged(): void {
    if (!this.#registration || this.#registryTimer !== undefined || this.#closed) return;
    this.#registryTimer = setTimeout(() => {
      this.#registryTimer = undefined;
      if (!this.#closed) this.#registration?.update(this.#subscribers.size);
    }, IDLE_MS);
  }

  /**
   * Disconnects a subscriber and releases everything held for it. Idempotent.
   * `reason`: why; a stall (`TimeoutError`) or a protocol violation
   * (`ProtocolError`) counts as a cut-off and is reported to `onCutOff`.
   */
  #drop(subscriber: SubscriberState, reason?: unknown): void {
    if (subscriber.closed) return;
    const cutOff = !this.#closed &&
      (reason instanceof ProtocolError || reason instanceof TimeoutError);
    const info = cutOff ? subscriber.info() : undefined;
    subscriber.closed = true;
    subscriber.blockedSince = -1;
    clearTimeout(subscriber.graceTimer);
    this.#subscribers.delete(subscriber);
    subscriber.connection.close();
    const b = this.#backend;
    if (subscriber.pending) b.releaseHandle(subscriber.pending.handle);
    subscriber.pending = undefined;
    for (const item of subscriber.queue.splice(0)) {
      b.releaseHandle(item.handle);
      item.batch?.done(); // a subscriber that is gone does not hold up send()
    }
    this.#registryChanged();
    if (info) {
      this.#cutOff++;
      try {
        this.#budget.onCutOff?.(info, reason as Error);
      } catch {
        // the callback's failure is not the publisher's
      }
    }
  }

  /**
   * Stops publishing: unbinds the name, disconnects every subscriber (they
   * see the publisher close) and releases every frame held for them; a
   * pending `send` for "queue" subscribers resolves. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    this.#blocked.close();
    clearTimeout(this.#registryTimer);
    this.#registration?.remove(); // first: a registry entry never outlives the bound name
    this.#listener.close();
    for (const subscriber of [...this.#subscribers]) this.#drop(subscriber);
    if (this.#last) this.#backend.releaseHandle(this.#last.handle);
    this.#last = undefined;
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  static {
    inspectOnNode(this);
  }

  /** Shows the name and the subscribers in `console.log`. */
  [customInspect](): string {
    return `Publisher(${JSON.stringify(this.name)}, ${
      this.#closed ? "closed" : `${this.#subscribers.size} subscribers`
    })`;
  }
}

/**
 * Binds `name` for publishing and returns a {@link Publisher} (bound when
 * this returns). Any number of subscribers may connect, admitted by
 * `allowPeer` exactly like `listen()` (default: same uid); names follow
 * `listen()` (abstract socket or path on Linux, bootstrap name on macOS).
 * The publisher is entered in this user's registry so that `list()` shows
 * it with its subscriber count.
 *
 * @example
 * ```ts
 * import { publish, SurfacePool } from "@surfaceport/surfaceport";
 *
 * using publisher = publish("camera");
 * using pool = new SurfacePool({ width: 1280, height: 720, maxSurfaces: 6 });
 * for (let pts = 0; pts < 3; pts++) {
 *   using surface = await pool.acquire({ timeout: 1000 });
 *   surface.bytes().fill(pts);
 *   await publisher.send(surface, { pts }); // never waits for "latest" subscribers
 * }
 * ```
 */
export function publish<M = unknown>(name: string, options: PublishOptions = {}): Publisher<M> {
  const limits = resolveLimits(options);
  const budget = resolveBudget(options);
  if (options.keepLast !== undefined && typeof options.keepLast !== "boolean") {
    throw new TypeError("keepLast must be a boolean");
  }
  const over = backend();
  const listener = over.listen(name, resolvePeerCheck(options), limits);
  let registration: Registration | undefined;
  try {
    registration = register("publisher", name, listener.address, 0);
    return new Publisher<M>(
      over,
      name,
      listener,
      registration,
      options.keepLast ?? true,
      budget,
    );
  } catch (error) {
    registration?.remove();
    listener.close();
    throw error;
  }
}
