/**
 * The process-wide reactor of the Linux backend: every parked wait (a
 * channel's receive or send, a listener's accept, a pool waiting for a
 * release) joins one `poll` on one worker thread.
 *
 * @module
 */

import { throwIfAborted, TimeoutError } from "../core/errors.ts";
import { check, ERRNO, libc, readErrno, systemError } from "./libc.ts";
import { decodePollRevents, encodePollfd, LINUX, POLLFD_SIZE } from "./structs.ts";
import { runtime } from "../../ffi/runtime.ts";

/**
 * How a wait ended, as a {@link PollWaiter}'s callback gets it: `failure`
 * undefined and `ready` true (the fd is ready) or false (woken through the
 * wake fd: re-check your state); or `failure` set, the wait's
 * `TimeoutError`, its signal's reason (never undefined: an abort without
 * one has a `DOMException`) or the poll's error.
 */
export type WaitEnded = (ready: boolean, failure: unknown) => void;

/**
 * One parked wait: `fd` ready for `events`, or `wakeFd` readable, until
 * `deadline`. Reused: its owner re-arms it for the next wait (a parked
 * receive per frame costs no record, closure, array or promise of its own).
 */
class Waiter {
  fd = -1;
  events = 0;
  /** Its index in the poller's list while parked there, else -1. */
  slot = -1;
  /** Counts its arms: a poll round skips a record re-armed since the round began. */
  arms = 0;
  wakeFd = -1;
  deadline = Infinity;
  operation = "";
  /** The ms it was given, for its TimeoutError. */
  timeout = 0;
  signal: AbortSignal | undefined = undefined;
  /** Made once per record: its signal's abort handler. */
  readonly onAbort = (): void => {
    const signal = this.signal!;
    if (!poller.remove(this)) return; // (settled already)
    this.#end(false, signal.reason);
  };

  readonly ended: WaitEnded;

  constructor(ended: WaitEnded) {
    this.ended = ended;
  }

  /** Settles the wait: true (fd ready), false (woken), or an error. */
  settle(result: boolean | Error): void {
    if (result instanceof Error) this.#end(false, result);
    else this.#end(result, undefined);
  }

  timeoutError(): TimeoutError {
    return new TimeoutError(this.operation, this.timeout);
  }

