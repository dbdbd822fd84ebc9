/**
 * The waits a caller parks in the shared poll (`poller.ts`): a
 * {@link PollWaiter} its owner keeps and re-arms (a wait repeated per frame
 * that allocates nothing), and {@link waitReady}, one wait as a promise, on
 * records kept for reuse.
 *
 * @module
 */

import { throwIfAborted, TimeoutError } from "../core/errors.ts";
import { type WaitEnded, Waiter } from "./poller.ts";

/**
 * A wait record its owner keeps and re-arms, for a wait repeated per frame:
 * {@link arm} parks it in the shared poll and allocates nothing (no promise,
 * record or closure per wait: what the runtime's poll costs per round
 * remains); the callback its owner made once is called when the wait ends.
 * At most one wait at a time.
 */
export class PollWaiter {
  readonly #waiter: Waiter;

  /** `ended` is called once per {@link arm}, from the poller (it must not throw). */
  constructor(ended: WaitEnded) {
    this.#waiter = new Waiter(ended);
  }

  /** True while armed (parked in the poll). */
  get armed(): boolean {
    return this.#waiter.slot >= 0;
  }

  /**
   * Parks until `fd` is ready for `events`, the wake fd fires, the deadline
   * passes or the signal aborts, as {@link waitReady} does. Throws (and
   * stays unarmed) if the signal has aborted, the deadline has passed or it
   * is armed already.
   */
  arm(
    fd: number,
    events: number,
    wakeFd: number,
    operation: string,
    deadline: number,
    signal: AbortSignal | undefined,
  ): void {
    const waiter = this.#waiter;
    if (waiter.slot >= 0) throw new Error("internal: PollWaiter armed twice");
    throwIfAborted(signal);
    const remaining = deadline === Infinity ? Infinity : deadline - performance.now();
    if (remaining <= 0) throw new TimeoutError(operation, Math.round(remaining));
    waiter.fd = fd;
    waiter.events = events;
    waiter.wakeFd = wakeFd;
    waiter.deadline = deadline;
    waiter.operation = operation;
    waiter.timeout = remaining === Infinity ? 0 : Math.round(remaining);
    waiter.signal = signal;
    signal?.addEventListener("abort", waiter.onAbort, { once: true });
    waiter.park();
  }
}

/** A pooled record's promise: {@link waitReady}'s. */
class PromisedWait {
  resolve: (ready: boolean) => void = ignore;
  reject: (error: unknown) => void = ignore;
  readonly waiter: PollWaiter = new PollWaiter((ready, failure) => {
    const { resolve, reject } = this;
    this.resolve = ignore;
    this.reject = ignore;
    if (idleWaits.length < MAX_IDLE_WAITS) idleWaits.push(this);
    if (failure === undefined) resolve(ready);
    else reject(failure);
  });
}

function ignore(): void {}

/** Settled {@link waitReady} records kept for reuse (more are made while more waits are parked at once). */
const idleWaits: PromisedWait[] = [];
const MAX_IDLE_WAITS = 64;

/** The record whose promise is being made: {@link captureResolvers} fills it (no closure per wait). */
let capturing: PromisedWait | undefined;

function captureResolvers(resolve: (ready: boolean) => void, reject: (error: unknown) => void) {
  capturing!.resolve = resolve;
  capturing!.reject = reject;
}

/**
 * Waits (parked in the shared poll, `poller.ts`) until `fd` is ready for
 * `events`, the wake fd fires, the deadline passes or the signal aborts.
 * Returns true if `fd` is ready; false on a wake-up (the caller re-checks
 * its state). Allocates the promise it returns and nothing else (without a
 * signal; with one, the listener's registration).
 */
export function waitReady(
  fd: number,
  events: number,
  wakeFd: number,
  operation: string,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  try {
    throwIfAborted(signal);
  } catch (error) {
    return Promise.reject(error);
  }
  const wait = idleWaits.pop() ?? new PromisedWait();
  capturing = wait;
  const promise = new Promise<boolean>(captureResolvers);
  capturing = undefined;
  try {
    wait.waiter.arm(fd, events, wakeFd, operation, deadline, signal);
  } catch (error) {
    wait.resolve = ignore;
    wait.reject = ignore;
    idleWaits.push(wait);
    return Promise.reject(error);
  }
  return promise;
}
