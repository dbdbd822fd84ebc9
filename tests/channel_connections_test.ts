/**
 * Channels on Linux: connecting, waiting and ending. Socket paths and
 * names, the peer checks both ways, receive's timeout, signal and close, a
 * peer that goes away or is killed mid-stream, and a pending accept() when
 * the listener closes.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  ClosedError,
  connect,
  listen,
  PeerClosedError,
  PeerRefusedError,
  Surface,
  SystemCallError,
  TimeoutError,
} from "../mod.ts";
import { pair, spawnPeer, uniqueName } from "./helpers.ts";

const linux = Deno.build.os === "linux";

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
