import assert from "node:assert/strict";
import {
  ClosedError,
  connect,
  listen,
  PeerClosedError,
  PeerRefusedError,
  type PixelFormat,
  Surface,
  SystemCallError,
  TimeoutError,
} from "../mod.ts";
import { fillPattern, verifyPattern } from "../examples/pattern.ts";
import { openReceivedCount } from "../src/surface/surface_lifetime.ts";
import {
  assertNoFdLeak,
  fdTargets,
  memfdMappings,
  openFds,
  pair,
  settleRuntimeFds,
  spawnPeer,
  uniqueName,
} from "./helpers.ts";

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
  name: "channel: the receiver caches mappings by inode; a surface that returns is not remapped",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using a = Surface.create({ width: 64, height: 64 });
    using b = Surface.create({ width: 64, height: 64 });
    // A mapping is identified by its one ArrayBuffer (see "received frames share one buffer per
    // mapping" below), not by its address: mmap hands back the address a munmap just freed.
    const buffers = new Map<number, ArrayBufferLike>();
    const mappedBefore = memfdMappings().length;
    for (let i = 0; i < 10; i++) {
      const surface = i % 2 ? a : b;
      await p.client.send(surface);
      using frame = await p.server.receive({ timeout: 1000 });
      const buffer = frame.surface.bytes().buffer;
      const known = buffers.get(frame.surface.id);
      if (known !== undefined) assert.equal(buffer, known, `frame ${i}: the same mapping reused`);
      buffers.set(frame.surface.id, buffer);
    }
    assert.equal(buffers.size, 2);
    assert.equal(memfdMappings().length, mappedBefore + 2, "the two cached mappings, no other");
  },
});

Deno.test({
  name: "channel: receive honours timeout and signal, and close() wakes a pending receive",
  ignore: !linux,
  async fn() {
    using p = await pair();
    const started = performance.now();
    await assert.rejects(p.server.receive({ timeout: 100 }), TimeoutError);
    assert.ok(performance.now() - started >= 90);
    const controller = new AbortController();
    const aborted = p.server.receive({ signal: controller.signal });
    setTimeout(() => controller.abort(new Error("stop")), 20);
    await assert.rejects(aborted, /stop/);
    const pending = p.server.receive();
    setTimeout(() => p.server.close(), 20);
    await assert.rejects(pending, ClosedError);
    await assert.rejects(p.server.receive(), ClosedError);
  },
});

Deno.test({
  name: "channel: the peer going away ends receive() and iteration, never a hang",
  ignore: !linux,
  async fn() {
    using p = await pair();
    const pending = p.server.receive({ timeout: 5000 });
    p.client.close();
    await assert.rejects(pending, PeerClosedError);
    const frames = [];
    for await (const frame of p.server) frames.push(frame);
    assert.equal(frames.length, 0);
    using surface = Surface.create({ width: 2, height: 2 });
    await assert.rejects(p.server.send(surface), PeerClosedError);
  },
});

Deno.test({
  name: "channel: a peer process killed mid-stream ends receive() with PeerClosedError",
  ignore: !linux,
  async fn() {
    const name = uniqueName("killed");
    using listener = listen(name);
    await using peer = spawnPeer("peer.ts", ["produce", name, "64", "64", "BGRA", "1000000"]);
    using channel = await listener.accept({ timeout: 20000 });
    using ack = Surface.create({ width: 2, height: 2 });
    for (let i = 0; i < 5; i++) {
      const frame = await channel.receive({ timeout: 10000 });
      frame.close();
      await channel.send(ack);
    }
    peer.process.kill("SIGKILL");
    await peer.process.status;
    await assert.rejects(
      (async () => {
        for (;;) (await channel.receive({ timeout: 10000 })).close();
      })(),
      PeerClosedError,
    );
  },
});