  #end(ready: boolean, failure: unknown): void {
    this.signal?.removeEventListener("abort", this.onAbort);
    this.signal = undefined;
    try {
      this.ended(ready, failure);
    } catch (error) {
      // An owner's callback must not throw; if it does, it must not take the other waits down.
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

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
    poller.add(waiter);
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
 * Every parked wait of this process in one `poll` on one worker thread.
 *
 * Deno runs nonblocking FFI calls on its blocking-thread pool, which has 32
 * threads. A thread per parked receive, send or accept would let 32 idle
 * channels (any admitted peer can open them) take every thread: every other
 * wait in the process — accept, the channels that do have frames, Deno's
 * own async file I/O — would queue behind polls that may never return.
 * So waits register here, and one `poll` over all of them runs at a time.
 * A wait added while that poll runs interrupts it through a control
 * eventfd, made at the first parked wait and kept for the life of the
 * process (one descriptor, instead of an `eventfd` + `close` per park).
 *
 * A round is driven by callbacks made once (no async function restarted
 * per park): {@link #round} starts it one microtask after the first wait
 * (waits added in the same turn join it without a wake-up), and
 * {@link #polled} settles its waits and starts the next while any remain.
 */
class Poller {
  /**
   * The parked waits, in an array with each one's index in its `slot` (a
   * Set shrank and regrew its table, an allocation, at every park).
   */
  readonly #waiters: Waiter[] = [];
  #controlFd = -1;
  /** A round is scheduled (a microtask) or polling. */
  #active = false;
  #polling = false;
  /** The waiters of the current round (reused; emptied after each round). */
  readonly #round: (Waiter | undefined)[] = [];
  /** Each round waiter's {@link Waiter.arms} when the round began. */
  readonly #roundArms: number[] = [];
  #roundSize = 0;
  #nfds = 0n;
  /**
   * The pollfd array, reused while the number of waits fits: shared memory,
   * since the poll that writes its `revents` may run on another thread.
   */
  #fds = runtime.sharedBytes(8 * POLLFD_SIZE);
  #fdsView = new DataView(this.#fds.buffer);

  /** Makes the control eventfd now if it does not exist yet (it lives as long as the process). */
  openControlFd(): void {
    if (this.#controlFd < 0) this.#controlFd = newEventFd();
  }

  add(waiter: Waiter): void {
    waiter.arms++;
    waiter.slot = this.#waiters.length;
    this.#waiters.push(waiter);
    if (this.#polling) wake(this.#controlFd);
    else if (!this.#active) this.#schedule();
  }

  /** Takes a parked wait off the poll; false if it was not parked. */
  remove(waiter: Waiter): boolean {
    if (!this.#delete(waiter)) return false;
    if (this.#polling) wake(this.#controlFd);
    return true;
  }

  /** Takes a wait off the list (the last one takes its slot); false if it was not there. */
  #delete(waiter: Waiter): boolean {
    const waiters = this.#waiters;
    const slot = waiter.slot;
    if (slot < 0 || waiters[slot] !== waiter) return false;
    const last = waiters.pop()!;
    if (last !== waiter) {
      waiters[slot] = last;
      last.slot = slot;
    }
    waiter.slot = -1;
    return true;
  }

  #schedule(): void {
    this.#active = true;
    // (A reaction on a settled promise: a third cheaper than queueMicrotask in Deno.)
    SETTLED.then(this.#startRound);
  }

  readonly #startRound = (): void => {
    try {
      this.openControlFd();
      if (this.#waiters.length === 0) {
        this.#active = false;
        return;
      }
      // This round's waiters, in a reused array (cleared after it: it must not keep them alive).
      const waiters = this.#round;
      const n = this.#waiters.length;
      for (let i = 0; i < n; i++) {
        waiters[i] = this.#waiters[i];
        this.#roundArms[i] = this.#waiters[i].arms;
      }
      this.#roundSize = n;
      const count = 1 + 2 * n;
      if (this.#fds.length < count * POLLFD_SIZE) {
        this.#fds = runtime.sharedBytes(2 * count * POLLFD_SIZE);
        this.#fdsView = new DataView(this.#fds.buffer);
      }
      const view = this.#fdsView;
      encodePollfd(view, 0, this.#controlFd, LINUX.POLLIN);
      let deadline = Infinity;
      for (let i = 0; i < n; i++) {
        const w = waiters[i]!;
        encodePollfd(view, 1 + 2 * i, w.fd, w.events);
        encodePollfd(view, 2 + 2 * i, w.wakeFd, LINUX.POLLIN);
        if (w.deadline < deadline) deadline = w.deadline;
      }
      const timeout = deadline === Infinity
        ? -1
        : Math.max(0, Math.min(Math.ceil(deadline - performance.now()), 0x7fffffff));
      this.#polling = true;
      this.#nfds = nfdsValues[count] ??= BigInt(count);
      libc().poll_wait(this.#fds, this.#nfds, timeout).then(this.#polled, this.#failed);
    } catch (error) {
      this.#failed(error);
    }
  };

  readonly #polled = (ready: number): void => {
    this.#polling = false;
    const waiters = this.#round;
    const n = this.#roundSize;
    try {
      if (ready < 0) {
        waiters.fill(undefined, 0, n);
        // errno belongs to the worker thread: ask again here to tell EINTR from a real failure.
        if (libc().poll(this.#fds, this.#nfds, 0) < 0 && readErrno() !== ERRNO.EINTR) {
          throw systemError("poll");
        }
      } else {
        const view = this.#fdsView;
        if (decodePollRevents(view, 0) & LINUX.POLLIN) drain(this.#controlFd);
        const now = performance.now();
        for (let i = 0; i < n; i++) {
          const w = waiters[i]!;
          waiters[i] = undefined;
          // Aborted meanwhile, or aborted and armed again (its fds in this round are another wait's).
          if (w.slot < 0 || w.arms !== this.#roundArms[i]) continue;
          let result: boolean | Error | undefined;
          if (decodePollRevents(view, 2 + 2 * i) & LINUX.POLLIN) {
            drain(w.wakeFd); // (a second waiter on the same wake fd drains nothing: harmless)
            result = false;
          } else if (decodePollRevents(view, 1 + 2 * i) !== 0) {
            result = true;
          } else if (w.deadline <= now) {
            result = w.timeoutError();
          }
          if (result === undefined) continue;
          this.#delete(w);
          w.settle(result);
        }
      }
    } catch (error) {
      this.#failed(error);
      return;
    }
    // The next round after the woken waits' continuations, so that those that park again join
    // it; with none left, the next wait starts one.
    if (this.#waiters.length > 0) this.#schedule();
    else this.#active = false;
  };

  readonly #failed = (error: unknown): void => {
    this.#polling = false;
    this.#active = false;
    this.#round.fill(undefined);
    const waiters = this.#waiters.splice(0);
    for (const waiter of waiters) {
      waiter.slot = -1;
      waiter.settle(error as Error);
    }
  };
}

/** A settled promise: {@link Poller} starts its rounds as reactions to it. */
const SETTLED = Promise.resolve();

/** `nfds_t` arguments as BigInts, made once per count (not one per poll). */
const nfdsValues: bigint[] = [];

const poller = new Poller();

/**
 * Opens the shared poll's control eventfd, which the first parked wait would
 * open and which then stays for the life of the process (tests open it
 * before taking a descriptor baseline).
 */
export function openPollerControlFd(): void {
  poller.openControlFd();
}

/**
 * Waits (parked in the shared {@link Poller}) until `fd` is ready for
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

const one = new Uint8Array(new BigUint64Array([1n]).buffer);
const scratch = new Uint8Array(8);

export function wake(eventFd: number): void {
  libc().write(eventFd, one, 8n);
}

export function drain(eventFd: number): void {
  libc().read(eventFd, scratch, 8n);
}

export function newEventFd(): number {
  return check("eventfd", libc().eventfd(0, LINUX.EFD_CLOEXEC | LINUX.EFD_NONBLOCK));
}
