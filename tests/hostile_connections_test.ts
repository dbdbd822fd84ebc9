/**
 * Hostile peers over real sockets: connections that misbehave. Peers that
 * hang up at once, a producer SIGKILLed mid-stream, a burst of 1,000
 * connections, and a listener out of descriptors. After each, the
 * listener's descriptor count is back to its baseline and a well-behaved
 * client is still served (tests/hostile/checks.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, PeerClosedError, Surface } from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { openFds, settleRuntimeFds, spawnPeer, uniqueName, waitUntil } from "./helpers.ts";
import { assertFdBaseline, assertServesGoodClient, GOOD_PATTERN_FRAME } from "./hostile/checks.ts";
import { RawPeer } from "./hostile/raw.ts";
import { RecordingServer } from "./hostile/server.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "hostile: peers that connect and close at once, 50 of them, end their channels cleanly",
  ignore: !linux,
  async fn() {
    await settleRuntimeFds();
    await using server = new RecordingServer(uniqueName("hangup"));
    await assertServesGoodClient(server);
    const baseline = openFds();
    const before = server.connections.length;
    for (let i = 0; i < 50; i++) RawPeer.connect(server.name).close();
    const logs = (await server.waitForConnections(before + 50)).slice(before);
    await server.settle();
    for (const log of logs) assert.deepEqual(log.events, ["end:peer-closed"]);
    assertFdBaseline(baseline, "after 50 hang-ups");
    await assertServesGoodClient(server);
    assertFdBaseline(baseline, "after the good client");
  },
});

Deno.test({
  name:
    "hostile: a producer killed with SIGKILL mid-stream: queued frames arrive, held frames stay valid, then the end",
  ignore: !linux,
  async fn() {
    await settleRuntimeFds();
    await using server = new RecordingServer(uniqueName("sigkill"));
    await assertServesGoodClient(server);
    const baseline = openFds();
    server.holdFrames = true; // keep the dead producer's frames open
    const before = server.connections.length;
    {
      await using flood = spawnPeer("../hostile/peer.ts", ["flood", server.name]);
      await flood.line("connected");
      const [log] = (await server.waitForConnections(before + 1)).slice(before);
      await waitUntil(() => log.events.length >= 20, 10000, "20 frames");
      await flood.line(/^sent /); // still streaming when it dies
      flood.process.kill("SIGKILL");
      await flood.process.status;
      await server.settle();
      const frames = log.events.slice(0, -1);
      assert.ok(frames.length >= 20, `${frames.length} frames`);
      assert.ok(frames.every((e) => e === GOOD_PATTERN_FRAME), frames.join("\n"));
      assert.equal(log.events.at(-1), "end:peer-closed");
      // The producer is gone; the memory it sent is still ours to read.
      assert.equal(log.held.length, frames.length);
      for (const frame of log.held) assert.equal(verifyPattern(frame.surface, 1), undefined);
      log.closeHeld();
    }
    server.holdFrames = false;
    assertFdBaseline(baseline, "after the killed producer");
    await assertServesGoodClient(server);
    assertFdBaseline(baseline, "after the good client");
  },
});

Deno.test({
  name:
    "hostile: 1,000 connections in a burst do not stop the listener serving others, and leave nothing behind",
  ignore: !linux,
  async fn() {
    await settleRuntimeFds();
    await using server = new RecordingServer(uniqueName("burst"));
    await assertServesGoodClient(server);
    const baseline = openFds();
    const before = server.connections.length;
    const count = 1000;
    {
      await using burst = spawnPeer("../hostile/peer.ts", ["burst", server.name, String(count)]);
      assert.equal(await burst.line(/^opened /, 30000), `opened ${count}`, burst.stderr);
      const logs = (await server.waitForConnections(before + count, 30000)).slice(before);
      // 1,000 idle admitted connections, each with a receive parked: a good client is still served.
      await assertServesGoodClientWhileBusy(server);
      await burst.send("close");
      await burst.line("closed", 30000);
      await server.settle(30000);
      for (const log of logs) assert.deepEqual(log.events, ["end:peer-closed"]);
    }
    assertFdBaseline(baseline, "after the burst");
    await assertServesGoodClient(server);
    assertFdBaseline(baseline, "after the good client");
    assert.equal(server.acceptError, undefined);
  },
});

/** Like {@link assertServesGoodClient}, while other connections are still open. */
async function assertServesGoodClientWhileBusy(server: RecordingServer): Promise<void> {
  const before = server.connections.length;
  using client = await connect(server.name, { timeout: 5000 });
  using surface = Surface.create({ width: 64, height: 32 });
  fillPattern(surface, 3);
  await client.send(surface, { seed: 3 }, { timeout: 5000 });
  const [log] = (await server.waitForConnections(before + 1, 5000)).slice(before);
  await waitUntil(() => log.events.length > 0, 5000, "the good client's frame");
  assert.deepEqual(log.events, [GOOD_PATTERN_FRAME]);
}

Deno.test({
  name:
    "hostile: a listener out of descriptors refuses the waiting client (PeerClosedError), says EMFILE, and serves once descriptors are free",
  ignore: !linux,
  async fn() {
    const name = uniqueName("emfile");
    await using listener = spawnPeer("../hostile/peer.ts", ["fd-starved", name]);
    await listener.line(/^full \d+$/, 30000);
    {
      // The connect completes in the kernel's backlog; the listener then hangs up on it.
      using refused = await connect(name, { timeout: 5000 });
      await assert.rejects(refused.receive({ timeout: 10000 }), PeerClosedError);
    }
    // (`refused eventfd EMFILE` lines may come first: with no free descriptor it cannot even wait.)
    assert.equal(
      await listener.line(/^refused accept4/),
      "refused accept4 EMFILE",
      listener.stderr,
    );
    await listener.send("free");
    await listener.line("freed");
    {
      using client = await connect(name, { timeout: 5000 });
      using surface = Surface.create({ width: 64, height: 32 });
      await client.send(surface, undefined, { timeout: 5000 });
      assert.equal(await listener.line(/^frame /), "frame ok", listener.stderr);
    }
    assert.equal((await listener.exit()).code, 0, listener.stderr);
  },
});
