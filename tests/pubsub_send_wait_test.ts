/**
 * A `Publisher.send()` waiting for a "queue" subscriber (`src/pubsub/send_batch.ts`):
 * its `timeout` and `signal` withdraw the frame from the subscriber that has
 * not got it and reject, whatever the other waiting sends' deadlines; and
 * its record, reused by a later send once it settled, is never acted on by
 * what belonged to the settled one — its deadline on the publisher's timer,
 * its abort signal, or its frame reporting back from a send still under way;
 * and it resolves only once every "queue" subscriber has the frame, even
 * when one took it while `send()` was still going through the others.
 *
 * Against a bare subscriber (the Linux backend's own connection, driven by
 * hand as a C peer would be), so that each credit comes exactly when the
 * test says.
 *
 * @module
 */

import assert from "node:assert/strict";
import { publish, type Publisher, Surface, TimeoutError } from "../mod.ts";
import type { BackendConnection, ConnectionLimits } from "../src/contract/backend.ts";
import { encodeCredit, encodeSubscribe } from "../src/wire/pubsub_wire.ts";
import { sleep, uniqueName, waitUntil } from "./helpers.ts";

const ignore = Deno.build.os !== "linux";

const limits: ConnectionLimits = {
  maxSurfaceBytes: 1 << 30,
  maxMetaBytes: 65536,
  mappingCacheSize: 8,
  spinMicros: 0,
};

/** How a promise ended so far. */
interface Outcome {
  state: "pending" | "resolved" | "rejected";
  reason?: unknown;
}

function track(promise: Promise<void>): Outcome {
  const outcome: Outcome = { state: "pending" };
  promise.then(
    () => outcome.state = "resolved",
    (reason) => Object.assign(outcome, { state: "rejected", reason }),
  );
  return outcome;
}

/**
 * A publisher (`maxDepth` 64, no kept last frame) and one bare "queue"
 * subscriber asking for `depth`, subscribed.
 */
async function queueSubscriber(
  prefix: string,
  depth: number,
): Promise<{ publisher: Publisher; bare: BackendConnection }> {
  const { linuxBackend } = await import("../src/linux/backend.ts");
  const name = uniqueName(prefix);
  const publisher = publish(name, { keepLast: false, maxDepth: 64 });
  let bare: BackendConnection | undefined;
  try {
    bare = await linuxBackend.connect(name, () => true, limits, Infinity);
    assert(bare.trySendControl!(encodeSubscribe("queue", depth)));
    await waitUntil(
      () => publisher.subscribers.some((s) => s.state === "subscribed"),
      10000,
      "the bare subscriber",
    );
    return { publisher, bare };
  } catch (error) {
    bare?.close();
    publisher.close();
    throw error;
  }
}

/** The next frame's sequence number, waiting up to 10 s; the frame is released. */
async function nextSequence(bare: BackendConnection): Promise<number> {
  const message = await bare.receive(performance.now() + 10_000);
  message.surface.release();
  return message.sequence;
}

const credit = encodeCredit(1);

function returnCredit(bare: BackendConnection): void {
  assert(bare.trySendControl!(credit), "no room for a credit");
}

Deno.test({
  name: "pubsub send: a waiting send's timeout or abort withdraws its frame and rejects it; " +
    "a shorter timeout after a longer one still ends on time",
  ignore,
  async fn() {
    using surface = Surface.create({ width: 64, height: 16 });
    const { publisher, bare } = await queueSubscriber("pswait", 1);
    try {
      await publisher.send(surface); // sequence 0, handed at once: the credit is owed now
      assert.equal(await nextSequence(bare), 0);

      // Sequence 1 waits for the credit; its timeout withdraws it.
      await assert.rejects(publisher.send(surface, undefined, { timeout: 100 }), TimeoutError);
      assert.equal(publisher.subscribers[0].waiting, 0, "withdrawn after the timeout");
      assert.equal(publisher.subscribers[0].dropped, 1);

      // Sequence 2: its signal's abort withdraws it and rejects with the signal's reason.
      const controller = new AbortController();
      const aborted = publisher.send(surface, undefined, { signal: controller.signal });
      assert.equal(publisher.subscribers[0].waiting, 1);
      const reason = new Error("the camera was unplugged");
      controller.abort(reason);
      await assert.rejects(aborted, (error) => error === reason);
      assert.equal(publisher.subscribers[0].waiting, 0, "withdrawn after the abort");
      assert.equal(publisher.subscribers[0].dropped, 2);

      // Sequence 3 with a long timeout, then sequence 4 with a short one: the publisher's one
      // timer, set for the first deadline, must be brought forward for the second.
      const long = track(publisher.send(surface, undefined, { timeout: 30_000 }));
      const started = performance.now();
      await assert.rejects(publisher.send(surface, undefined, { timeout: 100 }), TimeoutError);
      const took = performance.now() - started;
      assert.ok(took < 10_000, `the 100 ms timeout ended the send after ${took.toFixed(0)} ms`);
      assert.equal(long.state, "pending");
      assert.equal(publisher.subscribers[0].waiting, 1, "only the timed-out frame withdrawn");

      // The credit comes: sequence 3 goes out, and the long send resolves.
      returnCredit(bare);
      assert.equal(await nextSequence(bare), 3, "the withdrawn frames never went out");
      await waitUntil(() => long.state !== "pending", 10_000, "the long send");
      assert.equal(long.state, "resolved", String(long.reason));
    } finally {
      bare.close();
      publisher.close();
    }
  },
});

