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

/** One parked wait: `fd` ready for `events`, or `wakeFd` readable, until `deadline`. */
interface Waiter {
  fd: number;
  events: number;
  wakeFd: number;
  deadline: number;
  /** Settles the wait: true (fd ready), false (woken), or an error. */
  settle: (result: boolean | Error) => void;
  timeoutError: () => TimeoutError;
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
 */
class Poller {
  readonly #waiters = new Set<Waiter>();
  #controlFd = -1;
  #running = false;
  #polling = false;
  /** The waiters of the current round (reused; emptied after each round). */
  readonly #round: (Waiter | undefined)[] = [];
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
    this.#waiters.add(waiter);
    if (this.#polling) wake(this.#controlFd);
    else if (!this.#running) this.#run();
  }

  remove(waiter: Waiter): void {
    if (this.#waiters.delete(waiter) && this.#polling) wake(this.#controlFd);
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      this.openControlFd();
      for (;;) {
        // Waits added in this same turn of the event loop join this round without a wake-up.
        await Promise.resolve();
        if (this.#waiters.size === 0) break;
        // This round's waiters, in a reused array (cleared below: it must not keep them alive).
        const waiters = this.#round;
        let n = 0;
        for (const w of this.#waiters) waiters[n++] = w;
        const count = 1 + 2 * n;
        if (this.#fds.length < count * POLLFD_SIZE) {
          this.#fds = runtime.sharedBytes(2 * count * POLLFD_SIZE);
          this.#fdsView = new DataView(this.#fds.buffer);
        }
        const fds = this.#fds;
        const view = this.#fdsView;
        encodePollfd(view, 0, this.#controlFd, LINUX.POLLIN);
        let deadline = Infinity;
        for (let i = 0; i < n; i++) {
          const w = waiters[i]!;
          encodePollfd(view, 1 + 2 * i, w.fd, w.events);
          encodePollfd(view, 2 + 2 * i, w.wakeFd, LINUX.POLLIN);
          deadline = Math.min(deadline, w.deadline);
        }
        const timeout = deadline === Infinity
          ? -1
          : Math.max(0, Math.min(Math.ceil(deadline - performance.now()), 0x7fffffff));
        this.#polling = true;
        const nfds = nfdsValues[count] ??= BigInt(count);
        const ready = await libc().poll_wait(fds, nfds, timeout);
        this.#polling = false;
        if (ready < 0) {
          waiters.fill(undefined, 0, n);
          // errno belongs to the worker thread: ask again here to tell EINTR from a real failure.
          if (libc().poll(fds, nfds, 0) < 0 && readErrno() !== ERRNO.EINTR) {
            throw systemError("poll");
          }
          continue;
        }
        if (decodePollRevents(view, 0) & LINUX.POLLIN) drain(this.#controlFd);
        const now = performance.now();
        for (let i = 0; i < n; i++) {
          const w = waiters[i]!;
          waiters[i] = undefined;
          if (!this.#waiters.has(w)) continue; // aborted meanwhile
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
          this.#waiters.delete(w);
          w.settle(result);
        }
      }
    } catch (error) {
      for (const waiter of this.#waiters) waiter.settle(error as Error);
      this.#waiters.clear();
    } finally {
      this.#polling = false;
      this.#running = false;
    }
  }
}

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
 * its state).
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
  const remaining = deadline - performance.now();
  if (remaining <= 0) {
    return Promise.reject(
      new TimeoutError(operation, Math.round(deadline === Infinity ? 0 : remaining)),
    );
  }
  return new Promise<boolean>((resolve, reject) => {
    const onAbort = () => {
      poller.remove(waiter);
      reject(signal!.reason);
    };
    const waiter: Waiter = {
      fd,
      events,
      wakeFd,
      deadline,
      settle: (result) => {
        signal?.removeEventListener("abort", onAbort);
        if (result instanceof Error) reject(result);
        else resolve(result);
      },
      timeoutError: () => new TimeoutError(operation, Math.round(remaining)),
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    poller.add(waiter);
  });
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
