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
import { ClosedError, throwIfAborted } from "../core/errors.ts";
import { backend, nowMicros as clockNow } from "../platform.ts";
import { register, type Registration } from "../channel/registry.ts";
import { type Budget, type BudgetOptions, resolveBudget, surfaceBudget } from "./budget.ts";
import { Delivery, SendOutcome } from "./delivery.ts";
import type { SendBatch } from "./send_batch.ts";
import type { FrameMessage, SubscriberInfo } from "./subscriber_state.ts";
import { backingOf, Surface } from "../surface/surface.ts";
import {
  DEFAULT_MAX_META_BYTES,
  encodeHeaderOver,
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

/** How many connections the accept loop takes before it lets the event loop turn. */
const ACCEPT_BURST = 8;

/** What `send` returns when no "queue" subscriber has to be waited for (one settled promise). */
const SENT: Promise<void> = Promise.resolve();

/** The options of a `send` called without any (one object, not one per call). */
const NO_OPTIONS: SendOptions = Object.freeze({});

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
  readonly #listener: BackendListener;
  readonly #registration: Registration | undefined;
  readonly #delivery: Delivery;
  readonly #keepLast: boolean;
  readonly #budget: Budget;
  #refused = 0;
  #registryTimer: ReturnType<typeof setTimeout> | undefined;
  #sequence = 0;
  #closed = false;
  /** Frames sent so far: the idle check compares it, so a send reads no clock. */
  #sends = 0;
  #sendsAtCheck = 0;
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
    this.#listener = listener;
    this.#registration = registration;
    this.#keepLast = keepLast;
    this.#budget = budget;
    this.#delivery = new Delivery(over, budget, () => this.#registryChanged());
    this.#acceptLoop();
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The current subscribers (a snapshot). */
  get subscribers(): SubscriberInfo[] {
    return [...this.#delivery.subscribers].map((s) => s.info());
  }

  /** What it counted: subscribers cut off, peers refused (a snapshot). */
  get stats(): PublisherStats {
    return { cutOff: this.#delivery.cutOff, refused: this.#refused };
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
  send(surface: Surface, meta?: M, options: SendOptions = NO_OPTIONS): Promise<void> {
    let batch: SendBatch | undefined;
    let message: FrameMessage | undefined;
    const d = this.#delivery;
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
      const metaLength = encoded.bytes.length;
      if (metaLength > DEFAULT_MAX_META_BYTES) {
        throw new RangeError(
          `send: metadata is ${metaLength} bytes, the limit is ${DEFAULT_MAX_META_BYTES}`,
        );
      }
      const backing = backingOf(surface, "send");
      // The same buffer frame after frame while every subscriber takes each frame at once.
      message = d.messages.take(HEADER_SIZE + metaLength);
      message.geometry = encodeHeaderOver(
        message.view,
        message.geometry,
        backing.geometry,
        encoded.kind,
        metaLength,
        this.#sequence++,
        timestamp,
      );
      if (metaLength > 0) message.bytes.set(encoded.bytes, HEADER_SIZE);
      this.#busy();
      let failure: unknown;
      const subscribers = d.list();
      for (let i = 0; i < subscribers.length; i++) {
        const subscriber = subscribers[i];
        // Credits that came back since the last frame, read now without waiting.
        if (!d.drainControl(subscriber)) continue;
        const handle = backing.exportHandle();
        const outcome = d.sendNow(subscriber, message, handle);
        if (outcome === SendOutcome.Failed) {
          failure ??= d.failure;
        } else if (outcome === SendOutcome.Wait) {
          // It must wait: held ("latest", plain) or queued ("queue"), with its own record.
          message.holders++;
          const item = d.held.item(message, handle);
          if (subscriber.state === "subscribed" && subscriber.policy === "queue") {
            batch ??= d.batches.take(deadline, options.timeout, options.signal);
            batch.add(subscriber, item);
            subscriber.queue.push(item);
          } else {
            d.held.hold(subscriber, item);
          }
          // No call (and no promise) for a subscriber that cannot take it now.
          if (!subscriber.sending && subscriber.hasCredit) d.pump(subscriber);
        }
        d.waitIfNeeded(subscriber);
        d.noteBlocked(subscriber);
      }
      // Only now the last frame: a SUBSCRIBE drained in the loop above must not be offered this
      // frame as "the last one" and then get it again as the frame itself.
      if (this.#keepLast) d.held.keepLast(message, backing.exportHandle());
      if (failure !== undefined) {
        // A send failed for some "queue" subscriber: withdrawn from the others too, as on expiry.
        batch ??= d.batches.take(Infinity, undefined, undefined);
        batch.fail(failure);
      }
      return batch ? batch.promise! : SENT;
    } catch (error) {
      // Failed part-way (e.g. exporting a capability hit EMFILE): withdraw the frame from the
      // "queue" subscribers it was queued for, and reject through the batch's own promise, so
      // that no orphaned batch rejects later where nobody listens.
      if (batch) {
        batch.fail(error);
        return batch.promise!;
      }
      return Promise.reject(error);
    } finally {
      // The batch settles (once every subscriber it is queued for has the frame) and its record
      // is reused only from here on: the loop above adds to it to the end.
      batch?.seal();
      if (message) d.messages.release(message); // the send loop's hold
    }
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
      if (this.#delivery.subscribers.size >= this.#budget.maxSubscribers) {
        this.#refused++;
        connection.close(); // it sees the end of the stream
        continue;
      }
      this.#delivery.admit(connection);
    }
  }

  /** A frame is being sent: not idle; after {@link IDLE_MS} without one, idle again. */
  #busy(): void {
    this.#sends++;
    this.#delivery.idle = false;
    this.#idleTimer ??= setTimeout(this.#checkIdle, IDLE_MS);
  }

  /** Every {@link IDLE_MS} while frames flow: idle once a whole period passed without one. */
  readonly #checkIdle = (): void => {
    this.#idleTimer = undefined;
    if (this.#closed) return;
    if (this.#sends !== this.#sendsAtCheck) {
      this.#sendsAtCheck = this.#sends;
      this.#idleTimer = setTimeout(this.#checkIdle, IDLE_MS);
      return;
    }
    const d = this.#delivery;
    d.idle = true;
    for (const subscriber of d.subscribers) d.waitIfNeeded(subscriber);
  };

  /** The registry entry's subscriber count is rewritten at most once per {@link IDLE_MS}. */
  #registryChanged(): void {
    if (!this.#registration || this.#registryTimer !== undefined || this.#closed) return;
    this.#registryTimer = setTimeout(() => {
      this.#registryTimer = undefined;
      if (!this.#closed) this.#registration?.update(this.#delivery.subscribers.size);
    }, IDLE_MS);
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
    clearTimeout(this.#registryTimer);
    this.#registration?.remove(); // first: a registry entry never outlives the bound name
    this.#listener.close();
    this.#delivery.close();
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
      this.#closed ? "closed" : `${this.#delivery.subscribers.size} subscribers`
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
