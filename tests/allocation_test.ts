/**
 * Steady-state allocation per round trip: the hot paths (send, receive,
 * close, the mapping cache) must not create garbage per frame, because every
 * scavenge lands in some frame's latency (see docs/benchmarks.md).
 *
 * Measured, not timed: V8's sampling heap profiler over thousands of
 * in-process round trips, after a warm-up (`sampled_allocation.ts`: it
 * counts what code allocates, where V8's cumulative `total_allocated_bytes`,
 * used before, also counted what idle-time collections moved). Allocation,
 * unlike time, does not depend on the machine's load: in one process every
 * receive finds its message waiting, so the count is the same from run to
 * run. The warm-up is long (20,000): over a 2,000-frame warm-up the window
 * still held ~600 B per round trip of V8's own tiering, not the library's.
 * A bound that fails lists the functions that allocated most.
 *
 * Measured, sampled (both sides together, test harness and its awaits
 * included): a round trip 1.02-1.03 KB, a pooled handoff 1.15 KB, an empty
 * receive attempt ~0 B; before a Frame was its own Surface and received
 * frames registered without a token: a round trip 1.27 KB, which the bound
 * refuses. With the cumulative counter before: 1.31 KB and
 * 1.18 KB; before the per-message WireHeader, BigInt sequence,
 * ReceivedMessage and the spare fields of the received backing and Surface
 * went: 1.72-1.76 KB and 1.40 KB, which these bounds refuse; before the
 * first allocation cuts (per-frame DataViews, BigInts, string keys, two
 * finalizer registrations, promise layers): 13.0 KB and 7.1 KB.
 *
 * @module
 */

import { Surface, SurfacePool } from "../mod.ts";
import { pair, uniqueName } from "./helpers.ts";
import { assertBelow, perOperation } from "./sampled_allocation.ts";

/** Bytes allocated per round trip, both sides together (one process holds both ends). */
const LIMIT_PER_ROUNDTRIP = 1200;
/** Bytes allocated per pooled handoff (acquire, send, receive, close), both sides together. */
const LIMIT_PER_HANDOFF = 1250;
/**
 * Bytes allocated per channel receive that parks on the shared poll until
 * the frame comes, with the frame's close and the send that wakes it (both
 * sides, one process). The poll runs on its own thread and calls back with
 * no garbage (`ffi/runtime_deno_poll.ts`): measured 0.60-0.65 KB. As
 * nonblocking calls (what it was before), the runtime's call alone added
 * 0.23-0.6 KB and its `then` ~0.1 KB: 1.03-1.43 KB in all; before the
 * connection called the channel back (`receiveThen`), with an async
 * function, its closure and a `then` per parked receive: 1.57-1.74 KB.
 */
const LIMIT_PER_PARKED_RECEIVE = 800;
const WARMUP = 20_000;
const ROUNDTRIPS = 20_000;

for (const spinMicros of [0, 200]) {
  Deno.test(`allocation: a round trip allocates < ${LIMIT_PER_ROUNDTRIP} B (spinMicros ${spinMicros})`, async () => {
    using channels = await pair({ spinMicros });
    using surface = Surface.create({ width: 640, height: 480 });
    const roundtrip = async () => {
      await channels.server.send(surface);
      const frame = await channels.client.receive({ timeout: 5000 });
      frame.surface.bytes()[0]++;
      await channels.client.send(frame.surface);
      frame.close();
      const back = await channels.server.receive({ timeout: 5000 });
      back.close();
    };
    const measured = await perOperation(
      async (count) => {
        for (let i = 0; i < count; i++) await roundtrip();
      },
      WARMUP,
      ROUNDTRIPS,
    );
    console.log(
      `  ${measured.bytes.toFixed(0)} B per round trip (both sides)\n` +
        measured.profile.describe(ROUNDTRIPS),
    );
    assertBelow("a round trip", measured, LIMIT_PER_ROUNDTRIP);
  });
}

Deno.test(`allocation: a pooled handoff allocates < ${LIMIT_PER_HANDOFF} B (acquire, send, receive, close)`, async () => {
  using channels = await pair();
  using pool = new SurfacePool({ width: 640, height: 480, maxSurfaces: 4 });
  const handoff = async () => {
    const surface = await pool.acquire({ timeout: 5000 });
    await channels.server.send(surface);
    surface.close();
    const frame = await channels.client.receive({ timeout: 5000 });
    frame.close();
  };
  const measured = await perOperation(
    async (count) => {
      for (let i = 0; i < count; i++) await handoff();
    },
    WARMUP,
    ROUNDTRIPS,
  );
  console.log(
    `  ${measured.bytes.toFixed(0)} B per pooled handoff (both sides)\n` +
      measured.profile.describe(ROUNDTRIPS),
  );
  assertBelow("a pooled handoff", measured, LIMIT_PER_HANDOFF);
});

Deno.test({
  name: `allocation: a channel receive that parks until its frame comes allocates < ` +
    `${LIMIT_PER_PARKED_RECEIVE} B (+ close, + the send that wakes it)`,
  ignore: Deno.build.os !== "linux",
  async fn() {
    using channels = await pair();
    using surface = Surface.create({ width: 64, height: 64 });
    const measured = await perOperation(
      async (count) => {
        for (let i = 0; i < count; i++) {
          // receive() first: nothing is there, it parks on the shared poll; the send wakes it.
          const received = channels.client.receive();
          await channels.server.send(surface);
          (await received).close();
        }
      },
      WARMUP,
      ROUNDTRIPS,
    );
    console.log(
      `  ${measured.bytes.toFixed(0)} B per parked receive (+ the send, both sides)\n` +
        measured.profile.describe(ROUNDTRIPS),
    );
    assertBelow("a parked channel receive", measured, LIMIT_PER_PARKED_RECEIVE);
  },
});

Deno.test({
  name:
    "allocation: a receive attempt that finds nothing (what spinning repeats) allocates ~nothing",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { linuxBackend } = await import("../src/linux/backend.ts");
    const limits = {
      maxSurfaceBytes: 1 << 30,
      maxMetaBytes: 65536,
      mappingCacheSize: 8,
      spinMicros: 200,
    };
    const name = uniqueName("alloc-spin");
    const listener = linuxBackend.listen(name, () => true, limits);
    const accepted = listener.accept();
    const client = await linuxBackend.connect(name, () => true, limits, performance.now() + 5000);
    const server = await accepted;
    try {
      const attempts = 200_000;
      const measured = await perOperation(
        (count) => {
          for (let i = 0; i < count; i++) {
            if (server.tryReceive!() !== undefined) throw new Error("nothing was sent");
          }
        },
        attempts / 4,
        attempts,
      );
      console.log(
        `  ${measured.bytes.toFixed(1)} B per empty receive attempt\n` +
          measured.profile.describe(attempts),
      );
      // Measured ~0.1 B sampled (37-41 B by the cumulative counter, which counted what
      // collections moved); the original code also made two DataViews and BigInts per attempt
      // (not measured in isolation: ~250 B by their sizes).
      assertBelow("an empty receive attempt", measured, 8);
    } finally {
      client.close();
      server.close();
      listener.close();
    }
  },
});
