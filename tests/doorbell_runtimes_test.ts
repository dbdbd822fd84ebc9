/**
 * The doorbell on Node and Bun: a receiver in each runtime, rung by a Deno
 * producer, parks on its doorbell (its own reactor: `node:net` on both)
 * rather than on the shared poll, and gets every frame, every byte checked;
 * and publish/subscribe: a subscriber in Deno, Node or Bun parks on its
 * doorbell, and so does the Deno publisher's wait for credits and hang-ups.
 */

import assert from "node:assert/strict";
import { connect, publish, Surface } from "../mod.ts";
import { doorbellEnabled, doorbellStats, setDoorbellEnabled } from "../src/linux/doorbell.ts";
import { fillPattern } from "../examples/pattern.ts";
import { Child, sleep, uniqueName } from "./helpers.ts";
import { missing, repositoryRoot, runtimes } from "./runtimes.ts";

const FRAMES = 8;

for (const name of ["node", "bun"] as const) {
  const reason = missing(name);
  Deno.test({
    name: `doorbell: a ${name} receiver is rung by a Deno producer and parks on its doorbell${
      reason ? ` (ignored: ${reason})` : ""
    }`,
    ignore: Deno.build.os !== "linux" || reason !== undefined,
    async fn() {
      const channelName = uniqueName(`bell-${name}`);
      const [command, args] = runtimes[name]!.command(
        `${repositoryRoot}tests/peers/runtime_peer.ts`,
        ["listen-parks", channelName, String(FRAMES)],
      );
      await using receiver = new Child(command, args, { SURFACEPORT_DOORBELL: "1" });
      await receiver.line("ready");
      const wasEnabled = doorbellEnabled();
      setDoorbellEnabled(true); // this side offers rings to a peer that has a doorbell
      try {
        using channel = await connect(channelName, { timeout: 10000 });
        for (let seed = 0; seed < FRAMES; seed++) {
          await sleep(30); // the receiver has parked by then
          using surface = Surface.create({ width: 320, height: 240 });
          fillPattern(surface, seed);
          await channel.send(surface, { seed }, { timeout: 10000 });
          assert.equal(await receiver.line(/^(ok|bad)/), `ok ${seed} 320x240 BGRA ${name}`);
        }
        const parks = JSON.parse((await receiver.line(/^parks /)).slice(6));
        // The first receive may park before the DOORBELL is bound; every later one is rung.
        assert.ok(parks.bell >= FRAMES - 1, `parked on the doorbell: ${JSON.stringify(parks)}`);
        assert.ok(parks.poll <= 1, `parked on the shared poll: ${JSON.stringify(parks)}`);
        await receiver.line("done");
      } finally {
        setDoorbellEnabled(wasEnabled);
      }
      assert.equal((await receiver.exit()).code, 0, receiver.stderr);
    },
  });
}

for (const name of ["deno", "node", "bun"] as const) {
  const reason = name === "deno" ? undefined : missing(name);
  Deno.test({
    name:
      `doorbell: a ${name} subscriber parks on its doorbell, and the Deno publisher's waits for credits and hang-ups on its own${
        reason ? ` (ignored: ${reason})` : ""
      }`,
    ignore: Deno.build.os !== "linux" || reason !== undefined,
    async fn() {
      const topic = uniqueName(`bell-sub-${name}`);
      const wasEnabled = doorbellEnabled();
      setDoorbellEnabled(true); // this side offers rings, and its tower binds the subscriber's
      try {
        using publisher = publish(topic);
        const [command, args] = runtimes[name]!.command(
          `${repositoryRoot}tests/peers/runtime_peer.ts`,
          ["subscribe-parks", topic, String(FRAMES)],
        );
        await using subscriber = new Child(command, args, { SURFACEPORT_DOORBELL: "1" });
        await subscriber.line("ready");
        const joined = performance.now() + 10_000;
        while (publisher.subscribers.length === 0) {
          assert.ok(performance.now() < joined, "the subscriber joined within 10 s");
          await sleep(5);
        }
        await sleep(50); // both DOORBELLs have been sent and bound by now
        const start = { ...doorbellStats };
        for (let seed = 0; seed < FRAMES; seed++) {
          using surface = Surface.create({ width: 320, height: 240 });
          fillPattern(surface, seed);
          await publisher.send(surface, { seed });
          assert.equal(await subscriber.line(/^(ok|bad)/), `ok ${seed} 320x240 BGRA ${name}`);
          // The subscriber parks for the next frame. Once, the publisher goes idle (100 ms without
          // a send): it then parks for every subscriber's control messages (credits, hang-ups).
          await sleep(seed === FRAMES - 2 ? 250 : 30);
        }
        // Counted over the subscriber's life: its subscription's first waits may park before
        // the DOORBELL binds; every later receive is rung.
        const parks = JSON.parse((await subscriber.line(/^parks /)).slice(6));
        assert.ok(
          parks.bell >= FRAMES - 2,
          `subscriber parked on its doorbell: ${JSON.stringify(parks)}`,
        );
        assert.ok(
          parks.poll <= 2,
          `subscriber parked on the shared poll: ${JSON.stringify(parks)}`,
        );
        await subscriber.line("done");
        assert.equal((await subscriber.exit()).code, 0, subscriber.stderr);
        const bell = doorbellStats.bellWaits - start.bellWaits;
        const poll = doorbellStats.pollWaits - start.pollWaits;
        assert.ok(bell >= 1, `the publisher parked on its doorbell: bell ${bell}, poll ${poll}`);
        assert.equal(
          poll,
          0,
          `the publisher parked on the shared poll: bell ${bell}, poll ${poll}`,
        );
      } finally {
        setDoorbellEnabled(wasEnabled);
      }
    },
  });
}
