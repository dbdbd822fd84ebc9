/**
 * The receiver's mapping cache (`MappingCache` in src/linux/received.ts)
 * called directly, as a channel or GStreamer's adopter uses it: with the
 * cache full of distinct memfds, each further one evicts exactly one
 * mapping, the least recently used, and unmaps it (counted in
 * `/proc/self/maps` by inode: one line per mapping), and an eviction from a
 * full cache of 1024 allocates nothing per cached entry (GStreamer's pools
 * outgrow the cache, and then every buffer evicts one).
 *
 * The cache never replaces a live entry: a known inode is a hit, and one
 * whose number is cached for another device is mapped uncached. The mapping
 * a new memfd displaces is the least recently used one, evicted.
 *
 * @module
 */

import assert from "node:assert/strict";
import { MappingCache, type ReceivedSurface } from "../src/linux/received.ts";
import { dupCloexec, fstatxNumbers } from "../src/linux/libc.ts";
import { closeAll, makeMemfd, smallGeometry } from "./hostile/raw.ts";
import { memfdMappings, PEER_FLAGS, runRepoScript } from "./helpers.ts";

const linux = Deno.build.os === "linux";
const GEOMETRY = smallGeometry(); // 64x32 BGRA: 8 KiB
const LIMITS = { maxSurfaceBytes: 1 << 30 };
/**
 * Bytes an eviction from a full cache of 1024 may allocate, beyond an
 * import of a new memfd that evicts nothing (its frame, mapping and the
 * checks of a new inode: ~1.6 KB unoptimized), measured with V8's optimizing
 * compilers off (tests/peers/mapping_cache_eviction.ts says why). Measured:
 * nothing beyond it (the roomy cache's map growing costs more); scanning for
 * the least recently used through the map's iterator: ~41 KB per eviction.
 */
const LIMIT_PER_EVICTION = 256;

/** How many mappings of each inode this process holds (memfds made by tests/hostile/raw.ts). */
function mappingsByInode(): Map<number, number> {
  const counts = new Map<number, number>();
  for (const line of memfdMappings("hostile")) {
    // start-end perms offset dev inode path
    const inode = Number(line.split(/\s+/)[4]);
    counts.set(inode, (counts.get(inode) ?? 0) + 1);
  }
  return counts;
}

/** A memfd to import, its inode number, and a way to hand the cache a descriptor of it. */
class TestMemfd {
  readonly fd = makeMemfd(GEOMETRY.allocSize);
  readonly inode = fstatxNumbers(this.fd).ino;
  /** Imports a duplicate (the cache's frame owns and closes what it is given). */
  importInto(cache: MappingCache): ReceivedSurface {
    const dup = dupCloexec(this.fd);
    try {
      return cache.import(dup, GEOMETRY);
    } catch (error) {
      closeAll(dup);
      throw error;
    }
  }
  /** Imports it as a frame and closes the frame at once (the mapping stays cached). */
  touch(cache: MappingCache): void {
    this.importInto(cache).release();
  }
}

/** Which of `memfds` are mapped, by index, each mapped at most once. */
function mappedIndexes(memfds: TestMemfd[]): number[] {
  const counts = mappingsByInode();
  const mapped: number[] = [];
  memfds.forEach((memfd, i) => {
    const count = counts.get(memfd.inode) ?? 0;
    assert.ok(count <= 1, `memfd ${i} is mapped ${count} times`);
    if (count === 1) mapped.push(i);
  });
  return mapped;
}

Deno.test({
  name:
    "mapping cache: with the cache full, each new memfd evicts exactly one mapping, the least recently used, and unmaps it",
  ignore: !linux,
  fn() {
    const capacity = 8;
    const memfds = Array.from({ length: capacity + 4 }, () => new TestMemfd());
    const cache = new MappingCache(capacity, LIMITS);
    try {
      for (let i = 0; i < capacity; i++) memfds[i].touch(cache);
      assert.equal(cache.size, capacity);
      const full = [...Array(capacity).keys()];
      assert.deepEqual(mappedIndexes(memfds), full);
      // Used again, memfd 0 is no longer the least recently used: 1 is, then 2, ...
      memfds[0].touch(cache);
      assert.equal(cache.size, capacity, "a hit adds nothing");
      assert.deepEqual(mappedIndexes(memfds), full, "a hit maps nothing again");
      let expected = full;
      for (let extra = 0; extra < 4; extra++) {
        const newcomer = capacity + extra;
        memfds[newcomer].touch(cache);
        assert.equal(cache.size, capacity, `after memfd ${newcomer}`);
        expected = [...expected.filter((i) => i !== extra + 1), newcomer];
        assert.deepEqual(
          mappedIndexes(memfds),
          expected,
          `memfd ${newcomer} must evict and unmap memfd ${extra + 1} (the least recently used) ` +
            `and nothing else`,
        );
      }
      // Every survivor is still a hit: using them maps nothing.
      for (const i of expected) memfds[i].touch(cache);
      assert.deepEqual(mappedIndexes(memfds), expected);
      cache.close();
      assert.deepEqual(mappedIndexes(memfds), [], "close() unmaps every cached mapping");
    } finally {
      cache.close();
      closeAll(...memfds.map((m) => m.fd));
    }
  },
});

Deno.test({
  name:
    "mapping cache: a mapping evicted while a frame uses it stays mapped for that frame and is unmapped when the frame closes",
  ignore: !linux,
  fn() {
    const memfds = Array.from({ length: 3 }, () => new TestMemfd());
    const cache = new MappingCache(2, LIMITS);
    let held: ReceivedSurface | undefined;
    try {
      held = memfds[0].importInto(cache);
      new Uint8Array(held.memory())[0] = 42;
      memfds[1].touch(cache);
      memfds[2].touch(cache); // evicts memfd 0, the least recently used, still held
      assert.deepEqual(mappedIndexes(memfds), [0, 1, 2]);
      assert.equal(new Uint8Array(held.memory())[0], 42, "the held frame's mapping is intact");
      held.release();
      assert.deepEqual(mappedIndexes(memfds), [1, 2], "unmapped when its last frame closed");
    } finally {
      held?.release();
      cache.close();
      closeAll(...memfds.map((m) => m.fd));
    }
  },
});

Deno.test({
  name:
    `mapping cache: an eviction from a full cache of 1024 allocates < ${LIMIT_PER_EVICTION} B ` +
    `beyond an import that evicts nothing, before V8 optimizes it`,
  ignore: !linux,
  async fn() {
    const output = await runRepoScript(
      [...PEER_FLAGS, "--allow-sys", "--v8-flags=--max-opt=1"],
      "tests/peers/mapping_cache_eviction.ts",
      ["1024", "200", "1000"],
    );
    assert.equal(output.code, 0, output.stderr);
    const measured = JSON.parse(output.stdout.trim().split("\n").at(-1)!);
    assert.equal(measured.size, 1024);
    assert.equal(measured.mappedAfter, measured.mappedBefore, "one mapping unmapped per one made");
    const bytes = measured.evicting - measured.floor;
    console.log(
      `  ${measured.evicting.toFixed(0)} B per import that evicts, ` +
        `${measured.floor.toFixed(0)} B per import that does not`,
    );
    assert.ok(
      bytes < LIMIT_PER_EVICTION,
      `an eviction allocated ${bytes.toFixed(0)} B (limit ${LIMIT_PER_EVICTION}); ` +
        `what the evicting imports allocated (B per import, sampled):\n${measured.profile}`,
    );
  },
});
