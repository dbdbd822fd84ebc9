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
 * One parked wait: `fd` ready for `events`, or `wakeFd` readable, until
 * `deadline`. Reused: a settled wait's record goes back to {@link idleWaiters}
 * (a parked receive per frame costs no record, closure or array), except
 * one whose signal aborted, which a round of the poll may still hold.
 */
class Waiter {
  fd = -1;
  events = 0;
  /** Its index in the poller's list while parked there, else -1. */
  slot = -1;
  wakeFd = -1;
  deadline = Infinity;
  operation = "";
  /** The ms it was given, for its TimeoutError. */
  timeout = 0;
  signal: AbortSignal | undefined = undefined;
  resolve: (ready: boolean) => void = ignore;
  reject: (error: unknown) => void = ignore;
  /** Made once per record: its signal's abort handler. */
  readonly onAbort = (): void => {
    poller.remove(this);
    const { reject, signal } = this;
    this.#clear(); // not reused: a poll round may still hold it
    reject(signal!.reason);
  };

  /** Settles the wait: true (fd ready), false (woken), or an error; the record is reused. */
  settle(result: boolean | Error): void {
    const { resolve, reject, signal } = this;
    signal?.removeEventListener("abort", this.onAbort);
    this.#clear();
    if (idleWaiters.length < MAX_IDLE_WAITERS) idleWaiters.push(this);
    if (result instanceof Error) reject(result);
    else resolve(result);
  }

  timeoutError(): TimeoutError {
    return new TimeoutError(this.operation, this.timeout);
  }

  #clear(): void {
    this.signal = undefined;
    this.resolve = ignore;
    this.reject = ignore;
  }
}

function ignore(): void {}

/** Settled wait records kept for reuse (more are made while more waits are parked at once). */
const idleWaiters: Waiter[] = [];
const MAX_IDLE_WAITERS = 64;

/** The record whose promise is being made: {@link captureResolvers} fills it (no closure per wait). */
let capturing: Waiter | undefined;

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
    waiter.slot = this.#waiters.length;
    this.#waiters.push(waiter);
    if (this.#polling) wake(this.#controlFd);
    else if (!this.#active) this.#schedule();
  }

  remove(waiter: Waiter): void {
    if (this.#delete(waiter) && this.#polling) wake(this.#controlFd);
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
      for (let i = 0; i < n; i++) waiters[i] = this.#waiters[i];
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
          if (w.slot < 0) continue; // aborted meanwhile
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
  const remaining = deadline === Infinity ? Infinity : deadline - performance.now();
  if (remaining <= 0) return Promise.reject(new TimeoutError(operation, Math.round(remaining)));
  const waiter = idleWaiters.pop() ?? new Waiter();
  waiter.fd = fd;
  waiter.events = events;
  waiter.wakeFd = wakeFd;
  waiter.deadline = deadline;
  waiter.operation = operation;
  waiter.timeout = remaining === Infinity ? 0 : Math.round(remaining);
  waiter.signal = signal;
  capturing = waiter;
  const promise = new Promise<boolean>(captureResolvers);
  capturing = undefined;
  signal?.addEventListener("abort", waiter.onAbort, { once: true });
  poller.add(waiter);
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
