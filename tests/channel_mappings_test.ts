/**
 * Channels on Linux: what a received frame holds and gives back. The
 * receiver's mappings cached by inode and shared between frames, no
 * descriptor left behind, and a frame dropped without `close()` released
 * once by the finalizer.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Surface } from "../mod.ts";
import { openReceivedCount } from "../src/surface/surface_lifetime.ts";
import {
  assertNoFdLeak,
  fdTargets,
  memfdMappings,
  openFds,
  pair,
  settleRuntimeFds,
} from "./helpers.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "channel: the receiver caches mappings by inode; a surface that returns is not remapped",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using a = Surface.create({ width: 64, height: 64 });
    using b = Surface.create({ width: 64, height: 64 });
    // A mapping is identified by its one ArrayBuffer (see "received frames share one buffer per
    // mapping" below), not by its address: mmap hands back the address a munmap just freed.
    const buffers = new Map<number, ArrayBufferLike>();
    const mappedBefore = memfdMappings().length;
    for (let i = 0; i < 10; i++) {
      const surface = i % 2 ? a : b;
      await p.client.send(surface);
      using frame = await p.server.receive({ timeout: 1000 });
      const buffer = frame.surface.bytes().buffer;
      const known = buffers.get(frame.surface.id);
      if (known !== undefined) assert.equal(buffer, known, `frame ${i}: the same mapping reused`);
      buffers.set(frame.surface.id, buffer);
    }
    assert.equal(buffers.size, 2);
    assert.equal(memfdMappings().length, mappedBefore + 2, "the two cached mappings, no other");
  },
});

Deno.test({
  name: "channel: no descriptor leaks across a session of sends, receives and closes",
  ignore: !linux,
  async fn() {
    await assertNoFdLeak(async () => {
      using p = await pair();
      using surface = Surface.create({ width: 320, height: 240 });
      for (let i = 0; i < 200; i++) {
        await p.client.send(surface, { i });
        (await p.server.receive({ timeout: 1000 })).close();
      }
      await p.client.send(surface);
      await p.client.send(surface);
      // Left unread in the queue: released when the channel closes.
    });
  },
});

Deno.test({
  name: "channel: a frame dropped without close() is released by the finalizer",
  ignore: !linux,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await settleRuntimeFds();
    using p = await pair();
    using surface = Surface.create({ width: 64, height: 64 });
    const baseline = openFds();
    for (let i = 0; i < 10; i++) await p.client.send(surface);
    await (async () => {
      for (let i = 0; i < 10; i++) {
        (await p.server.receive({ timeout: 1000 })).surface.bytes()[0] = i;
      }
    })();
    assert.equal(surface.inUse, true, "ten frames are held (not closed)");
    const { collectGarbage } = await import("./helpers.ts");
    await collectGarbage();
    assert.equal(surface.inUse, false, "the finalizer closed every held descriptor");
    assert.deepEqual(fdTargets(baseline), []);
  },
});

Deno.test({
  name: "channel: a frame closed before it is collected is not finalized again (its " +
    "registration stays: no second release, no warning, the open counts stay right)",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using surface = Surface.create({ width: 64, height: 64 });
    await p.client.send(surface);
    using held = await p.server.receive({ timeout: 1000 });
    const warn = console.warn;
    const warnings: unknown[] = [];
    console.warn = (...args: unknown[]) => warnings.push(args);
    try {
      await (async () => {
        for (let i = 0; i < 10; i++) {
          await p.client.send(surface);
          const frame = await p.server.receive({ timeout: 1000 });
          assert.equal(openReceivedCount(surface.id), 2);
          frame.close();
        }
      })();
      const { collectGarbage } = await import("./helpers.ts");
      await collectGarbage();
    } finally {
      console.warn = warn;
    }
    assert.deepEqual(warnings, [], "a closed frame's finalizer warned");
    assert.equal(openReceivedCount(surface.id), 1, "the frame still open counts once");
    assert.equal(surface.inUse, true, "the frame still open holds the surface");
    // A frame is its own surface (one object per frame), and `frame.surface` still works.
    assert.ok(held instanceof Surface);
    assert.equal(held.surface, held);
    assert.equal(held.bytes().length, 64 * 64 * 4);
  },
});

Deno.test({
  name: "channel: received frames share one buffer per mapping, detached when the cache lets go",
  ignore: !linux,
  async fn() {
    const p = await pair({ mappingCacheSize: 1 });
    try {
      using a = Surface.create({ width: 64, height: 64 });
      using b = Surface.create({ width: 64, height: 64 });
      a.bytes().fill(1);
      await p.client.send(a);
      const first = await p.server.receive({ timeout: 1000 });
      const view = first.surface.bytes();
      first.close();
      assert.equal(view[0], 1, "still mapped (cached) after the frame closed");
      await p.client.send(a);
      using second = await p.server.receive({ timeout: 1000 });
      assert.equal(second.surface.bytes().buffer, view.buffer, "the same buffer, not a new one");
      second.close();
      await p.client.send(b); // evicts a's mapping (cache size 1): it is unmapped
      (await p.server.receive({ timeout: 1000 })).close();
      assert.equal(view.length, 0, "detached before its memory was unmapped");
    } finally {
      p[Symbol.dispose]();
    }
  },
});
