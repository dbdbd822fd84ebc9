/**
 * The from-gst bridge owns every surface it adopts until it closes it: it
 * registers no finalizer for them (V8's ~72 B per frame, issue 20), so
 * nothing else would close a surface it lost track of. The one it is
 * handing a sink, whose `send` has not settled, is closed by the bridge's
 * `close()` like the ones it holds.
 */
import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import type { Surface } from "../mod.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { UnixFdServer } from "../src/gst/socket.ts";
import { encodeCaps, encodeNewBuffer } from "../src/gst/protocol.ts";
import { uniqueName } from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const CAPS =
  "video/x-raw, format=(string)BGRA, width=(int)64, height=(int)4, framerate=(fraction)30/1";
const FRAME_BYTES = 64 * 4 * 4;
const F_GETFD = 1, F_ADD_SEALS = 1033, SEAL_SHRINK = 2;

/** A memfd as GStreamer's shm allocator makes it (shrink-sealed, sealing open). */
function gstMemfd(): number {
  const lib = libc();
  const fd = lib.memfd_create(new TextEncoder().encode("gst-owned\0"), 3);
  assert.ok(fd >= 0);
  assert.equal(lib.ftruncate(fd, BigInt(FRAME_BYTES)), 0);
  assert.equal(lib.fcntl(fd, F_ADD_SEALS, SEAL_SHRINK), 0);
  return fd;
}

Deno.test({
  name: "gst bridge: from-gst's close() closes the surface a sink's unsettled send still has",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("gstowned");
    const server = new UnixFdServer(`@${name}`, () => true);
    const accepted = server.accept();
    const bridge = await GstSourceBridge.connect(`@${name}`, { timeout: 2000 });
    const sink = await accepted;
    const fd = gstMemfd();
    const handed = Promise.withResolvers<Surface>();
    const sent = Promise.withResolvers<void>();
    try {
      const running = bridge.run({
        send(surface: Surface): Promise<void> {
          handed.resolve(surface);
          return sent.promise; // settles only after the bridge closed
        },
      });
      await sink.send(encodeCaps(CAPS));
      await sink.send(
        encodeNewBuffer({ id: 1n, memories: [{ size: FRAME_BYTES, offset: 0 }] }),
        [fd],
      );
      const surface = await within(handed.promise, 5000, "the sink to be handed the frame");
      const handle = surface.unsafeHandle;
      assert.equal(handle.kind, "memfd");
      const adopted = (handle as { fd: number }).fd;
      assert.ok(libc().fcntl(adopted, F_GETFD, 0) >= 0, "the adopted descriptor is open");
      bridge.close();
      assert.ok(surface.closed, "close() closed the surface the sink had");
      assert.equal(libc().fcntl(adopted, F_GETFD, 0), -1, "and its descriptor");
      sent.resolve();
      // The send settles after close(): the bridge ends without holding the closed surface.
      await within(running, 5000, "run to end once the send settled");
      assert.equal(bridge.stats.outstanding, 0);
    } finally {
      sent.resolve();
      bridge.close();
      sink.close();
      server.close();
      libc().close(fd);
    }
  },
});