Deno.test({
  name: "pubsub send: a send that reuses a settled send's record is not failed by that " +
    "send's deadline or abort signal",
  ignore,
  async fn() {
    using surface = Surface.create({ width: 64, height: 16 });
    const { publisher, bare } = await queueSubscriber("psreuse", 1);
    try {
      await publisher.send(surface); // sequence 0
      assert.equal(await nextSequence(bare), 0);

      // Sequence 1 waits, with a short timeout and a signal, and is served in time.
      const controller = new AbortController();
      const first = publisher.send(surface, undefined, { timeout: 150, signal: controller.signal });
      returnCredit(bare);
      assert.equal(await nextSequence(bare), 1);
      await first;

      // Sequence 2 waits on the same record (the only one settled), with a long timeout; the
      // first send's signal aborts and its deadline passes (the publisher's timer fires for it)
      // while it waits.
      const second = track(publisher.send(surface, undefined, { timeout: 30_000 }));
      controller.abort(new Error("the first send's signal"));
      await sleep(400);
      assert.equal(second.state, "pending", `the second send ended: ${String(second.reason)}`);
      assert.equal(publisher.subscribers[0].waiting, 1);
      assert.equal(publisher.subscribers[0].dropped, 0);

      returnCredit(bare);
      assert.equal(await nextSequence(bare), 2);
      await waitUntil(() => second.state !== "pending", 10_000, "the second send");
      assert.equal(second.state, "resolved", String(second.reason));
    } finally {
      bare.close();
      publisher.close();
    }
  },
});

Deno.test({
  name: "pubsub send: a frame still being sent when its send() was aborted reports back late " +
    "without failing the next send() that reuses the record",
  ignore,
  async fn() {
    using surface = Surface.create({ width: 64, height: 16 });
    // Depth 64 and frames with 60 KB of metadata: the subscriber's socket fills in a few frames
    // while it has credit, and the frame that finds it full is sent by a wait for room.
    const { publisher, bare } = await queueSubscriber("pslate", 64);
    const big = new Uint8Array(60_000);
    try {
      const controller = new AbortController();
      let waiting: Promise<void> | undefined;
      let sent = 0;
      for (; sent < 64 && !waiting; sent++) {
        const sending = publisher.send(surface, big, { signal: controller.signal });
        // A send that had to wait has a promise of its own, still pending.
        const outcome = track(sending);
        await Promise.resolve();
        await Promise.resolve();
        if (outcome.state === "pending") waiting = sending;
      }
      assert.ok(waiting, "the subscriber's socket never filled");
      const first = track(waiting);
      const lastSequence = sent - 1;

      // The abort rejects the waiting send at once (its record is free again), while its frame's
      // wait for room ends a little later and reports back. The next send reuses the record.
      const reason = new Error("aborted while the frame was being sent");
      controller.abort(reason);
      const next = track(publisher.send(surface, undefined, { timeout: 30_000 }));
      await waitUntil(() => first.state !== "pending", 10_000, "the aborted send");
      assert.equal(first.reason, reason);
      await sleep(200); // (the aborted frame's wait for room has ended by now)
      assert.equal(next.state, "pending", `the next send ended: ${String(next.reason)}`);

      // The subscriber reads everything and returns its credits: the next frame arrives.
      const sequences: number[] = [];
      while (sequences.at(-1) !== lastSequence + 1) {
        sequences.push(await nextSequence(bare));
        returnCredit(bare);
      }
      assert.ok(!sequences.includes(lastSequence), "the aborted frame was sent after all");
      await waitUntil(() => next.state !== "pending", 10_000, "the next send");
      assert.equal(next.state, "resolved", String(next.reason));
    } finally {
      bare.close();
      publisher.close();
    }
  },
});

Deno.test({
  name: "pubsub send: a send() resolves only once every 'queue' subscriber has its frame, " +
    "even when an earlier one took it while send() was still going through the others",
  ignore,
  async fn() {
    using surface = Surface.create({ width: 64, height: 16 });
    const { linuxBackend } = await import("../src/linux/backend.ts");
    // A (depth 2) is admitted first, so every send() goes to it before B (depth 1).
    const { publisher, bare: a } = await queueSubscriber("psorder", 2);
    let b: BackendConnection | undefined;
    try {
      b = await linuxBackend.connect(publisher.name, () => true, limits, Infinity);
      assert(b.trySendControl!(encodeSubscribe("queue", 1)));
      await waitUntil(
        () =>
          publisher.subscribers.length === 2 &&
          publisher.subscribers.every((s) => s.state === "subscribed"),
        10000,
        "the second bare subscriber",
      );
      await publisher.send(surface); // sequence 0: both have it, A one credit left, B none
      const first = track(publisher.send(surface)); // 1: A has it, queued for B
      const second = track(publisher.send(surface)); // 2: queued for both
      // A returns both credits, and before the publisher's wait sees them, send() does: it reads
      // them, queues sequence 3 behind 2 for A, sends A both, and only then comes to B.
      assert(a.trySendControl!(encodeCredit(2)));
      const third = track(publisher.send(surface));
      await sleep(200);
      assert.equal(third.state, "pending", "sequence 3 resolved before B got it");
      assert.equal(first.state, "pending");
      assert.equal(second.state, "pending");
      assert.equal(publisher.subscribers[1].waiting, 3, "B has 1, 2 and 3 waiting");
      // B reads each and returns its credit: the sends resolve in order, the last with 3.
      for (
        const [sequence, sent] of [[0, undefined], [1, first], [2, second], [3, third]] as const
      ) {
        assert.equal(await nextSequence(b), sequence);
        if (sent) await waitUntil(() => sent.state !== "pending", 10_000, `send ${sequence}`);
        assert.equal(sent?.state ?? "resolved", "resolved");
        if (sequence < 3) returnCredit(b);
      }
      for (const sequence of [0, 1, 2, 3]) assert.equal(await nextSequence(a), sequence);
    } finally {
      b?.close();
      a.close();
      publisher.close();
    }
  },
});
