/**
 * The shared poll's thread on Deno ({@link PollThread}): a worker that
 * blocks in `poll(2)` and reports each return to the JavaScript thread
 * through an FFI callback it calls across threads. A nonblocking FFI call
 * allocates its promise and Deno's bookkeeping for it on every call
 * (0.25-0.6 KB, `tests/wakeup_allocation_test.ts`); a callback with
 * integer arguments called from another thread allocates nothing on the
 * JavaScript heap, so a wait parked per frame makes no garbage for its
 * wake-up.
 *
 * The two threads share a control block (int32 words of a
 * `SharedArrayBuffer`) and the pollfd array (a `SharedArrayBuffer` the
 * worker reads by address). The `STATE` word hands a round over:
 *
 * - `IDLE` → `ASKED`: the JavaScript thread asks for a poll (count and
 *   timeout written first) and wakes the worker with `Atomics.notify`;
 * - `ASKED` → `BEGUN`: the worker takes it (compare-and-swap), reads the
 *   count and timeout and polls; `ASKED` → `HELD`: the JavaScript thread
 *   keeps it from beginning while it adds a wait, then asks again;
 * - `BEGUN` → `IDLE`: the worker, when `poll` returns, before it calls
 *   back (so that the callback may ask for the next round).
 *
 * Deno runs a callback called from another thread on the JavaScript
 * thread's event loop, and the calling thread waits until it returns. The
 * callback is ref'd while a poll is asked for (a parked wait keeps the
 * process alive, as a pending nonblocking call does) and the worker never
 * is: made at first use, it lives as long as the runtime that made it.
 *
 * That runtime may go while the process goes on (`deno test` drops each
 * module's runtime; a poll may return later) and the callback's memory
 * goes with it: a call then crashes the process. So the `GATE` word:
 * the worker calls only through it (`OPEN` → `CALLING` → `OPEN`), and at
 * `unload` the JavaScript thread closes it (`CLOSED`) and interrupts the
 * poll; the worker, finding it closed, leaves its loop and ends.
 *
 * @module
 */

import { isMainThread, Worker } from "node:worker_threads";
import type { PollThread } from "./runtime.ts";

/**
 * True on the process's main runtime (`deno run`, `deno test`'s modules),
 * false in a worker (a `Worker`, or a `node:worker_threads` one). A worker's
 * runtime can be terminated at any moment without an `unload`, and a poll
 * returning after that would call back into freed memory: a worker's shared
 * poll runs as nonblocking calls instead.
 */
export function onProcessMainRuntime(): boolean {
  // Deno's web workers say isMainThread (true); they alone have WorkerGlobalScope.
  return isMainThread && !("WorkerGlobalScope" in globalThis);
}

const STATE = 0;
const NFDS = 1;
const TIMEOUT = 2;
/** The pollfd array's address (low, high 32 bits), read again when GENERATION changes. */
const ADDRESS_LOW = 3;
const ADDRESS_HIGH = 4;
const GENERATION = 5;
/** OPEN, CALLING (the worker is in the callback) or CLOSED (the runtime is going: never call). */
const GATE = 6;
const WORDS = 8;

const OPEN = 0;
const CALLING = 1;
const CLOSED = 2;

const IDLE = 0;
const ASKED = 1;
const BEGUN = 2;
const HELD = 3;

