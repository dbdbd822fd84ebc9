/**
 * A SUBSCRIBE that the publisher reads inside `send()` (it drains every
 * subscriber's control messages first) must not get the frame being sent
 * twice: once offered as "the last frame" to the new subscriber, once
 * queued as the frame itself. Found by the cross-runtime tests (a Node or
 * Bun subscriber's SUBSCRIBE arrived just then).
 */

import assert from "node:assert/strict";
import { publish, Surface } from "../mod.ts";
import { connectBackend, resolveConnectOptions } from "../src/channel/options.ts";
import { backend } from "../src/platform.ts";
import { encodeSubscribe } from "../src/wire/pubsub_wire.ts";
import { sleep, uniqueName, waitUntil } from "./helpers.ts";

Deno.test("publish: a SUBSCRIBE read by send() itself gets the frame once, not twice", async () => {
  const name = uniqueName("subrace");
  using publisher = publish(name);
  const connection = await connectBackend(
    backend(),
    name,
    resolveConnectOptions("connect", { timeout: 2000 }),
    2000,
    undefined,
  );
  using surface = Surface.create({ width: 16, height: 16 });
  try {
    await waitUntil(() => publisher.subscribers.length === 1, 2000, "the publisher to admit it");
    // Queued in the socket; the publisher's own wait has not seen it yet: send() drains it.
    await connection.sendControl(encodeSubscribe("queue", 4), Infinity);
    const sent = publisher.send(surface, { n: 0 });
    const sequences: number[] = [];
    const end = performance.now() + 300;
    while (performance.now() < end) {
      const message = connection.tryReceive!();
      if (message) {
        sequences.push(message.sequence);
        message.surface.release();
      } else await sleep(5);
    }
    assert.deepEqual(sequences, [0], "frame 0, once");
    await sent.catch(() => {});
  } finally {
    connection.close();
  }
});
