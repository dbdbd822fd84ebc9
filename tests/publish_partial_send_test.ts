/**
 * `Publisher.send` failing part-way through its subscribers (exporting a
 * capability for one of them threw, e.g. `EMFILE`): the frame already queued
 * for earlier "queue" subscribers must be withdrawn and the one promise the
 * caller got must be the only one that rejects — no orphaned `send` waiting
 * whose later timeout rejects where nobody listens (an unhandled rejection
 * ends a Deno process).
 */
import assert from "node:assert/strict";
import { publish, subscribe, Surface, SystemCallError } from "../mod.ts";
import type { SurfaceBacking } from "../src/contract/backend.ts";
import { backingOf } from "../src/surface/surface.ts";
import { sleep, uniqueName, waitUntil } from "./helpers.ts";

/** A surface over `real`'s memory whose `exportHandle` throws from call number `failAt` on. */
function failingSurface(real: Surface, failAt: number): Surface {
  const backing = backingOf(real, "test");
  let calls = 0;
  const proxy: SurfaceBacking = {
    get id() {
      return backing.id;
    },
    get geometry() {
      return backing.geometry;
    },
    get baseAddress() {
      return backing.baseAddress;
    },
    lock: (readOnly) => backing.lock(readOnly),
    unlock: (readOnly) => backing.unlock(readOnly),
    memory: () => backing.memory(),
    inUseElsewhere: () => backing.inUseElsewhere(),
    exportHandle: () => {
      if (++calls >= failAt) {
        throw new SystemCallError("open", 24, "EMFILE", "out of descriptors (simulated)");
      }
      return backing.exportHandle();
    },
    unsafeHandle: () => backing.unsafeHandle(),
    release: () => {}, // `real` owns the memory
    get released() {
      return backing.released;
    },
  };
  return new Surface(proxy, proxy, false);
}

Deno.test({
  name: "publish: a send that fails part-way withdraws the frame from earlier queue " +
    "subscribers and leaves no promise to reject unobserved",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("pspart");
    using publisher = publish(name, { keepLast: false });
    using first = await subscribe(name, { policy: "queue", timeout: 5000 });
    using second = await subscribe(name, { policy: "queue", timeout: 5000 });
    await waitUntil(
      () =>
        publisher.subscribers.length === 2 &&
        publisher.subscribers.every((s) => s.state === "subscribed"),
      10000,
      "both subscriptions",
    );
    using real = Surface.create({ width: 64, height: 16 });
    // Each subscriber now has its one frame in flight (depth 1, no credit back yet).
    await publisher.send(real, undefined, { timeout: 5000 });
    (await first.receive({ timeout: 5000 })).close();
    (await second.receive({ timeout: 5000 })).close();

    // The first subscriber has no credit now: the next frame is queued for it. The second
    // subscriber's capability cannot be made.
    using failing = failingSurface(real, 2);
    await assert.rejects(
      publisher.send(failing, undefined, { timeout: 200 }),
      SystemCallError,
    );
    assert.deepEqual(
      publisher.subscribers.map((s) => s.waiting),
      [0, 0],
      "the frame of the failed send was withdrawn",
    );
    // Past the failed send's timeout: nothing may reject now (the test fails on an unhandled one).
    await sleep(400);
  },
});
