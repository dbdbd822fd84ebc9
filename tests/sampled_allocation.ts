/**
 * Allocation per operation for the allocation tests, with V8's sampling heap
 * profiler (`SampledAllocation` in `bench/common.ts`): it counts what the
 * code allocates and nothing else, where V8's cumulative
 * `total_allocated_bytes` also counts what idle-time collections move. A
 * bound that fails names the functions that allocated the bytes.
 *
 * @module
 */

import { type AllocationProfile, SampledAllocation } from "../bench/common.ts";
import { libc } from "../ffi/linux.ts";
import { runtime } from "../ffi/runtime.ts";

/** What `run(count)` allocated per operation, and the profile it came from. */
export interface PerOperation {
  /** Estimated bytes per operation. */
  bytes: number;
  profile: AllocationProfile;
  count: number;
}

/**
 * Runs `run(warmup)` unmeasured (V8's tiering, caches and pools settle),
 * then samples `run(count)`. A profiler session per measurement: nothing of
 * it is allocated while sampling but its own start and stop (a few hundred
 * bytes for the whole batch).
 */
export async function perOperation(
  run: (count: number) => void | Promise<void>,
  warmup: number,
  count: number,
): Promise<PerOperation> {
  await run(warmup);
  using sampler = new SampledAllocation();
  await sampler.start();
  await run(count);
  const profile = await sampler.stopProfile();
  return { bytes: profile.total / count, profile, count };
}

/**
 * Throws unless `measured` (less `subtract` bytes per operation) stays
 * below `limit`; the error lists the functions that allocated most.
 */
export function assertBelow(
  what: string,
  measured: PerOperation,
  limit: number,
  subtract = 0,
): void {
  const bytes = measured.bytes - subtract;
  if (bytes < limit) return;
  throw new Error(
    `${what}: ${bytes.toFixed(0)} B allocated per operation, limit ${limit}` +
      (subtract ? ` (${subtract.toFixed(0)} B subtracted)` : "") +
      `; the functions that allocated most (B per operation, sampled):\n` +
      measured.profile.describe(measured.count),
  );
}

/**
 * What the runtime itself allocates per nonblocking FFI call awaited (a
 * `poll` of no descriptor: it returns at once on a worker thread), measured
 * now, in this process: what the shared poll paid per round before it ran
 * on its own thread, and what it still pays on Node, Bun and with
 * `SURFACEPORT_POLL_THREAD=0`. How much it is depends on the process's
 * state (Deno keeps its pending calls' promises in a ring, and in a map
 * when the ring is busy: 0.25-0.57 KB alone, ~0.6 KB in the full suite's
 * process). Linux.
 */
export function nonblockingCallFloor(warmup: number, count: number): Promise<PerOperation> {
  const pollfds = runtime.sharedBytes(8);
  return perOperation(
    async (calls) => {
      for (let i = 0; i < calls; i++) await libc().poll_wait(pollfds, 0n, 0);
    },
    warmup,
    count,
  );
}
