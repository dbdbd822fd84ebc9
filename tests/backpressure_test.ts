/**
 * Back-pressure: a consumer that stops reading fills the socket queue; the
 * producer's send then waits — off the event loop, bounded by its timeout
 * or signal — and fails with a typed error, closing the handle it had
 * taken, while the surface stays open and sendable.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Channel,
  ClosedError,
  PeerClosedError,
  Surface,
  SurfacePool,
  TimeoutError,
} from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { assertNoFdLeak, openFds, pair } from "./helpers.ts";

const linux = Deno.build.os === "linux";

/** Sends until a send with a short timeout fails; returns how many were queued. */
async function fillQueue(producer: Channel, surface: Surface) {
  for (let queued = 0; queued < 100_000; queued++) {
    try {
      await producer.send(surface, { seed: 1, queued }, { timeout: 50 });
    } catch (error) {
      assert.ok(error instanceof TimeoutError, String(error));
      return queued;
    }
  }
  throw new Error("the queue never filled");
}

/** Counts event-loop ticks (a 5 ms interval) while `work` runs; `onTick` sees each count. */
async function ticksDuring<T>(
  work: Promise<T>,
  onTick?: (tick: number) => void,
): Promise<{ ticks: number; result: PromiseSettledResult<T> }> {
  let ticks = 0;
  const timer = setInterval(() => {
    ticks++;
    onTick?.(ticks);
  }, 5);
  try {
    const [result] = await Promise.allSettled([work]);
    return { ticks, result };
  } finally {
    clearInterval(timer);
  }
}

Deno.test({
  name:
    "back-pressure: a full queue makes send wait off the event loop, then fail with TimeoutError; nothing is lost",
  ignore: !linux,
  async fn() {
    await assertNoFdLeak(async () => {
      using p = await pair();
      const { client: producer, server: consumer } = p;
      using surface = Surface.create({ width: 64, height: 32 });
      fillPattern(surface, 1);
      const queued = await fillQueue(producer, surface);
      assert.ok(queued >= 1, `queued ${queued} before the queue filled`);

      // A bounded wait: it takes its time, the event loop runs meanwhile, and it fails typed.
      const fdsBefore = openFds();
      const started = performance.now();
      const { ticks, result } = await ticksDuring(
        producer.send(surface, { seed: 1 }, { timeout: 300 }),
      );
      const waited = performance.now() - started;
      assert.equal(result.status, "rejected");
      assert.ok((result as PromiseRejectedResult).reason instanceof TimeoutError);
      assert.match(
        String((result as PromiseRejectedResult).reason),
        /send timed out after (29\d|300) ms/,
      );
      assert.ok(waited >= 290 && waited < 2000, `waited ${waited.toFixed(0)} ms`);
      assert.ok(
        ticks >= 20,
        `the event loop ticked only ${ticks} times in ${waited.toFixed(0)} ms`,
      );
      assert.deepEqual(openFds(), fdsBefore, "the failed send closed the handle it had taken");

      // The surface is not lost: still open, writable, and held only by the queued messages.
      assert.equal(surface.closed, false);
      surface.bytes()[0] = surface.bytes()[0];
      assert.equal(verifyPattern(surface, 1), undefined);

      // The consumer catches up: every queued frame arrives, then the surface can be sent again.
      for (let i = 0; i < queued; i++) {
        using frame = await consumer.receive({ timeout: 1000 });
        assert.deepEqual(frame.meta, { seed: 1, queued: i });
        assert.equal(frame.surface.id, surface.id);
      }
      assert.equal(surface.inUse, false, "the failed send left no hold on the surface");
      await producer.send(surface, { seed: 1, again: true }, { timeout: 1000 });
      using again = await consumer.receive({ timeout: 1000 });
      assert.deepEqual(again.meta, { seed: 1, again: true });
      assert.equal(verifyPattern(again.surface, 1), undefined);
      // The timed-out sends were never delivered: the receiver sees a gap in the sequence numbers.
      assert.ok(again.sequence > queued, `sequence ${again.sequence} after ${queued} delivered`);
    });
  },
});

Deno.test({
  name:
    "back-pressure: an abort signal ends a waiting send with its reason; close() and a vanished peer end it too",
  ignore: !linux,
  async fn() {
    await assertNoFdLeak(async () => {
      {
        using p = await pair();
        const { client: producer, server: consumer } = p;
        using surface = Surface.create({ width: 64, height: 32 });
        await fillQueue(producer, surface);

        // The abort comes from the event loop's fifth tick while the send waits: the send cannot
        // end before it (it has no timeout), and the loop can reach it only if the wait leaves the
        // loop free — counted in ticks, not against the clock, which a loaded machine stretches.
        const controller = new AbortController();
        const reason = new Error("the camera was unplugged");
        let settledBeforeAbort = false;
        const sending = producer.send(surface, undefined, { signal: controller.signal });
        sending.then(
          () => settledBeforeAbort ||= !controller.signal.aborted,
          () => settledBeforeAbort ||= !controller.signal.aborted,
        );
        let abortedAt = Infinity;
        const { ticks, result } = await ticksDuring(sending, (tick) => {
          if (tick !== 5) return;
          abortedAt = performance.now();
          controller.abort(reason);
        });
        assert.equal(settledBeforeAbort, false, "the send ended before the abort");
        assert.equal(result.status, "rejected");
        assert.equal((result as PromiseRejectedResult).reason, reason);
        assert.ok(performance.now() - abortedAt < 2000, "the abort ended the send promptly");
        assert.ok(ticks >= 5, `ticks ${ticks}`);
        assert.equal(surface.closed, false);

        // A send waiting without any bound is woken by the peer going away.
        const pending = producer.send(surface);
        setTimeout(() => consumer.close(), 50);
        await assert.rejects(pending, PeerClosedError);
      }
      {
        using p = await pair();
        const producer = p.client;
        using surface = Surface.create({ width: 64, height: 32 });
        await fillQueue(producer, surface);
        // ... and by closing the producer's own channel.
        const pending = producer.send(surface);
        setTimeout(() => producer.close(), 50);
        await assert.rejects(pending, ClosedError);
        assert.equal(surface.closed, false);
      }
    });
  },
});

Deno.test({
  name:
    "back-pressure: a pool surface whose send timed out goes back to the pool once the queue drains",
  ignore: !linux,
  async fn() {
    await assertNoFdLeak(async () => {
      using p = await pair();
      const { client: producer, server: consumer } = p;
      using pool = new SurfacePool({ width: 64, height: 32, maxSurfaces: 2 });
      const filler = await pool.acquire();
      const queued = await fillQueue(producer, filler);
      filler.close(); // back to the pool, still held by the queued messages
      const surface = await pool.acquire({ timeout: 1000 });
      await assert.rejects(producer.send(surface, undefined, { timeout: 100 }), TimeoutError);
      surface.close();
      assert.equal(pool.stats.inUseElsewhere, 1, "only the queued surface is held elsewhere");
      for (let i = 0; i < queued; i++) (await consumer.receive({ timeout: 1000 })).close();
      assert.equal(pool.stats.inUseElsewhere, 0);
      assert.equal(pool.stats.idle, 2);
    });
  },
});
