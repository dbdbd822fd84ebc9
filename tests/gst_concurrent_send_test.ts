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
import { uniqueName } from "./helpers.ts";

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
