/**
 * `nonblocking` symbols on Node and Bun, which have no nonblocking FFI call:
 * the call runs on a `worker_threads` worker that opened the same library,
 * and the promise settles when the worker posts the result back. The
 * worker blocks in the C call; the main thread's event loop stays free.
 *
 * `buffer` arguments must be shared memory (`runtime.sharedBytes`): the
 * worker then reads and writes the caller's bytes, not a copy. One worker
 * per call in flight (surfaceport parks at most one `poll` or `mach_msg`
 * round at a time, so one worker in practice), made at the first call and
 * kept; a worker holds the process open only while its call is pending,
 * as Deno's nonblocking calls do.
 *
 * @module
 */

import { Worker } from "node:worker_threads";

/** The worker's program (CommonJS, both runtimes): open the library, run calls as they come. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { host, path, definitions } = workerData;
const functions = {};
if (host === "bun") {
  const ffi = require("bun:ffi");
  for (const [name, d] of Object.entries(definitions)) {
    functions[name] = ffi.dlopen(path, { [d.name]: { args: d.args, returns: d.returns } })
      .symbols[d.name];
  }
} else {
  const ffi = require("node:ffi");
  const lib = new ffi.DynamicLibrary(path);
  for (const [name, d] of Object.entries(definitions)) {
    functions[name] = lib.getFunction(d.name, { arguments: d.arguments, return: d.return });
  }
}
parentPort.on("message", (call) => {
  let result;
  try {
    result = functions[call[0]](...call[1]);
  } catch (error) {
    parentPort.postMessage([false, String(error && error.message || error)]);
    return;
  }
  parentPort.postMessage([true, result]);
});
`;

/** What a worker needs to open the library: the runtime's own definitions of the nonblocking symbols. */
export interface OffThreadLibrary {
  /** `"node"` or `"bun"`. */
  host: "node" | "bun";
  /** The library's path. */
  path: string;
  /** Symbol key → the runtime's definition with its C `name` (Node: `arguments`/`return`; Bun: `args`/`returns`). */
  definitions: Record<string, unknown>;
}

/** One worker, busy with at most one call. */
class CallWorker {
  readonly #worker: Worker;
  #settle: ((ok: boolean, value: unknown) => void) | undefined;

  constructor(library: OffThreadLibrary, onIdle: (worker: CallWorker) => void) {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: library });
    this.#worker.unref();
    this.#worker.on("message", ([ok, value]: [boolean, unknown]) => {
      const settle = this.#settle;
      this.#settle = undefined;
      this.#worker.unref();
      onIdle(this);
      settle?.(ok, value);
    });
    this.#worker.on("error", (error: Error) => {
      const settle = this.#settle;
      this.#settle = undefined;
      settle?.(false, error.message);
    });
  }

  call(name: string, args: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#settle = (ok, value) =>
        ok ? resolve(value) : reject(new Error(`${name} on a worker thread: ${value}`));
      this.#worker.ref();
      this.#worker.postMessage([name, args]);
    });
  }
}

/**
 * A function per nonblocking symbol of `library`, each returning a promise
 * of the C result, run on a worker thread.
 */
export function offThreadCaller(
  library: OffThreadLibrary,
): (name: string) => (...args: unknown[]) => Promise<unknown> {
  const idle: CallWorker[] = [];
  const onIdle = (worker: CallWorker) => idle.push(worker);
  return (name) => (...args) => {
    const worker = idle.pop() ?? new CallWorker(library, onIdle);
    return worker.call(name, args);
  };
}
