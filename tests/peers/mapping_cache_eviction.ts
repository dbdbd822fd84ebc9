/**
 * For `tests/mapping_cache_test.ts`: what an import of a new memfd into the
 * receiver's mapping cache allocates when it evicts one from a full cache of
 * CAPACITY, and when it evicts nothing (a cache with room for all), sampled
 * (tests/sampled_allocation.ts). Prints one JSON line:
 * `{"evicting": B, "floor": B, "mappedBefore": N, "mappedAfter": N, "size": N, "profile": TEXT}`.
 *
 * The test runs it with `--v8-flags=--max-opt=1` (no optimizing compiler):
 * an eviction must allocate nothing per cached entry even before V8
 * optimizes it, which is how GStreamer's pools met it (a map iterator's
 * result object per entry, unless escape analysis removed it: ~8 KB per
 * eviction from a full cache of 1024, 1be6902).
 *
 * `mapping_cache_eviction.ts CAPACITY WARMUP COUNT`
 *
 * @module
 */
import { MappingCache } from "../../src/linux/received.ts";
import { memfdMappings } from "../helpers.ts";
import { closeAll, makeMemfd, smallGeometry } from "../hostile/raw.ts";
import { perOperation } from "../sampled_allocation.ts";

const [capacity, warmup, count] = Deno.args.map(Number);
const geometry = smallGeometry();
const limits = { maxSurfaceBytes: 1 << 30 };
// Made beforehand, so that the measured loops only import: the cache's frame owns each descriptor
// and closes it; a cached mapping keeps its memfd alive until evicted. Each loop gets descriptors
// never imported before (a new inode's checks cache a path per descriptor number), so the two
// differ only in the eviction.
const fds = Array.from(
  { length: capacity + 2 * (warmup + count) },
  () => makeMemfd(geometry.allocSize),
);
let next = 0;
const importNew = (cache: MappingCache) => (imports: number) => {
  for (let i = 0; i < imports; i++) cache.import(fds[next++], geometry).release();
};
const roomy = new MappingCache(fds.length, limits);
const full = new MappingCache(capacity, limits);
try {
  const floor = await perOperation(importNew(roomy), warmup, count);
  roomy.close();
  for (let i = 0; i < capacity; i++) full.import(fds[next++], geometry).release();
  const mappedBefore = memfdMappings("hostile").length;
  const evicting = await perOperation(importNew(full), warmup, count);
  console.log(JSON.stringify({
    evicting: evicting.bytes,
    floor: floor.bytes,
    mappedBefore,
    mappedAfter: memfdMappings("hostile").length,
    size: full.size,
    profile: evicting.profile.describe(count),
  }));
} finally {
  roomy.close();
  full.close();
  closeAll(...fds.slice(next));
}
