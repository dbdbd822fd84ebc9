/**
 * A unixfdsink that sends a NEW_BUFFER under an id the bridge still holds
 * (GStreamer never does: the id names a buffer it keeps until RELEASE) must
 * not make the bridge answer RELEASE_BUFFER for that id — GStreamer would
 * take it as the held buffer's release and reuse its memory while a
 * consumer still reads it. It is a protocol error.
 */
import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { UnixFdServer } from "../src/gst/socket.ts";
import { encodeCaps, encodeNewBuffer, GstProtocolError } from "../src/gst/protocol.ts";
import { pair, uniqueName } from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const CAPS =
  "video/x-raw, format=(string)BGRA, width=(int)64, height=(int)4, framerate=(fraction)30/1";
const FRAME_BYTES = 64 * 4 * 4;

/** A memfd as GStreamer's shm allocator makes it (shrink-sealed, sealing open). */
function gstMemfd(): number {
  const lib = libc();
  const fd = lib.memfd_create(new TextEncoder().encode("gst-dup\0"), 3);
  assert.ok(fd >= 0);
  assert.equal(lib.ftruncate(fd, BigInt(FRAME_BYTES)), 0);
  assert.equal(lib.fcntl(fd, 1033, /* F_ADD_SEALS */ 2 /* SHRINK */), 0);
  return fd;
}

Deno.test({
  name:
    "gst bridge: a NEW_BUFFER reusing a held id is a protocol error, never a RELEASE of the held buffer",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("gstdup");
    const server = new UnixFdServer(`@${name}`, () => true);
    const accepted = server.accept();
    const bridge = await GstSourceBridge.connect(`@${name}`, { timeout: 2000 });
    const sink = await accepted;
    using channels = await pair();
    const fds = [gstMemfd(), gstMemfd()];
    try {
      const running = bridge.run(channels.client);
      running.catch(() => {});
      await sink.send(encodeCaps(CAPS));
      const buffer = (id: bigint) =>
        encodeNewBuffer({ id, offset: id, memories: [{ size: FRAME_BYTES, offset: 0 }] });
      await sink.send(buffer(7n), [fds[0]]);
      using _frame = await channels.server.receive({ timeout: 5000 });
      await sink.send(buffer(7n), [fds[1]]); // the same id while the first is held
      await assert.rejects(
        within(running, 5000, "run to end"),
        (error: unknown) => error instanceof GstProtocolError,
      );
      // No RELEASE 7 went out while the consumer held buffer 7 (the bridge hung up instead).
      const reply = await sink.receive(performance.now() + 300).catch((error) => error);
      assert.ok(
        !(reply && typeof reply === "object" && "type" in reply && reply.type === "release-buffer"),
        `the bridge released the held buffer: ${Deno.inspect(reply)}`,
      );
    } finally {
      bridge.close();
      sink.close();
      server.close();
      for (const fd of fds) libc().close(fd);
    }
  },
});
