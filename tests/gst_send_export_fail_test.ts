/**
 * `GstSinkBridge.send` whose capability export fails (e.g. `EMFILE`) before
 * any client got the frame: the frame must not stay outstanding forever
 * (closed, and its `maxOutstanding` slot free again).
 */
import assert from "node:assert/strict";
import { Surface, SystemCallError } from "../mod.ts";
import type { SurfaceBacking } from "../src/contract/backend.ts";
import { backingOf } from "../src/surface/surface.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import { connectUnixFd } from "../src/gst/socket.ts";
import { uniqueName } from "./helpers.ts";

/** A surface over `real`'s memory whose `exportHandle` always throws `EMFILE`. */
function unexportable(real: Surface): Surface {
  const backing = backingOf(real, "test");
  const proxy: SurfaceBacking = Object.create(backing, {
    exportHandle: {
      value: () => {
        throw new SystemCallError("open", 24, "EMFILE", "out of descriptors (simulated)");
      },
    },
    release: { value: () => {} }, // `real` owns the memory
  });
  return new Surface(proxy, proxy, false);
}

Deno.test({
  name: "gst bridge: a to-gst send whose descriptor export fails leaves no frame outstanding",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("gstexp");
    const bridge = GstSinkBridge.listen(`@${name}`);
    const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    using real = Surface.create({ width: 64, height: 4 });
    try {
      await bridge.waitForClient(2000);
      let closed = 0;
      await assert.rejects(
        bridge.send({ surface: unexportable(real), close: () => closed++ }),
        SystemCallError,
      );
      assert.equal(bridge.stats.outstanding, 0, "the failed frame is not held");
      assert.equal(closed, 1, "the failed frame was closed");
    } finally {
      client.close();
      bridge.close();
    }
  },
});
