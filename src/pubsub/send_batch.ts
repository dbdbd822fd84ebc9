/**
 * The `send()`s of a publisher that wait for "queue" subscribers: a record
 * each ({@link SendBatch}), reused from send to send, and one timer for all
 * their deadlines ({@link SendBatches}). A "queue" subscriber a frame behind
 * (an encoder that must not drop frames) makes every `send()` wait: in that
 * steady state a send allocates only the promise it returns, its resolving
 * functions and what settling it takes.
 *
 * A record is reused only once its send settled, and a turn number says
 * which send it serves: a frame queued by an earlier send that reports back
 * late (sent or failed after its send timed out or was aborted) is ignored,
 * and no timer or abort listener outlives the send it was set for.
 *
 * @module
 */

import { TimeoutError } from "../core/errors.ts";
import type { Outgoing, SubscriberState, WaitingSend } from "./subscriber_state.ts";

/** How many settled records a {@link SendBatches} keeps for reuse. */
const SPARE_BATCHES = 4;

/** One `send()` waiting for its frame to reach every "queue" subscriber. */
export class SendBatch implements WaitingSend {
  /** The send it serves: counted up at each use, so that a late report of an earlier one is ignored. */
  turn = 0;
  /** What `send()` returns. */
  promise: Promise<void> | undefined;
  deadline = Infinity;
  /** The send's `timeout` (for its `TimeoutError`). */
  timeout = 0;
  signal: AbortSignal | undefined;
  /** Subscribers it is queued for that have not got it yet. */
  #remaining = 0;
  /** `send()` is still going through its subscribers: it settles only after that. */
  #filling = false;
  #settled = true;
  #resolve: (() => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;
  /** Where its frame is queued, withdrawn if it fails: `#items[i]` in `#subscribers[i]`'s queue. */
  readonly #subscribers: (SubscriberState | undefined)[] = [];
  readonly #items: (Outgoing | undefined)[] = [];
  #count = 0;
  readonly #owner: SendBatches;
  /** The promise's executor, made once: it keeps the resolving functions. */
  readonly #capture = (resolve: () => void, reject: (error: unknown) => void): void => {
    this.#resolve = resolve;
    this.#reject = reject;
  };
  /** The abort listener, made once: it acts only on the signal of the send it serves now. */
  readonly #onAbort = (): void => {
    const signal = this.signal;
    if (!this.#settled && signal?.aborted) this.fail(signal.reason);
  };

  constructor(owner: SendBatches) {
    this.#owner = owner;
  }

  /** Starts serving a new `send()` (see {@link SendBatches.take}). */
  begin(deadline: number, timeout: number | undefined, signal: AbortSignal | undefined): void {
    signal?.addEventListener("abort", this.#onAbort);
    this.turn++;
    this.#settled = false;
    this.#filling = true;
    this.#remaining = 0;
    this.deadline = deadline;
    this.timeout = timeout ?? 0;
    this.signal = signal;
    this.promise = new Promise(this.#capture);
  }

  /** Its frame is queued as `item` for `subscriber`. */
  add(subscriber: SubscriberState, item: Outgoing): void {
    this.#remaining++;
    item.batch = this;
    item.turn = this.turn;
    this.#subscribers[this.#count] = subscriber;
    this.#items[this.#count++] = item;
  }

  /**
   * `send()` went through every subscriber: it resolves once the frame
   * reached every one it is queued for (at once if none). A record settled
   * meanwhile is reused only from now on.
   */
  seal(): void {
    this.#filling = false;
    if (this.#settled) this.#owner.reuse(this);
    else if (this.#remaining === 0) this.#settle(undefined);
  }

  itemDone(item: Outgoing): void {
    if (item.turn !== this.turn || this.#settled) return;
    if (--this.#remaining === 0 && !this.#filling) this.#settle(undefined);
  }

  itemFailed(item: Outgoing, error: unknown): void {
    if (item.turn === this.turn) this.fail(error);
  }

  /** Withdraws the frame from every queue that still holds it and rejects `send()`. */
  fail(error: unknown): void {
    if (this.#settled) return;
    const subscribers = this.#subscribers;
    const items = this.#items;
    for (let i = 0; i < this.#count; i++) {
      const subscriber = subscribers[i]!;
      const item = items[i]!;
      // (A record sent meanwhile may be reused for another frame: then it is not this one's.)
      if (item.batch !== this || item.turn !== this.turn) continue;
      // Not queued: handed over, or being sent (it then reports back as an earlier turn's).
      if (!subscriber.queue.remove(item)) continue;
      subscriber.dropped++;
      this.#owner.release(item);
    }
    this.#settle(error);
  }

  #settle(error: unknown): void {
    this.#settled = true;
    for (let i = 0; i < this.#count; i++) {
      this.#subscribers[i] = undefined;
      this.#items[i] = undefined;
    }
    this.#count = 0;
    this.signal?.removeEventListener("abort", this.#onAbort);
    this.signal = undefined;
    this.#owner.settled(this);
    const resolve = this.#resolve!;
    const reject = this.#reject!;
    this.#resolve = this.#reject = undefined;
    if (!this.#filling) this.#owner.reuse(this);
    if (error === undefined) resolve();
    else reject(error);
  }
}

/**
 * A publisher's {@link SendBatch} records, reused, and its one timer for
 * their deadlines: armed for the earliest, and left armed while a later
 * deadline comes (a send a frame behind with a `timeout` sets no timer of
 * its own); when it fires, the sends due fail and it is armed for the next.
 */
export class SendBatches {
  /** Gives up a frame withdrawn from a queue (its capability, its message, its record). */
  readonly release: (item: Outgoing) => void;
  readonly #spare: SendBatch[] = [];
  /** The waiting sends that have a deadline. */
  readonly #timed: SendBatch[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When {@link #timer} fires (Infinity while none is set). */
  #timerDue = Infinity;

  constructor(release: (item: Outgoing) => void) {
    this.release = release;
  }

  /** A record for a `send()` that must wait, with its own pending promise. */
  take(deadline: number, timeout: number | undefined, signal: AbortSignal | undefined): SendBatch {
    const batch = this.#spare.pop() ?? new SendBatch(this);
    batch.begin(deadline, timeout, signal);
    if (deadline !== Infinity) {
      this.#timed.push(batch);
      if (deadline < this.#timerDue) this.#arm(deadline);
    }
    return batch;
  }

  /** `batch` settled: it no longer waits for its deadline. */
  settled(batch: SendBatch): void {
    if (batch.deadline === Infinity) return;
    const timed = this.#timed;
    const at = timed.indexOf(batch);
    if (at < 0) return;
    timed[at] = timed[timed.length - 1];
    timed.pop();
  }

  /** `batch` settled and its `send()` is done with it: it may serve another. */
  reuse(batch: SendBatch): void {
    if (this.#spare.length < SPARE_BATCHES) this.#spare.push(batch);
  }

  #arm(due: number): void {
    clearTimeout(this.#timer);
    this.#timerDue = due;
    this.#timer = setTimeout(this.#expire, Math.max(0, due - performance.now()));
  }

  /** The timer fired: the sends due fail (`TimeoutError`), and it is armed for the next one. */
  readonly #expire = (): void => {
    this.#timer = undefined;
    this.#timerDue = Infinity;
    const now = performance.now();
    const timed = this.#timed;
    let next = Infinity;
    // Backwards: a send that fails leaves the list, and the last one (seen already) takes its place.
    for (let i = timed.length - 1; i >= 0; i--) {
      const batch = timed[i];
      if (batch.deadline <= now) batch.fail(new TimeoutError("send", batch.timeout));
      else if (batch.deadline < next) next = batch.deadline;
    }
    if (next !== Infinity) this.#arm(next);
  };

  /** Stops the timer (the publisher closes; its waiting sends resolved as their subscribers went). */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerDue = Infinity;
  }
}
