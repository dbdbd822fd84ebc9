/**
 * What a misbehaving publisher can do to a subscriber's own bookkeeping
 * (issue 18): one that stops reading CREDITs must never stand between the
 * subscriber and frames it already has (defect 8), and one whose sequence
 * numbers jump back and forth must not push `stats.dropped` past 2^53
 * (defect 9). The "publisher" is a plain channel or a raw backend
 * connection here, which never reads what the subscriber sends.
 */
import assert from "node:assert/strict";
import { subscribe, type Subscription, Surface } from "../mod.ts";
import type { BackendConnection } from "../src/contract/backend.ts";
import { decodeControlMessage } from "../src/wire/pubsub_wire.ts";
import { backend } from "../src/platform.ts";
import { backingOf } from "../src/surface/surface.ts";
import { encodeHeader, HEADER_SIZE } from "../src/wire/wire.ts";
import { uniqueName } from "./helpers.ts";

const ignore = Deno.build.os !== "linux";

const LIMITS = {
  maxSurfaceBytes: 1 << 30,
  maxMetaBytes: 65536,
  mappingCacheSize: 4,
  spinMicros: 0,
};

/**
 * Runs `body` with a subscription and the raw backend connection of its
 * "publisher" (bound here under a fresh name), which reads nothing unless
 * the body does, and a surface whose frames it sends with `send(sequence)`.
 */
async function withRawPublisher(
  body: (
    subscription: Subscription,
    publisher: BackendConnection,
    send: (sequence: bigint) => Promise<void>,
  ) => Promise<void>,
): Promise<void> {
  const over = backend();
  const listener = over.listen(uniqueName("rawpub"), () => true, LIMITS);
  try {
    const name = listener.address.slice("@surfaceport/".length);
    const accepting = listener.accept();
    using subscription = await subscribe(name, { timeout: 5000 });
    const connection = await accepting;
    try {
      using surface = Surface.create({ width: 16, height: 16 });
      const backing = backingOf(surface, "test");
      const message = new Uint8Array(HEADER_SIZE);
      const send = (sequence: bigint) => {
        encodeHeader(new DataView(message.buffer), backing.geometry, 0, 0, sequence, 0);
        return connection.send(message, backing.exportHandle(), performance.now() + 20000);
      };
      await body(subscription, connection, send);
    } finally {
      connection.close();
    }
  } finally {
    listener.close();
  }
}

Deno.test({
  name: "subscribe: a publisher that stops reading CREDITs never makes receive() time out on " +
    "frames already there; every credit goes out, coalesced, once it reads again",
  ignore,
  async fn() {
    await withRawPublisher(async (subscription, publisher, send) => {
      const subscribeMessage = decodeControlMessage(await publisher.receiveControl(Infinity));
      assert.equal(subscribeMessage.type, 2);
      // Far more frames than CREDITs fit in the subscriber's socket (~278 of 768 bytes each).
      const total = 700;
      const sending = (async () => {
        for (let i = 0; i < total; i++) await send(BigInt(i));
      })();
      for (let i = 0; i < total; i++) {
        using frame = await subscription.receive({ timeout: 5000 });
        assert.equal(frame.sequence, i);
      }
      await sending;
      // The credit for the last frame goes with the next receive(): ask for one more frame.
      const next = subscription.receive({ timeout: 10000 });
      // The publisher reads again: every frame is credited, the ones that waited for room
      // coalesced (up to 64 per CREDIT).
      let credited = 0;
      let messages = 0;
      while (credited < total) {
        const control = decodeControlMessage(
          await publisher.receiveControl(performance.now() + 5000),
        );
        assert.equal(control.type, 3);
        if (control.type === 3) credited += control.count;
        messages++;
      }
      assert.equal(credited, total);
      assert.ok(messages < total - 100, `${messages} CREDIT messages for ${total} frames`);
      await send(BigInt(total));
      (await next).close();
    });
  },
});

Deno.test({
  name: "subscribe: sequence numbers that jump back and forth cannot push stats.dropped past 2^53",
  ignore,
  async fn() {
    await withRawPublisher(async (subscription, _publisher, send) => {
      const max = 2n ** 53n - 1n;
      for (const sequence of [0n, max, 0n, max, 5n, max]) {
        await send(sequence);
        (await subscription.receive({ timeout: 5000 })).close();
        assert.ok(
          Number.isSafeInteger(subscription.stats.dropped),
          `${subscription.stats.dropped}`,
        );
      }
      // One gap: from 0 to 2^53-1. Going back counts nothing.
      assert.equal(subscription.stats.dropped, Number(max) - 1);
      assert.equal(subscription.stats.received, 6);
    });
  },
});
