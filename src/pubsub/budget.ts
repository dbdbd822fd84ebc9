/**
 * What a publisher grants its subscribers: how many frames each may hold
 * (its budget), how many subscribers it serves at once, and how long one may
 * leave a frame waiting before it counts as stalled and is cut off. From
 * these follows the most surfaces the subscribers can keep in use at once,
 * which is what a producer sizes its pool from (`Publisher.surfaceBudget`).
 * The normative text is the "Budgets" part of `docs/protocol.md`.
 *
 * @module
 */

import { TimeoutError } from "../core/errors.ts";
import { MAX_DEPTH } from "../wire/pubsub_wire.ts";
import type { SubscriberInfo, SubscriberState } from "./subscriber_state.ts";

/** Default of {@link BudgetOptions.maxDepth}. */
export const DEFAULT_MAX_DEPTH = 4;
/** Default of {@link BudgetOptions.maxSubscribers}. */
export const DEFAULT_MAX_SUBSCRIBERS = 8;
/** Default of {@link BudgetOptions.stallTimeout} (ms). */
export const DEFAULT_STALL_TIMEOUT_MS = 5000;
/**
 * Frames a plain peer (no SUBSCRIBE, so no credits) may have unread in its
 * socket: one. The publisher sends it the next only once it read that one.
 */
export const PLAIN_PEER_DEPTH = 1;

/**
 * While a plain peer has a frame held for it, how often the publisher asks
 * the kernel whether it read the one before (a plain peer sends nothing
 * that would say so), in ms.
 */
const PLAIN_PEER_POLL_MS = 20;

/** The budget options of `publish()` (see `PublishOptions`). */
export interface BudgetOptions {
  /**
   * The most frames a subscriber may have in flight (sent, not yet
   * credited), whatever depth its SUBSCRIBE asked for: it is granted
   * `min(depth, maxDepth)`. 1 to 64, default 4. A plain peer gets 1.
   */
  maxDepth?: number;
  /**
   * How many subscribers are served at once, 1 or more (default 8). A peer
   * that connects beyond that is hung up on at once (it sees the end of the
   * stream) and counted in `publisher.stats.refused`.
   */
  maxSubscribers?: number;
  /**
   * A subscriber is **stalled** when a frame has been waiting for it (held
   * or queued by the publisher) for this many ms while it had no credit
   * left and returned none (a plain peer: read nothing). A stalled
   * subscriber is cut off: disconnected, everything held for it released,
   * `onCutOff` called. Default 5000; `Infinity` never cuts one off.
   */
  stallTimeout?: number;
  /**
   * Called when the publisher cuts a subscriber off: stalled (a
   * `TimeoutError` for the operation `"credit"`), or it broke the control
   * protocol (a `ProtocolError` naming the fault). Not called for one that
   * simply goes away. Exceptions it throws are ignored.
   */
  onCutOff?: (subscriber: SubscriberInfo, reason: Error) => void;
}

/** {@link BudgetOptions} checked, with defaults. */
export interface Budget {
  maxDepth: number;
  maxSubscribers: number;
  stallTimeout: number;
  onCutOff: ((subscriber: SubscriberInfo, reason: Error) => void) | undefined;
}

/** Checks the budget options; a bad value is a `TypeError` / `RangeError` naming it. */
export function resolveBudget(options: BudgetOptions): Budget {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 1 || maxDepth > MAX_DEPTH) {
    throw new RangeError(`publish: maxDepth must be an integer from 1 to ${MAX_DEPTH}`);
  }
  const maxSubscribers = options.maxSubscribers ?? DEFAULT_MAX_SUBSCRIBERS;
  if (!Number.isInteger(maxSubscribers) || maxSubscribers < 1) {
    throw new RangeError("publish: maxSubscribers must be a positive integer");
  }
  const stallTimeout = options.stallTimeout ?? DEFAULT_STALL_TIMEOUT_MS;
  if (typeof stallTimeout !== "number" || !(stallTimeout > 0)) {
    throw new RangeError("publish: stallTimeout must be a positive number of ms (or Infinity)");
  }
  if (options.onCutOff !== undefined && typeof options.onCutOff !== "function") {
    throw new TypeError("publish: onCutOff must be a function");
  }
  return { maxDepth, maxSubscribers, stallTimeout, onCutOff: options.onCutOff };
}

