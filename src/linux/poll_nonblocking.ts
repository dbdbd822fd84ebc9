/**
 * The shared poll's rounds as nonblocking calls ({@link NonblockingPoll}):
 * the runner `poller.ts` uses where the runtime has no poll thread of its
 * own (Node, Bun), where it is turned off, or once it failed.
 *
 * @module
 */

import { ERRNO, libc, readErrno } from "./libc.ts";
import { POLLFD_SIZE } from "./structs.ts";
import { type PollThread, runtime } from "../../ffi/runtime.ts";

/**
 * The shared poll as a nonblocking call, where the runtime has no
 * {@link PollThread} (Node, Bun): a round asked for begins one microtask
 * later (until then {@link hold} lets waits added in the same turn join
 * it), and the call's promise reports its return. errno belongs to the
 * thread that polled: a failed poll is asked again here, with timeout 0,
 * to tell `EINTR` (reported as such) from a real failure.
 */
export class NonblockingPoll implements PollThread {
  #fds = runtime.sharedBytes(8 * POLLFD_SIZE);
  #nfds = 0;
  #timeout = 0;
  /** Asked for and not begun. */
  #asked = false;

  readonly onReturn: (result: number, errno: number) => void;
  readonly onFailed: (error: Error) => void;

  constructor(
    onReturn: (result: number, errno: number) => void,
    onFailed: (error: Error) => void,
  ) {
    this.onReturn = onReturn;
    this.onFailed = onFailed;
  }

  fds(size: number): Uint8Array {
    if (this.#fds.length < size) this.#fds = runtime.sharedBytes(size);
    return this.#fds;
  }

  start(nfds: number, timeout: number): void {
    this.#nfds = nfds;
    this.#timeout = timeout;
    if (this.#asked) return;
    this.#asked = true;
    // (A reaction on a settled promise: a third cheaper than queueMicrotask in Deno.)
    SETTLED.then(this.#begin);
  }

  hold(): boolean {
    return this.#asked;
  }

  readonly #begin = (): void => {
    this.#asked = false;
    try {
      const nfds = nfdsValues[this.#nfds] ??= BigInt(this.#nfds);
      libc().poll_wait(this.#fds, nfds, this.#timeout).then(this.#returned, this.onFailed);
    } catch (error) {
      this.onFailed(error as Error);
    }
  };

  readonly #returned = (result: number): void => {
    let errno = 0;
    if (result < 0) {
      errno = libc().poll(this.#fds, nfdsValues[this.#nfds]!, 0) < 0 ? readErrno() : ERRNO.EINTR;
    }
    this.onReturn(result, errno);
  };
}

/** A settled promise: a reaction to it runs one microtask later. */
const SETTLED = Promise.resolve();

/** `nfds_t` arguments as BigInts, made once per count (not one per poll). */
const nfdsValues: bigint[] = [];
