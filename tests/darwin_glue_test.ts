/**
 * The macOS glue (`wrapLibraries` in `src/darwin/native.ts`: the IOSurface
 * property dictionary, the key globals, number conversions, the FFI
 * wrappers) and the IOSurface semantics the backend relies on, run over the
 * symbol-level TEST DOUBLE (`tests/fakes/frameworks.ts`), and the number of
 * FFI calls a received frame costs (issue 19, defect 12; issue 20's macOS
 * per-frame cost). Nothing here ran on a Mac.
 */

import assert from "node:assert/strict";
import { connect, listen, publish, subscribe, Surface, SurfacePool } from "../mod.ts";
import type { DarwinLibraries } from "../ffi/darwin.ts";
import type { Backend } from "../src/contract/backend.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { wrapLibraries } from "../src/darwin/native.ts";
import { setBackendForTesting } from "../src/platform.ts";
import { FakeMachKernel, type FakeTask } from "./fakes/fake_darwin.ts";
import { fakeLibraries, glueNative } from "./fakes/frameworks.ts";
import { world } from "./fakes/world.ts";
import { waitUntil } from "./helpers.ts";

/** The fake's record of the surface behind `surface` (by its IOSurfaceID). */
function fakeSurfaceOf(kernel: FakeMachKernel, surface: Surface) {
  const found = [...kernel.surfaces].find((s) => s.id === surface.id);
  if (!found) throw new Error(`no fake surface ${surface.id}`);
  return found;
}

Deno.test("glue: createIOSurface's property dictionary gives IOSurface the width, height, format and planes asked for", () => {
  using w = world();
  for (
    const [width, height, format] of [[64, 32, "BGRA"], [48, 16, "420v"], [8, 40, "L008"]] as const
  ) {
    using surface = Surface.create({ width, height, format });
    const fake = fakeSurfaceOf(w.kernel, surface);
    assert.equal(fake.width, width, `${format}: kIOSurfaceWidth`);
    assert.equal(fake.height, height, `${format}: kIOSurfaceHeight`);
    assert.equal(surface.width, width);
    assert.equal(surface.height, height);
    assert.equal(
      fake.planeInfo.length,
      format === "420v" ? 2 : 0,
      `${format}: kIOSurfacePlaneInfo`,
    );
    surface.close();
  }
  w.kernel.assertNoLeaks(); // every CFNumber, dictionary and array the glue made is released
});

Deno.test("glue: a dictionary made without the kCFType callbacks, or a number of the wrong CFNumberType, is caught", () => {
  const kernel = new FakeMachKernel();
  const task = kernel.createTask();
  const { coreFoundation: cf } = fakeLibraries(task);
  const bytes = new Uint8Array(8);
  const number = cf.CFNumberCreate(null, 9n, /* kCFNumberFloat64Type */ bytes);
  assert.equal(number, null);
  const dict = cf.CFDictionaryCreateMutable(null, 0n, null, null)!;
  cf.CFRelease(dict);
  assert.throws(() => kernel.assertNoLeaks(), /CFNumberType 9[\s\S]*kCFType callbacks/);
});

Deno.test("glue: a write lock bumps IOSurface's seed at unlock; a read-only lock neither writes nor bumps it", () => {
  using w = world();
  using surface = Surface.create({ width: 32, height: 16 });
  const fake = fakeSurfaceOf(w.kernel, surface);
  const seed = fake.seed;
  surface.lock();
  surface.bytes(0).fill(7);
  surface.unlock();
  assert.equal(
    fake.seed,
    seed + 1,
    "kIOSurfaceLockReadOnly was passed for a write: the seed stayed",
  );
  surface.lock({ readOnly: true });
  assert.equal(surface.bytes(0)[5], 7);
  surface.unlock({ readOnly: true });
  assert.equal(fake.seed, seed + 1, "a read-only lock bumped the seed (it was locked read-write)");
  surface.close();
  w.kernel.assertNoLeaks(); // also: nothing was written under a read-only lock
});

Deno.test("glue: writing under a read-only lock is caught by the fake (IOSurface would keep stale caches)", () => {
  using w = world();
  using surface = Surface.create({ width: 32, height: 16 });
  surface.lock({ readOnly: true });
  surface.bytes(0)[0] = 1;
  surface.unlock({ readOnly: true });
  surface.close();
  assert.throws(() => w.kernel.assertNoLeaks(), /written under a kIOSurfaceLockReadOnly lock/);
});

/** `libs` with every function of the IOSurface and CoreFoundation tables counted. */
function counted(libs: DarwinLibraries): { libs: DarwinLibraries; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const count = <T extends object>(table: T): T => {
    const copy: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(table)) {
      copy[name] = typeof value !== "function" ? value : (...args: unknown[]) => {
        calls.set(name, (calls.get(name) ?? 0) + 1);
        return value(...args);
      };
    }
    return copy as T;
  };
  return {
    libs: { ...libs, ioSurface: count(libs.ioSurface), coreFoundation: count(libs.coreFoundation) },
    calls,
  };
}

const total = (calls: Map<string, number>) => [...calls.values()].reduce((a, b) => a + b, 0);

/** `task`'s backend through the glue with its IOSurface and CF calls counted. */
function countedBackend(task: FakeTask) {
  const { libs, calls } = counted(fakeLibraries(task));
  return { backend: createDarwinBackend(wrapLibraries(libs)), calls };
}