/**
 * The most surfaces a publisher's subscribers can keep in use at once, with
 * the publisher's own hold on its most recent frame: per subscriber its
 * granted depth in flight plus one frame held for it (a "queue"
 * subscriber: one per `send()` not yet resolved; a producer that awaits
 * each `send` has one), times `maxSubscribers`, plus one with `keepLast`.
 * Add the surfaces the producer itself holds (the one being painted) to
 * size a pool that never runs out while subscribers keep to their budgets.
 */
export function surfaceBudget(budget: Budget, keepLast: boolean): number {
  return budget.maxSubscribers * (Math.max(budget.maxDepth, PLAIN_PEER_DEPTH) + 1) +
    (keepLast ? 1 : 0);
}

/**
 * A publisher's watch over its blocked subscribers — a frame waits for one
 * while it has no credit left (or its transport no room) — with one timer:
 * it serves plain peers that read meanwhile (nothing else would say so) and
 * cuts off those blocked for `stallTimeout`.
 */
export class BlockedWatch {
  readonly #subscribers: ReadonlySet<SubscriberState>;
  readonly #stallTimeout: number;
  readonly #serve: (subscriber: SubscriberState) => void;
  readonly #cutOff: (subscriber: SubscriberState, reason: Error) => void;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When {@link #timer} fires (`performance.now()` clock). */
  #timerDue = Infinity;
  #closed = false;

  constructor(
    subscribers: ReadonlySet<SubscriberState>,
    stallTimeout: number,
    serve: (subscriber: SubscriberState) => void,
    cutOff: (subscriber: SubscriberState, reason: Error) => void,
  ) {
    this.#subscribers = subscribers;
    this.#stallTimeout = stallTimeout;
    this.#serve = serve;
    this.#cutOff = cutOff;
  }

  /** Starts or ends the subscriber's blocked time, after anything that may change it. */
  note(subscriber: SubscriberState): void {
    if (
      !subscriber.closed && subscriber.state !== "pending" && subscriber.hasWaiting &&
      (subscriber.sending || !subscriber.hasCredit)
    ) {
      if (subscriber.blockedSince < 0) {
        const now = performance.now();
        subscriber.blockedSince = now;
        // A timer already due no later than this subscriber's stall stays, as #schedule would
        // keep it: no scan of every subscriber (and no Set iterator) per frame it blocks.
        const due = subscriber.state === "plain"
          ? Math.min(PLAIN_PEER_POLL_MS, this.#stallTimeout)
          : this.#stallTimeout;
        if (this.#timer === undefined || this.#timerDue > now + due) this.#schedule();
      }
    } else {
      subscriber.blockedSince = -1;
    }
  }

  /** Stops the timer for good. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  /**
   * Soon if a plain peer is blocked, else at the earliest stall; not at all
   * if none is blocked. A timer already due no later stays (a "latest"
   * subscriber a frame behind blocks and unblocks every few frames: no
   * timer made and cleared each time).
   */
  #schedule(): void {
    if (this.#closed) return;
    let due = Infinity;
    const now = performance.now();
    for (const subscriber of this.#subscribers) {
      if (subscriber.blockedSince < 0) continue;
      if (subscriber.state === "plain") due = Math.min(due, PLAIN_PEER_POLL_MS);
      due = Math.min(due, subscriber.blockedSince + this.#stallTimeout - now);
    }
    if (this.#timer !== undefined && this.#timerDue <= now + due) return;
    clearTimeout(this.#timer);
    this.#timer = due === Infinity ? undefined : setTimeout(this.#check, Math.max(0, due));
    this.#timerDue = now + due;
  }

  readonly #check = (): void => {
    this.#timer = undefined;
    this.#timerDue = Infinity;
    if (this.#closed) return;
    const now = performance.now();
    for (const subscriber of [...this.#subscribers]) {
      if (subscriber.blockedSince < 0) continue;
      if (!subscriber.sending && subscriber.hasCredit) {
        this.#serve(subscriber);
        this.note(subscriber);
      } else if (now - subscriber.blockedSince >= this.#stallTimeout) {
        this.#cutOff(subscriber, new TimeoutError("credit", this.#stallTimeout));
      }
    }
    this.#schedule();
  };
}
