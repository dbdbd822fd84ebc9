/**
 * Channels on Linux: what a frame carries. Pixels byte for byte across
 * processes (1080p BGRA, 4:2:0), metadata as it was sent, both directions
 * over one channel, sending that leaves the surface usable, and the
 * sender's timestamps and numbering.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError, listen, type PixelFormat, Surface } from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { pair, spawnPeer, uniqueName } from "./helpers.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "channel: another process verifies 1080p BGRA and 4:2:0 frames byte for byte",
  ignore: !linux,
  async fn() {
    const name = uniqueName("verify");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["verify", name]);
    using channel = await listener.accept({ timeout: 20000 });
    const cases: [number, number, PixelFormat][] = [
      [1920, 1080, "BGRA"],
      [1920, 1080, "420v"],
      [1280, 720, "420f"],
      [640, 480, "y420"],
      [320, 240, "RGBA"],
      [100, 50, "L008"],
    ];
    for (let i = 0; i < cases.length; i++) {
      const [width, height, format] = cases[i];
      using surface = Surface.create({ width, height, format });
      fillPattern(surface, i);
      await channel.send(surface, { seed: i });
      await peer.line("meta");
      const line = await peer.line(/^(ok|bad) /);
      assert.equal(line, `ok ${i} ${format} ${surface.id} ${width}x${height}`, line);
      assert.equal(verifyPattern(surface, i), undefined, "the sender's view is unchanged");
    }
    using end = Surface.create({ width: 2, height: 2 });
    await channel.send(end, { end: true });
    await peer.line("done");
    assert.equal((await peer.exit()).code, 0, peer.stderr);
  },
});

Deno.test({
  name: "channel: metadata arrives as it was sent (JSON values and raw bytes)",
  ignore: !linux,
  async fn() {
    const name = uniqueName("meta");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["verify", name]);
    using channel = await listener.accept({ timeout: 20000 });
    using surface = Surface.create({ width: 4, height: 4 });
    const metas: unknown[] = [
      { pts: 123456789, tags: ["a", "ü", "🎥"], nested: { ok: true, n: null } },
      "plain string",
      42,
      [1, 2, 3],
      new Uint8Array([0, 1, 254, 255]),
    ];
    for (const meta of metas) {
      await channel.send(surface, meta);
      const line = await peer.line("meta ");
      const received = JSON.parse(line.slice(5));
      const expected = meta instanceof Uint8Array ? { bytes: [...meta] } : meta;
      assert.deepEqual(received, expected);
    }
    await channel.send(surface); // no metadata
    assert.equal(await peer.line("meta "), "meta null");
    await channel.send(surface, { end: true });
    assert.equal((await peer.exit()).code, 0, peer.stderr);
  },
});

Deno.test({
  name: "channel: both directions over one channel, many frames (echo)",
  ignore: !linux,
  async fn() {
    const name = uniqueName("echo");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["echo", name]);
    using channel = await listener.accept({ timeout: 20000 });
    using surface = Surface.create({ width: 320, height: 240 });
    const frames = 300;
    for (let i = 0; i < frames; i += 2) {
      fillPattern(surface, i);
      await channel.send(surface, { seed: i });
      using reply = await channel.receive({ timeout: 10000 });
      assert.equal(reply.surface.id, surface.id, "the same memory came back");
      assert.deepEqual(reply.meta, { seed: i + 1 });
      assert.equal(reply.sequence, i / 2);
      assert.equal(verifyPattern(reply.surface, i + 1), undefined);
      assert.equal(verifyPattern(surface, i + 1), undefined, "the peer wrote into our surface");
    }
    using end = Surface.create({ width: 2, height: 2 });
    await channel.send(end, { end: true });
    // The peer prints `bad ...` for a frame it found wrong; `line` skips what does not match.
    assert.equal(await peer.line(/^(done$|bad )/), "done");
    assert.equal((await peer.exit()).code, 0, peer.stderr);
  },
});

Deno.test({
  name: "channel: a producer in another process streams to us",
  ignore: !linux,
  async fn() {
    const name = uniqueName("produce");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["produce", name, "1920", "1080", "420v", "20"]);
    using channel = await listener.accept({ timeout: 20000 });
    using ack = Surface.create({ width: 2, height: 2 });
    let count = 0;
    for await (const frame of channel) {
      const meta = frame.meta as { seed?: number; end?: boolean };
      if (meta.end) {
        frame.close();
        break;
      }
      assert.equal(frame.surface.format, "420v");
      assert.equal(verifyPattern(frame.surface, meta.seed!), undefined);
      frame.close();
      count++;
      await channel.send(ack);
    }
    assert.equal(count, 20);
    assert.equal((await peer.exit()).code, 0, peer.stderr);
  },
});

Deno.test({
  name: "channel: sending does not consume the surface; frames are full Surfaces",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using surface = Surface.create({ width: 64, height: 32, format: "y420" });
    fillPattern(surface, 7);
    await p.client.send(surface, { seed: 7 });
    await p.client.send(surface, { seed: 7 });
    using first = await p.server.receive({ timeout: 1000 });
    using second = await p.server.receive({ timeout: 1000 });
    assert.equal(surface.closed, false);
    for (const frame of [first, second]) {
      assert.equal(frame.surface.id, surface.id);
      assert.deepEqual(frame.surface.planes, surface.planes);
      assert.equal(frame.surface.allocSize, surface.allocSize);
      assert.equal(verifyPattern(frame.surface, 7), undefined);
    }
    assert.equal(surface.inUse, true, "held by two frames");
    first.close();
    assert.equal(surface.inUse, true, "still held by one");
    assert.equal(second.surface.inUse, false, "no holder but this frame");
    second.close();
    assert.equal(surface.inUse, false);
    // A closed surface cannot be sent.
    const gone = Surface.create({ width: 2, height: 2 });
    gone.close();
    await assert.rejects(p.client.send(gone), ClosedError);
    await assert.rejects(p.client.send({} as Surface), TypeError);
    await assert.rejects(p.client.send(surface, () => 1), TypeError);
  },
});

Deno.test({
  name: "channel: frames are stamped with nowMicros(), the system real-time clock",
  ignore: !linux,
  async fn() {
    const { nowMicros } = await import("../mod.ts");
    // Between two readings of Date.now() (whole ms), however long the machine paused between
    // them: a fixed bound on the difference of two readings failed when it paused there.
    const earliest = Date.now() * 1000;
    const now = nowMicros();
    const latest = (Date.now() + 1) * 1000;
    assert.ok(
      now >= earliest && now <= latest,
      `nowMicros ${now} is the real-time clock, between Date.now() ${earliest} and ${latest}`,
    );
    using p = await pair();
    using surface = Surface.create({ width: 8, height: 8 });
    const before = nowMicros();
    await p.client.send(surface);
    const after = nowMicros();
    using frame = await p.server.receive({ timeout: 1000 });
    assert.ok(
      frame.timestamp >= before && frame.timestamp <= after,
      `${before} ${frame.timestamp} ${after}`,
    );
    await p.client.send(surface, undefined, { timestamp: 42 });
    using stamped = await p.server.receive({ timeout: 1000 });
    assert.equal(stamped.timestamp, 42);
  },
});

Deno.test({
  name:
    "channel: metadata arrives as sent (an empty Uint8Array too), timestamps are the sender's, numbering is at send()",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using surface = Surface.create({ width: 4, height: 4 });
    const sent: unknown[] = [new Uint8Array(0), new Uint8Array([1]), null, 0, "", [], undefined];
    for (const meta of sent) await p.client.send(surface, meta, { timestamp: -5 });
    for (let i = 0; i < sent.length; i++) {
      using frame = await p.server.receive({ timeout: 5000 });
      assert.deepEqual(frame.meta, sent[i], `metadata ${i}`);
      if (sent[i] instanceof Uint8Array) assert.ok(frame.meta instanceof Uint8Array);
      assert.equal(frame.timestamp, -5);
      assert.equal(frame.sequence, i);
    }
    // Argument mistakes about the timestamp are thrown before a number is taken.
    await assert.rejects(p.client.send(surface, undefined, { timestamp: 2 ** 53 }), RangeError);
    await assert.rejects(p.client.send(surface, undefined, { timestamp: NaN }), RangeError);
    await assert.rejects(
      p.client.send(surface, undefined, { timestamp: "1" as unknown as number }),
      TypeError,
    );
    // A send aborted before it starts takes no number (a send that times out in a full queue
    // does, and leaves a gap: tests/backpressure_test.ts).
    const aborted = new AbortController();
    aborted.abort(new Error("stop"));
    await assert.rejects(
      p.client.send(surface, undefined, { signal: aborted.signal }),
      /^Error: stop$/,
    );
    await p.client.send(surface);
    using next = await p.server.receive({ timeout: 5000 });
    assert.equal(next.sequence, sent.length, "no number taken");
  },
});
