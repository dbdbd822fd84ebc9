/**
 * The process-wide reactor of the Linux backend: every parked wait (a
 * channel's receive or send, a listener's accept, a pool waiting for a
 * release) joins one `poll` on one worker thread. Callers park through
 * `poll_wait.ts` (`PollWaiter`, `waitReady`); where the runtime has no poll
 * thread the rounds run as nonblocking calls (`poll_nonblocking.ts`). Also
 * the eventfd a wait is woken through ({@link newEventFd}, {@link wake}).
 *
 * @module
 */

import { TimeoutError } from "../core/errors.ts";
import { check, ERRNO, libc, systemError } from "./libc.ts";
import { decodePollRevents, encodePollfd, LINUX, POLLFD_SIZE } from "./structs.ts";
import { type PollThread, runtime } from "../../ffi/runtime.ts";
import { LIBC_PATH } from "../../ffi/linux.ts";
import { NonblockingPoll } from "./poll_nonblocking.ts";

/**
 * How a wait ended, as a `PollWaiter`'s callback (`poll_wait.ts`) gets it:
 * `failure` undefined and `ready` true (the fd is ready) or false (woken
 * through the wake fd: re-check your state); or `failure` set, the wait's
 * `TimeoutError`, its signal's reason (never undefined: an abort without
 * one has a `DOMException`) or the poll's error.
 */
export type WaitEnded = (ready: boolean, failure: unknown) => void;

/**
 * One parked wait: `fd` ready for `events`, or `wakeFd` readable, until
 * `deadline`. Reused: its owner re-arms it for the next wait (a parked
 * receive per frame costs no record, closure, array or promise of its own).
 */
export class Waiter {
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