Deno.test({
  name: "channel: filesystem socket paths are created 0600 and removed on close",
  ignore: !linux,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const path = `${dir}/cam.sock`;
    try {
      const listener = listen(path);
      assert.equal(listener.address, path);
      assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
      const accepted = listener.accept();
      using client = await connect(path);
      using server = await accepted;
      using surface = Surface.create({ width: 8, height: 8 });
      await client.send(surface);
      (await server.receive({ timeout: 1000 })).close();
      listener.close();
      assert.throws(() => Deno.statSync(path), Deno.errors.NotFound);
      // A socket file left behind by a listener that was killed is replaced.
      const stale = `${dir}/stale.sock`;
      {
        await using dead = spawnPeer("listen_forever.ts", [stale]);
        await dead.line("listening");
      }
      assert.ok(Deno.statSync(stale).isSocket, "the killed listener left its socket file");
      using again = listen(stale);
      const acceptedAgain = again.accept();
      using c = await connect(stale);
      (await acceptedAgain).close();
      c.close();
      // A live listener's path is not stolen.
      assert.throws(() => listen(stale), SystemCallError);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "channel: name errors are typed and say what to do",
  ignore: !linux,
  async fn() {
    await assert.rejects(connect(uniqueName("nobody-here")), (e: unknown) => {
      assert.ok(e instanceof SystemCallError);
      assert.equal(e.errnoName, "ECONNREFUSED");
      assert.match(e.message, /nothing is listening/);
      return true;
    });
    const name = uniqueName("dup");
    using first = listen(name);
    assert.throws(
      () => listen(name),
      (e: unknown) => e instanceof SystemCallError && e.errnoName === "EADDRINUSE",
    );
    assert.ok(first.address.endsWith(name));
    assert.throws(() => listen(""), TypeError);
    assert.throws(() => listen("x", { maxMetaBytes: 1 << 20 }), RangeError);
    await assert.rejects(connect("x", { timeout: -1 }), RangeError);
  },
});

Deno.test({
  name: "channel: peers are checked both ways; a refused client is skipped by accept()",
  ignore: !linux,
  async fn() {
    const name = uniqueName("creds");
    const seen: number[] = [];
    using listener = listen(name, {
      allowPeer: (peer) => {
        seen.push(peer.pid);
        return seen.length > 1; // refuse the first peer only
      },
    });
    const accepted = listener.accept({ timeout: 5000 });
    // The listener is ours (same uid), so the default client check admits it.
    const refused = await connect(name);
    // A refused peer is disconnected: its receive ends.
    await assert.rejects(refused.receive({ timeout: 5000 }), PeerClosedError);
    refused.close();
    using admitted = await connect(name);
    using server = await accepted;
    assert.equal(server.peer.pid, Deno.pid);
    assert.equal(admitted.peer.pid, Deno.pid);
    assert.equal(seen.length, 2);
    await assert.rejects(connect(name, { allowPeer: () => false }), PeerRefusedError);
    await assert.rejects(
      connect(name, {
        allowPeer: () => {
          throw new Error("boom");
        },
      }),
      PeerRefusedError,
    );
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
  name: "channel: no descriptor leaks across a session of sends, receives and closes",
  ignore: !linux,
  async fn() {
    await assertNoFdLeak(async () => {
      using p = await pair();
      using surface = Surface.create({ width: 320, height: 240 });
      for (let i = 0; i < 200; i++) {
        await p.client.send(surface, { i });
        (await p.server.receive({ timeout: 1000 })).close();
      }
      await p.client.send(surface);
      await p.client.send(surface);
      // Left unread in the queue: released when the channel closes.
    });
  },
});

Deno.test({
  name: "channel: a frame dropped without close() is released by the finalizer",
  ignore: !linux,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await settleRuntimeFds();
    using p = await pair();
    using surface = Surface.create({ width: 64, height: 64 });
    const baseline = openFds();
    for (let i = 0; i < 10; i++) await p.client.send(surface);
    await (async () => {
      for (let i = 0; i < 10; i++) {
        (await p.server.receive({ timeout: 1000 })).surface.bytes()[0] = i;
      }
    })();
    assert.equal(surface.inUse, true, "ten frames are held (not closed)");
    const { collectGarbage } = await import("./helpers.ts");
    await collectGarbage();
    assert.equal(surface.inUse, false, "the finalizer closed every held descriptor");
    assert.deepEqual(fdTargets(baseline), []);
  },
});

Deno.test({
  name: "channel: a frame closed before it is collected is not finalized again (its " +
    "registration stays: no second release, no warning, the open counts stay right)",
  ignore: !linux,
  async fn() {
    using p = await pair();
    using surface = Surface.create({ width: 64, height: 64 });
    await p.client.send(surface);
    using held = await p.server.receive({ timeout: 1000 });
    const warn = console.warn;
    const warnings: unknown[] = [];
    console.warn = (...args: unknown[]) => warnings.push(args);
    try {
      await (async () => {
        for (let i = 0; i < 10; i++) {
          await p.client.send(surface);
          const frame = await p.server.receive({ timeout: 1000 });
          assert.equal(openReceivedCount(surface.id), 2);
          frame.close();
        }
      })();
      const { collectGarbage } = await import("./helpers.ts");
      await collectGarbage();
    } finally {
      console.warn = warn;
    }
    assert.deepEqual(warnings, [], "a closed frame's finalizer warned");
    assert.equal(openReceivedCount(surface.id), 1, "the frame still open counts once");
    assert.equal(surface.inUse, true, "the frame still open holds the surface");
    // A frame is its own surface (one object per frame), and `frame.surface` still works.
    assert.ok(held instanceof Surface);
    assert.equal(held.surface, held);
    assert.equal(held.bytes().length, 64 * 64 * 4);
  },
});

Deno.test({
  name: "listener: a pending accept() rejects with ClosedError when the listener closes",
  ignore: !linux,
  async fn() {
    const listener = listen(uniqueName("acc"));
    const pending = listener.accept();
    setTimeout(() => listener.close(), 20);
    await assert.rejects(pending, ClosedError);
    await assert.rejects(listener.accept(), ClosedError);
    const other = listen(uniqueName("acc2"));
    await assert.rejects(other.accept({ timeout: 30 }), TimeoutError);
    const controller = new AbortController();
    const aborted = other.accept({ signal: controller.signal });
    controller.abort(new Error("no more"));
    await assert.rejects(aborted, /no more/);
    const names: string[] = [];
    const iterate = (async () => {
      for await (const channel of other) names.push(String(channel.peer.pid));
    })();
    using c = await connect(other.address.slice("@surfaceport/".length));
    await sleepUntil(() => names.length === 1);
    other.close();
    await iterate;
    assert.deepEqual(names, [String(Deno.pid)]);
    c.close();
  },
});

async function sleepUntil(condition: () => boolean): Promise<void> {
  const { waitUntil } = await import("./helpers.ts");
  await waitUntil(condition, 2000, "condition");
}

Deno.test({
  name: "channel: received frames share one buffer per mapping, detached when the cache lets go",
  ignore: !linux,
  async fn() {
    const p = await pair({ mappingCacheSize: 1 });
    try {
      using a = Surface.create({ width: 64, height: 64 });
      using b = Surface.create({ width: 64, height: 64 });
      a.bytes().fill(1);
      await p.client.send(a);
      const first = await p.server.receive({ timeout: 1000 });
      const view = first.surface.bytes();
      first.close();
      assert.equal(view[0], 1, "still mapped (cached) after the frame closed");
      await p.client.send(a);
      using second = await p.server.receive({ timeout: 1000 });
      assert.equal(second.surface.bytes().buffer, view.buffer, "the same buffer, not a new one");
      second.close();
      await p.client.send(b); // evicts a's mapping (cache size 1): it is unmapped
      (await p.server.receive({ timeout: 1000 })).close();
      assert.equal(view.length, 0, "detached before its memory was unmapped");
    } finally {
      p[Symbol.dispose]();
    }
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

Deno.test("channel: a TimeoutError names the caller's timeout, not the backend's last wait slice", async () => {
  const { Channel } = await import("../mod.ts");
  // A connection whose waits time out on a short final slice, as a slow machine's would.
  const slicing = {
    peer: { pid: 1, uid: 0, gid: 0 },
    send: () => Promise.reject(new TimeoutError("send", 12)),
    receive: () => Promise.reject(new TimeoutError("receive", 3)),
    sendControl: () => Promise.reject(new TimeoutError("send", 12)),
    receiveControl: () => Promise.reject(new TimeoutError("receive", 3)),
    tryReceiveControl: () => undefined,
    close() {},
  };
  const channel = new Channel(slicing);
  await assert.rejects(channel.receive({ timeout: 300 }), (e: unknown) => {
    assert.ok(e instanceof TimeoutError);
    assert.equal(e.message, "receive timed out after 300 ms");
    return true;
  });
  channel.close();
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
