/**
 * The publish/subscribe scenario every foreign subscriber (the C and the
 * Python peer, written from docs/protocol.md) must pass: SUBSCRIBE "latest"
 * gets the most recent frame first, then new ones as it returns credits;
 * SUBSCRIBE "queue" gets every frame in order and back-pressures `send`.
 */
import assert from "node:assert/strict";
import { publish, Surface } from "../mod.ts";
import { fillPattern } from "../examples/pattern.ts";
import { type Child, uniqueName, waitUntil } from "./helpers.ts";

function seedMeta(seed: number): Uint8Array {
  return new Uint8Array(new Uint32Array([seed]).buffer);
}

async function publishSeed(
  publisher: ReturnType<typeof publish>,
  seed: number,
  options = {},
): Promise<void> {
  // A surface per frame: the peer verifies it after we moved on.
  using surface = Surface.create({ width: 320, height: 240 });
  fillPattern(surface, seed);
  await publisher.send(surface, seedMeta(seed), options);
}

/** Runs both policies against the peer that `spawn(args)` starts with `subscribe NAME ...args`. */
export async function foreignSubscriberScenario(
  spawn: (name: string, args: string[]) => Child,
): Promise<void> {
  {
    const name = uniqueName("fl");
    using publisher = publish(name);
    for (let seed = 10; seed < 13; seed++) await publishSeed(publisher, seed);
    await using peer = spawn(name, ["latest", "2"]);
    await peer.line("connected");
    // The most recent frame first (sequence 2), then the next one.
    assert.equal(await peer.line(/^(ok|bad)/), "ok 2 320x240 BGRA");
    await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 10000, "SUBSCRIBE");
    const [info] = publisher.subscribers;
    assert.equal(info.policy, "latest");
    assert.equal(info.depth, 1);
    assert.equal(info.pid, peer.process.pid);
    await publishSeed(publisher, 13);
    assert.equal(await peer.line(/^(ok|bad)/), "ok 3 320x240 BGRA");
    await peer.line("done");
    assert.equal((await peer.exit()).code, 0, peer.stderr);
  }
  {
    const name = uniqueName("fq");
    using publisher = publish(name);
    await using peer = spawn(name, ["queue", "4"]);
    await peer.line("connected");
    await waitUntil(() => publisher.subscribers[0]?.state === "subscribed", 10000, "SUBSCRIBE");
    assert.equal(publisher.subscribers[0].policy, "queue");
    // Every frame, in order: each send waits for the peer's CREDIT for the one before.
    for (let seed = 20; seed < 24; seed++) {
      await publishSeed(publisher, seed, { timeout: 10000 });
    }
    for (let i = 0; i < 4; i++) {
      assert.equal(await peer.line(/^(ok|bad)/), `ok ${i} 320x240 BGRA`);
    }
    await peer.line("done");
    assert.equal((await peer.exit()).code, 0, peer.stderr);
  }
}