/** The worker's program (CommonJS, as `node:worker_threads` runs an `eval` worker under Deno). */
const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const { control, callback, libcPath } = workerData;
const words = new Int32Array(control);
let libc;
try {
  libc = Deno.dlopen(libcPath, {
    poll: { parameters: ["pointer", "u64", "i32"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  }).symbols;
} catch (error) {
  parentPort.postMessage(String(error && error.message || error));
  process.exit(1);
}
const errno = new Deno.UnsafePointerView(libc.__errno_location());
const done = new Deno.UnsafeFnPointer(
  Deno.UnsafePointer.create(callback),
  { parameters: ["i32", "i32"], result: "void" },
);
let generation = -1;
let fds = null;
function serve() {
  for (;;) {
    let state;
    while ((state = Atomics.compareExchange(words, ${STATE}, ${ASKED}, ${BEGUN})) !== ${ASKED}) {
      if (Atomics.load(words, ${GATE}) === ${CLOSED}) return;
      Atomics.wait(words, ${STATE}, state);
    }
    if (words[${GENERATION}] !== generation) {
      generation = words[${GENERATION}];
      fds = Deno.UnsafePointer.create(
        (BigInt(words[${ADDRESS_HIGH}] >>> 0) << 32n) | BigInt(words[${ADDRESS_LOW}] >>> 0),
      );
    }
    const result = libc.poll(fds, words[${NFDS}], words[${TIMEOUT}]);
    const failure = result < 0 ? errno.getInt32(0) : 0;
    Atomics.store(words, ${STATE}, ${IDLE});
    if (Atomics.compareExchange(words, ${GATE}, ${OPEN}, ${CALLING}) !== ${OPEN}) return;
    done.call(result, failure);
    if (Atomics.compareExchange(words, ${GATE}, ${CALLING}, ${OPEN}) !== ${CALLING}) return;
  }
}
serve();
`;

type Returned = { parameters: ["i32", "i32"]; result: "void" };

/** A {@link PollThread} on Deno: a `node:worker_threads` worker and a cross-thread FFI callback. */
export class DenoPollThread implements PollThread {
  readonly #words = new Int32Array(new SharedArrayBuffer(WORDS * 4));
  readonly #callback: Deno.UnsafeCallback<Returned>;
  /** The pollfd array the worker reads (shared memory: its bytes never move). */
  #fds: Uint8Array = new Uint8Array(0);
  /** A poll asked for and not returned yet (the callback is ref'd meanwhile). */
  #inFlight = false;
  #failed = false;

  constructor(
    libcPath: string,
    onReturn: (result: number, errno: number) => void,
    onFailed: (error: Error) => void,
    interrupt: () => void,
  ) {
    this.#callback = new Deno.UnsafeCallback(
      { parameters: ["i32", "i32"], result: "void" } as const,
      (result: number, errno: number) => {
        this.#endFlight();
        onReturn(result, errno);
      },
    );
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        control: this.#words.buffer,
        callback: Deno.UnsafePointer.value(this.#callback.pointer),
        libcPath,
      },
    });
    worker.unref();
    // Not `beforeunload`: a listener may cancel that one, and the runtime goes on.
    globalThis.addEventListener("unload", () => {
      Atomics.store(this.#words, GATE, CLOSED);
      Atomics.notify(this.#words, STATE); // (an idle worker leaves its wait)
      if (this.#endFlight()) interrupt();
    }, { once: true });
    const fail = (cause: unknown) => {
      // (Closed: the worker ended because its runtime is going, not a failure to report.)
      if (this.#failed || Atomics.load(this.#words, GATE) === CLOSED) return;
      this.#failed = true;
      this.#endFlight();
      onFailed(
        new Error(`the shared poll's thread failed: ${(cause as Error)?.message ?? cause}`, {
          cause,
        }),
      );
    };
    let reason = "";
    worker.on("message", (message: string) => reason = message);
    worker.on("error", fail);
    worker.on("exit", (code: number) => fail(new Error(reason || `its worker exited (${code})`)));
  }

  /** No poll is in flight any more (the callback stops holding the process); true if one was. */
  #endFlight(): boolean {
    if (!this.#inFlight) return false;
    this.#inFlight = false;
    this.#callback.unref();
    return true;
  }

  fds(size: number): Uint8Array {
    if (this.#fds.length >= size) return this.#fds;
    if (this.#inFlight && Atomics.load(this.#words, STATE) !== HELD) {
      throw new Error("internal: the poll thread's pollfd array grown while it may poll it");
    }
    this.#fds = new Uint8Array(new SharedArrayBuffer(size));
    const address = Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#fds));
    const words = this.#words;
    words[ADDRESS_LOW] = Number(BigInt(address) & 0xffffffffn) | 0;
    words[ADDRESS_HIGH] = Number(BigInt(address) >> 32n) | 0;
    words[GENERATION]++;
    return this.#fds;
  }

  start(nfds: number, timeout: number): void {
    if (this.#failed) throw new Error("internal: the shared poll's thread has failed");
    const words = this.#words;
    if (Atomics.load(words, GATE) === CLOSED) return; // (an unload listener's wait: never served)
    if (this.#inFlight && Atomics.load(words, STATE) !== HELD) {
      throw new Error("internal: a poll asked for while one runs");
    }
    words[NFDS] = nfds;
    words[TIMEOUT] = timeout;
    if (!this.#inFlight) {
      this.#inFlight = true;
      this.#callback.ref();
    }
    Atomics.store(words, STATE, ASKED);
    Atomics.notify(words, STATE, 1);
  }

  hold(): boolean {
    return Atomics.compareExchange(this.#words, STATE, ASKED, HELD) === ASKED;
  }
}
