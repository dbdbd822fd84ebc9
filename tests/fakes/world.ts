/**
 * Two fake tasks in one Deno process, A (pid 101) and B (pid 202), same uid,
 * each with its own darwin backend over the fake kernel, reached through
 * `wrapLibraries` and the symbol-level fake (`frameworks.ts`). The library runs as
 * A unless `as(B, ...)`; disposing restores the real backend.
 *
 * @module
 */

import { type Channel, type ChannelOptions, connect, listen, type Listener } from "../../mod.ts";
import type { Backend } from "../../src/contract/backend.ts";
import { createDarwinBackend } from "../../src/darwin/backend.ts";
import { setBackendForTesting } from "../../src/platform.ts";
import { FakeMachKernel, type FakeTask } from "./fake_darwin.ts";
import { glueNative } from "./frameworks.ts";

/** What {@link world} returns. */
export interface TwoTaskWorld {
  kernel: FakeMachKernel;
  a: FakeTask;
  b: FakeTask;
  A: Backend;
  B: Backend;
  as<T>(backend: Backend, fn: () => T): T;
  [Symbol.dispose](): void;
}

/** Two tasks A and B over one fake kernel; run synchronous code as either. */
export function world(): TwoTaskWorld {
  const kernel = new FakeMachKernel();
  const a = kernel.createTask({ pid: 101, uid: 501 });
  const b = kernel.createTask({ pid: 202, uid: 501 });
  // Through the real glue (wrapLibraries, the property dictionaries) over the symbol-level fake.
  const A = createDarwinBackend(glueNative(a));
  const B = createDarwinBackend(glueNative(b));
  setBackendForTesting(A);
  let current: Backend = A;
  /** Runs the synchronous part of `fn` as `backend`'s task. */
  const as = <T>(backend: Backend, fn: () => T): T => {
    const previous = current;
    setBackendForTesting(current = backend);
    try {
      return fn();
    } finally {
      setBackendForTesting(current = previous);
    }
  };
  return {
    kernel,
    a,
    b,
    A,
    B,
    as,
    [Symbol.dispose]() {
      setBackendForTesting(undefined);
    },
  };
}

/** What {@link pair} returns: B's listener and both ends of the channel from A to B. */
export interface TwoTaskPair {
  listener: Listener;
  /** A's end. */
  producer: Channel;
  /** B's end, accepted by `listener`. */
  consumer: Channel;
}

/** B listens on `name`, A connects; returns both channel ends. */
export async function pair(
  w: TwoTaskWorld,
  name = "cam",
  listenOptions: ChannelOptions = {},
): Promise<TwoTaskPair> {
  const listener = w.as(w.B, () => listen(name, listenOptions));
  const accepted = listener.accept({ timeout: 2000 });
  const producer = await w.as(w.A, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  return { listener, producer, consumer };
}