  /** Parks it in the shared poll (its owner has filled it in). */
  park(): void {
    poller.add(this);
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
 * Every parked wait of this process in one `poll` on one thread: the
 * runtime's {@link PollThread} (Deno: a worker of its own that calls back,
 * with no garbage per round), else a nonblocking call
 * ({@link NonblockingPoll}).
 *
 * A nonblocking call per parked receive, send or accept would take a
 * thread of the runtime's blocking pool each (Deno's has 32): 32 idle
 * channels (any admitted peer can open them) would take every thread, and
 * every other wait in the process — accept, the channels that do have
 * frames, Deno's own async file I/O — would queue behind polls that may
 * never return. So waits register here, and one `poll` over all of them
 * runs at a time. A wait added while that poll runs interrupts it through
 * a control eventfd, made at the first parked wait and kept for the life
 * of the process (one descriptor, instead of an `eventfd` + `close` per
 * park); a wait added before the thread has begun the poll joins it
 * ({@link PollThread.hold}).
 *
 * A round is driven by callbacks made once (no async function restarted
 * per park): the first wait starts it, and {@link #returned} settles its
 * waits and starts the next while any remain — one microtask later when
 * it settled some that were not armed again from their callbacks, so that
 * those that park again in their continuations join it.
 */
class Poller {
  /**
   * The parked waits, in an array with each one's index in its `slot` (a
   * Set shrank and regrew its table, an allocation, at every park).
   */
  readonly #waiters: Waiter[] = [];
  #controlFd = -1;
  /** A round asked for and not returned. */
  #polling = false;
  /** The next round starts one microtask later ({@link #startRound} as a reaction). */
  #scheduled = false;
  /** {@link #returned} is settling a round's waits (a wait added meanwhile waits for its end). */
  #settling = false;
  /** The waiters of the current round (reused; emptied after each round). */
  readonly #round: (Waiter | undefined)[] = [];
  /** Each round waiter's {@link Waiter.arms} when the round began. */
  readonly #roundArms: number[] = [];
  #roundSize = 0;
  /** The runner of the rounds: {@link #ownThread} or {@link #nonblocking}, by {@link pollThreadEnabled}. */
  #thread: PollThread | undefined;
  #ownThread: PollThread | undefined;
  #nonblocking: NonblockingPoll | undefined;
  /** The runtime's thread failed: the nonblocking call from then on. */
  #threadBroken = false;
  /** The pollfd array of {@link #thread}, and a view over it. */
  #fds: Uint8Array | undefined;
  #fdsView: DataView | undefined;

  /**
   * Makes the control eventfd and the poll's thread now if they do not
   * exist yet (they live as long as the process).
   */
  openControlFd(): void {
    if (this.#controlFd < 0) this.#controlFd = newEventFd();
    if (!this.#polling) this.#thread = this.#chooseRunner();
  }

  /** See {@link sharedPollRunner}. */
  get runner(): "thread" | "calls" | "none" {
    if (this.#thread === undefined) return "none";
    return this.#thread === this.#ownThread ? "thread" : "calls";
  }

  #chooseRunner(): PollThread {
    if (pollThreadEnabled && !this.#threadBroken && runtime.pollThread) {
      try {
        return this.#ownThread ??= runtime.pollThread(
          pollThreadLibrary,
          this.#returned,
          this.#threadFailed,
          this.#interrupt,
        );
      } catch (error) {
        this.#threadBroken = true;
        warnThreadFailed(error);
      }
    }
    return this.#nonblocking ??= new NonblockingPoll(this.#returned, this.#failed);
  }

  add(waiter: Waiter): void {
    waiter.arms++;
    waiter.slot = this.#waiters.length;
    this.#waiters.push(waiter);
    this.#changed();
  }

  /** Takes a parked wait off the poll; false if it was not parked. */
  remove(waiter: Waiter): boolean {
    if (!this.#delete(waiter)) return false;
    this.#changed();
    return true;
  }

  /** The set of waits changed: the round to come takes it, or this one is amended or woken. */
  #changed(): void {
    if (this.#settling || this.#scheduled) return;
    if (!this.#polling) this.#startRound();
    else if (this.#thread!.hold()) this.#startRound();
    else wake(this.#controlFd);
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

  /**
   * Asks the thread for a poll of every parked wait (or, while a round is
   * held, rewrites it). With none left while one is held, a poll of the
   * control fd alone with timeout 0 ends it at once.
   */
  readonly #startRound = (): void => {
    this.#scheduled = false;
    try {
      this.openControlFd();
      const n = this.#waiters.length;
      if (n === 0 && !this.#polling) return;
      // This round's waiters, in a reused array (cleared after it: it must not keep them alive).
      const waiters = this.#round;
      for (let i = 0; i < n; i++) {
        waiters[i] = this.#waiters[i];
        this.#roundArms[i] = this.#waiters[i].arms;
      }
      for (let i = n; i < this.#roundSize; i++) waiters[i] = undefined;
      this.#roundSize = n;
      const count = 1 + 2 * n;
      const fds = this.#thread!.fds(count * POLLFD_SIZE);
      if (fds !== this.#fds) {
        this.#fds = fds;
        this.#fdsView = new DataView(fds.buffer, fds.byteOffset, fds.byteLength);
      }
      const view = this.#fdsView!;
      encodePollfd(view, 0, this.#controlFd, LINUX.POLLIN);
      let deadline = Infinity;
      for (let i = 0; i < n; i++) {
        const w = waiters[i]!;
        encodePollfd(view, 1 + 2 * i, w.fd, w.events);
        encodePollfd(view, 2 + 2 * i, w.wakeFd, LINUX.POLLIN);
        if (w.deadline < deadline) deadline = w.deadline;
      }
      const timeout = n === 0
        ? 0
        : deadline === Infinity
        ? -1
        : Math.max(0, Math.min(Math.ceil(deadline - performance.now()), 0x7fffffff));
      this.#polling = true;
      this.#thread!.start(count, timeout);
    } catch (error) {
      this.#failed(error);
    }
  };

  /** The thread's poll returned `result` (`errno` when negative): settles the waits it ended. */
  readonly #returned = (result: number, errno: number): void => {
    this.#polling = false;
    const waiters = this.#round;
    const n = this.#roundSize;
    /** A wait settled and not armed again by its owner's callback (it may be in a continuation). */
    let unarmed = false;
    this.#settling = true;
    try {
      if (result < 0) {
        waiters.fill(undefined, 0, n);
        if (errno !== ERRNO.EINTR) throw systemError("poll", errno);
      } else {
        const view = this.#fdsView!;
        if (decodePollRevents(view, 0) & LINUX.POLLIN) drain(this.#controlFd);
        const now = performance.now();
        for (let i = 0; i < n; i++) {
          const w = waiters[i]!;
          waiters[i] = undefined;
          // Aborted meanwhile, or aborted and armed again (its fds in this round are another wait's).
          if (w.slot < 0 || w.arms !== this.#roundArms[i]) continue;
          let ended: boolean | Error | undefined;
          if (decodePollRevents(view, 2 + 2 * i) & LINUX.POLLIN) {
            drain(w.wakeFd); // (a second waiter on the same wake fd drains nothing: harmless)
            ended = false;
          } else if (decodePollRevents(view, 1 + 2 * i) !== 0) {
            ended = true;
          } else if (w.deadline <= now) {
            ended = w.timeoutError();
          }
          if (ended === undefined) continue;
          this.#delete(w);
          w.settle(ended);
          if (w.slot < 0) unarmed = true;
        }
      }
    } catch (error) {
      this.#settling = false;
      this.#failed(error);
      return;
    }
    this.#settling = false;
    if (this.#waiters.length === 0) return;
    // Every settled wait armed again from its callback (a re-armed PollWaiter): all are here.
    if (!unarmed) return this.#startRound();
    this.#scheduled = true;
    SETTLED.then(this.#startRound);
  };

  /** Makes a poll in flight return (the control fd is in every round). */
  readonly #interrupt = (): void => {
    if (this.#controlFd >= 0) wake(this.#controlFd);
  };

  /** The thread itself failed: the shared poll goes on with a nonblocking call. */
  readonly #threadFailed = (error: Error): void => {
    if (this.#threadBroken) return;
    this.#threadBroken = true;
    warnThreadFailed(error);
    if (this.#thread !== this.#ownThread) return;
    this.#polling = false;
    this.#thread = this.#chooseRunner();
    this.#startRound();
  };

  readonly #failed = (error: unknown): void => {
    this.#polling = false;
    this.#scheduled = false;
    this.#round.fill(undefined);
    const waiters = this.#waiters.splice(0);
    for (const waiter of waiters) {
      waiter.slot = -1;
      waiter.settle(error as Error);
    }
  };
}

/** A settled promise: a reaction to it runs one microtask later. */
const SETTLED = Promise.resolve();

/** The shared poll's thread could not be made or failed: said once, on stderr. */
function warnThreadFailed(error: unknown): void {
  console.warn(
    `surfaceport: ${(error as Error)?.message ?? error}; ` +
      "the shared poll goes on with a nonblocking call per round",
  );
}

/**
 * See {@link setPollThreadEnabled}. `SURFACEPORT_POLL_THREAD=0` in the
 * environment (Deno: readable with `--allow-env`) starts the process with
 * the nonblocking call: no thread, no second V8 isolate (~16-22 MB of RSS),
 * a few hundred bytes of garbage per parked wait.
 */
let pollThreadEnabled = runtime.env("SURFACEPORT_POLL_THREAD") !== "0";
/** The C library the poll's thread loads (tests make it fail with a path that does not exist). */
let pollThreadLibrary = LIBC_PATH;

/**
 * Tests: the library the shared poll's thread loads from now on (before
 * the process's first parked wait), e.g. one that does not exist, to see
 * the poll go on as nonblocking calls when the thread fails.
 */
export function setPollThreadLibrary(path: string): void {
  pollThreadLibrary = path;
}

/**
 * Runs the shared poll's rounds on the runtime's {@link PollThread} (the
 * default, where the runtime has one) or as nonblocking calls (`false`),
 * from the next round on: for benchmarks and tests that compare the two.
 */
export function setPollThreadEnabled(enabled: boolean): void {
  pollThreadEnabled = enabled;
}

const poller = new Poller();

/**
 * How the shared poll runs its rounds now: `"thread"` (the runtime's
 * {@link PollThread}), `"calls"` (nonblocking calls), or `"none"` before
 * the first parked wait (tests, and `cli doctor`).
 */
export function sharedPollRunner(): "thread" | "calls" | "none" {
  return poller.runner;
}

/**
 * Opens the shared poll's control eventfd, which the first parked wait would
 * open and which then stays for the life of the process (tests open it
 * before taking a descriptor baseline).
 */
export function openPollerControlFd(): void {
  poller.openControlFd();
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
