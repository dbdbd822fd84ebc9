/**
 * The unixfd framer bounds the descriptors one message may collect: a
 * GStreamer peer sends a buffer's descriptors (at most 255, `n_memory` is a
 * byte) together with its header, so a peer that trickles a large payload
 * with descriptors on every piece must not make this process hold them all
 * (and run out of descriptors) before the message is even whole.
 */
import assert from "node:assert/strict";
import { UnixFdFramer } from "../src/gst/framer.ts";
import { encodeCommandHeader, GST_COMMAND, GstProtocolError } from "../src/gst/protocol.ts";

Deno.test("gst framer: a message that collects more than 255 descriptors is refused at once, and every one is handed back", () => {
  const framer = new UnixFdFramer();
  const header = new Uint8Array(8);
  encodeCommandHeader(header, GST_COMMAND.NEW_BUFFER, 4096);
  assert.equal(framer.feed(header, []), undefined);
  const piece = new Uint8Array(1);
  const fds = (from: number) => Array.from({ length: 200 }, (_, i) => 1000 + from + i);
  assert.equal(framer.feed(piece, fds(0)), undefined); // 200: still possible for a real buffer
  assert.throws(
    () => framer.feed(piece, fds(200)),
    (error: unknown) => error instanceof GstProtocolError && error.reason === "FD_COUNT",
  );
  assert.deepEqual(framer.takeFds(), [...fds(0), ...fds(200)], "the caller gets every fd to close");
});
