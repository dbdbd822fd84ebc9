/**
 * `GstSinkBridge.send` called again before the previous call finished (it
 * is public; a producer may not await it): each client must get each
 * frame's own NEW_BUFFER record. A record buffer shared between calls was
 * overwritten by the second call before the first one's queued send read
 * it: the client saw the second id twice and the first frame was never
 * released.
 */
import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { Surface } from "../mod.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import { connectUnixFd } from "../src/gst/socket.ts";
import { unixFdStats } from "../src/gst/unixfd_connection.ts";
import { encodeRelease } from "../src/gst/protocol.ts";
import { uniqueName, waitUntil } from "./helpers.ts";

Deno.test({
  name: "gst bridge: to-gst sends done concurrently each carry their own buffer id",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("gstconc");
    // Three frames held at once by one client: above the default budgets.
    const bridge = GstSinkBridge.listen(`@${name}`, { clientBudget: 3, maxOutstanding: 3 });
    const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const surfaces = [0, 1, 2].map(() => Surface.create({ width: 64, height: 4 }));
    const frame = (surface: Surface) => ({ surface, close: () => {} });
    try {
      await bridge.waitForClient(2000);
      await bridge.send(frame(surfaces[0])); // caps first, so the next two encode at once
      const ids: bigint[] = [];
      const receiveBuffer = async () => {
        for (;;) {
          const message = await client.receive(performance.now() + 5000);
          if (message.type !== "new-buffer") continue;
          for (const fd of message.fds) libc().close(fd);
          ids.push(message.buffer.id);
          return;
        }
      };
      await receiveBuffer();
      await Promise.all([bridge.send(frame(surfaces[1])), bridge.send(frame(surfaces[2]))]);
      await receiveBuffer();
      await receiveBuffer();
      assert.equal(new Set(ids).size, 3, `buffer ids ${ids.join(", ")}`);
    } finally {
      client.close();
      bridge.close();
      for (const surface of surfaces) surface.close();
    }
  },
});

Deno.test({
  name:
    "gst bridge: to-gst sends that wait for a full client socket each carry their own buffer id",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("gstfull");
    // A client that reads nothing until its socket is full: later frames queue behind, each from
    // a copy of the record (the bridge patches the record for every next frame meanwhile).
    const frames = 400; // ~270 NEW_BUFFERs with a descriptor fill a socket's default buffer
    const bridge = GstSinkBridge.listen(`@${name}`, {
      clientBudget: frames,
      maxOutstanding: frames,
      sendTimeout: 10_000,
    });
    const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const surface = Surface.create({ width: 64, height: 4 });
    try {
      await bridge.waitForClient(2000);
      const sends = [];
      for (let i = 0; i < frames; i++) sends.push(bridge.send({ surface, close: () => {} }));
      const ids: bigint[] = [];
      while (ids.length < frames) {
        const message = await client.receive(performance.now() + 5000);
        if (message.type !== "new-buffer") continue;
        for (const fd of message.fds) libc().close(fd);
        ids.push(message.buffer.id);
      }
      await Promise.all(sends);
      assert.ok(unixFdStats.sendWaits > 0, "no send waited: the socket never filled");
      // (The first frame goes out last: it waited for its caps while the others queued.)
      const sorted = [...ids].sort((a, b) => Number(a - b));
      assert.deepEqual(sorted, ids.map((_, i) => sorted[0] + BigInt(i)), "each frame its own id");
    } finally {
      client.close();
      bridge.close();
      surface.close();
    }
  },
});

Deno.test({
  name: "gst bridge: a to-gst client that fails mid-send does not close the frame for the others",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("gstdrop");
    const bridge = GstSinkBridge.listen(`@${name}`);
    const stays = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    const surface = Surface.create({ width: 64, height: 4 });
    let closed = 0;
    try {
      await bridge.waitForClient(2000);
      await bridge.send({ surface, close: () => closed++ }); // the caps go out first
      const first = await stays.receive(performance.now() + 5000);
      assert.equal(first.type, "caps");
      const buffer = await stays.receive(performance.now() + 5000);
      if (buffer.type !== "new-buffer") throw new Error(`expected a buffer, got ${buffer.type}`);
      for (const fd of buffer.fds) libc().close(fd);
      stays.send(encodeRelease(buffer.buffer.id));
      await waitUntil(() => closed === 1, 2000, "the first frame released");
      // Served last (the list is walked backwards): its send fails at once, with a frame out.
      const goes = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
      await waitUntil(() => bridge.stats.clients === 2, 2000, "two clients");
      goes.close();
      await bridge.send({ surface, close: () => closed++ });
      const next = await stays.receive(performance.now() + 5000);
      assert.equal(next.type, "new-buffer", "the staying client still got the frame");
      if (next.type === "new-buffer") { for (const fd of next.fds) libc().close(fd); }
      assert.equal(closed, 1, "the frame is still out with the staying client");
    } finally {
      stays.close();
      bridge.close();
      surface.close();
    }
  },
});