/** Runs `fn` with `backend` as the process's backend, then makes `home` the backend again. */
function inBackend<T>(backend: Backend, home: Backend, fn: () => T): T {
  setBackendForTesting(backend);
  try {
    return fn();
  } finally {
    setBackendForTesting(home);
  }
}

Deno.test("defect 12: a received frame of a surface seen before costs 5 IOSurface/CF calls (lookup, ID, alloc size, base, release), not 14-20", async () => {
  const kernel = new FakeMachKernel();
  const a = kernel.createTask({ pid: 101 });
  const b = kernel.createTask({ pid: 202 });
  const A: Backend = createDarwinBackend(glueNative(a));
  const { backend: B, calls } = countedBackend(b);
  const as = <T>(backend: Backend, fn: () => T): T => inBackend(backend, A, fn);
  setBackendForTesting(A);
  try {
    const listener = as(B, () => listen("glue-count"));
    const accepted = listener.accept({ timeout: 2000 });
    const producer = await connect("glue-count", { timeout: 2000 });
    const consumer = await accepted;
    const pools = [
      new SurfacePool({ width: 64, height: 32, format: "BGRA", maxSurfaces: 2 }),
      new SurfacePool({ width: 64, height: 32, format: "420v", maxSurfaces: 2 }),
    ];
    const perFrame = async (format: number) => {
      const surface = pools[format].tryAcquire()!;
      await producer.send(surface, null);
      surface.close();
      const before = total(calls);
      const frame = await as(B, () => consumer.receive({ timeout: 1000 }));
      frame.close();
      return total(calls) - before;
    };
    // Warm-up: every pool surface seen once (the first frame of each reads its layout).
    for (let i = 0; i < 4; i++) await perFrame(i % 2);
    const counts = { BGRA: [] as number[], "420v": [] as number[] };
    for (let i = 0; i < 20; i++) counts[i % 2 ? "420v" : "BGRA"].push(await perFrame(i % 2));
    const worst = Math.max(...counts.BGRA, ...counts["420v"]);
    assert.ok(
      worst <= 5,
      `IOSurface/CF calls per received frame: BGRA ${counts.BGRA}, 420v ${counts["420v"]} ` +
        `(${JSON.stringify(Object.fromEntries(calls))})`,
    );
    for (const pool of pools) pool.close();
    producer.close();
    consumer.close();
    listener.close();
    kernel.assertNoLeaks();
  } finally {
    setBackendForTesting(undefined);
  }
});

Deno.test("issue 20: a frame published to 3 subscribers costs the publisher 4 IOSurface/CF calls (a port per subscriber and one for the kept last frame), no more", async () => {
  const kernel = new FakeMachKernel();
  const { backend: A, calls } = countedBackend(kernel.createTask({ pid: 101 }));
  const others = [202, 203, 204].map((pid) =>
    createDarwinBackend(glueNative(kernel.createTask({ pid })))
  );
  const as = <T>(backend: Backend, fn: () => T): T => inBackend(backend, A, fn);
  setBackendForTesting(A);
  try {
    const publisher = publish("glue-fanout");
    const subscriptions: Awaited<ReturnType<typeof subscribe>>[] = [];
    for (const backend of others) {
      subscriptions.push(await as(backend, () => subscribe("glue-fanout", { timeout: 2000 })));
    }
    await waitUntil(
      () => publisher.subscribers.filter((s) => s.state === "subscribed").length === 3,
      2000,
      "three subscriptions",
    );
    const surface = Surface.create({ width: 64, height: 32, format: "420v" });
    // The publisher's calls while one frame goes to all three and each receives and closes it.
    const perFrame = async () => {
      const before = total(calls);
      await publisher.send(surface);
      for (const subscription of subscriptions) {
        (await subscription.receive({ timeout: 1000 })).close();
      }
      return total(calls) - before;
    };
    for (let i = 0; i < 3; i++) await perFrame();
    const counts: number[] = [];
    for (let i = 0; i < 10; i++) counts.push(await perFrame());
    assert.deepEqual(
      counts,
      counts.map(() => 4),
      `IOSurface/CF calls of the publisher per frame: ${counts} ` +
        `(${JSON.stringify(Object.fromEntries(calls))})`,
    );
    surface.close();
    for (const subscription of subscriptions) subscription.close();
    publisher.close();
  } finally {
    setBackendForTesting(undefined);
  }
});

Deno.test("defect 12: a surface whose ID comes back with another layout is read again, not refused", async () => {
  using w = world();
  const listener = w.as(w.B, () => listen("glue-reuse"));
  const accepted = listener.accept({ timeout: 2000 });
  const producer = await connect("glue-reuse", { timeout: 2000 });
  const consumer = await accepted;
  using wide = Surface.create({ width: 64, height: 32 });
  await producer.send(wide, null);
  (await w.as(w.B, () => consumer.receive({ timeout: 1000 }))).close();
  // The same IOSurfaceID, same allocation size, another layout (as after a free and a reuse).
  const fake = fakeSurfaceOf(w.kernel, wide);
  const tall = Surface.create({ width: 32, height: 64 });
  const tallFake = fakeSurfaceOf(w.kernel, tall);
  Object.defineProperty(tallFake, "id", { value: fake.id });
  assert.equal(tallFake.allocSize, fake.allocSize);
  await producer.send(tall, null);
  using frame = await w.as(w.B, () => consumer.receive({ timeout: 1000 }));
  assert.equal(frame.surface.width, 32);
  assert.equal(frame.surface.height, 64);
  frame.close();
  tall.close();
  wide.close();
  producer.close();
  consumer.close();
  listener.close();
  w.kernel.assertNoLeaks();
});
