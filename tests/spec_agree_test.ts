/**
 * Where `docs/protocol.md` / `docs/errors.md` and the code disagreed, each
 * now held to one answer: a message one byte past the largest valid one is
 * `MESSAGE_TRUNCATED` (it was `SHORT_MESSAGE`); a pipe handed to from-gst
 * is `NOT_SHARED_MEMORY` (it was `BAD_META`); the fourcc is the CoreVideo
 * code as a little-endian number, so its bytes read backwards.
 */

import assert from "node:assert/strict";
import { listen, ProtocolError } from "../mod.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { UnixFdServer } from "../src/gst/socket.ts";
import { encodeCaps, encodeNewBuffer } from "../src/gst/protocol.ts";
import { DEFAULT_MAX_META_BYTES, encodeHeader, HEADER_SIZE } from "../src/wire/wire.ts";
import { computeGeometry } from "../src/core/geometry.ts";
import { closeAll, makeMemfd, makePipe, RawPeer, smallGeometry } from "./hostile/raw.ts";
import { pair, uniqueName } from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "spec: a message of 136 + 65537 bytes is MESSAGE_TRUNCATED, as docs/errors.md says",
  ignore: !linux,
  async fn() {
    const name = uniqueName("spec-trunc");
    using listener = listen(name);
    const accepted = listener.accept();
    const raw = RawPeer.connect(name);
    using channel = await accepted;
    const geometry = smallGeometry();
    const fd = makeMemfd(geometry.allocSize);
    try {
      for (const [extra, reason] of [[1, "MESSAGE_TRUNCATED"], [0, "TOO_LARGE"]] as const) {
        // A header announcing the limit plus `extra` bytes of metadata, and that many bytes.
        const message = new Uint8Array(HEADER_SIZE + DEFAULT_MAX_META_BYTES + extra);
        encodeHeader(new DataView(message.buffer), geometry, 1, DEFAULT_MAX_META_BYTES + 1, 0n, 0);
        raw.sendOrThrow(message, { fds: [fd] });
        await assert.rejects(
          channel.receive({ timeout: 5000 }),
          (error) => error instanceof ProtocolError && error.reason === reason,
          `${message.length} bytes`,
        );
      }
    } finally {
      closeAll(fd);
      raw.close();
    }
  },
});

Deno.test({
  name: "spec: a pipe handed to from-gst is NOT_SHARED_MEMORY, as docs/errors.md says",
  ignore: !linux,
  async fn() {
    const socket = uniqueName("spec-pipe");
    const server = new UnixFdServer(`@${socket}`, () => true);
    const accepted = server.accept();
    const bridge = await GstSourceBridge.connect(`@${socket}`, { timeout: 2000 });
    const sink = await accepted;
    using channels = await pair();
    const [read, write] = makePipe();
    try {
      const running = bridge.run(channels.client);
      await sink.send(encodeCaps("video/x-raw, format=(string)BGRA, width=(int)64, height=(int)4"));
      await sink.send(encodeNewBuffer({ id: 1n, memories: [{ size: 1024, offset: 0 }] }), [read]);
      const error = await within(running.then(() => undefined, (e) => e), 5000, "run to fail");
      assert.ok(
        error instanceof ProtocolError && error.reason === "NOT_SHARED_MEMORY",
        `${error?.name} ${error?.reason}: ${error?.message}`,
      );
    } finally {
      bridge.close();
      sink.close();
      server.close();
      closeAll(read, write);
    }
  },
});

Deno.test("spec: the fourcc is the CoreVideo code as a little-endian number: BGRA reads ARGB", () => {
  const text = (format: "BGRA" | "RGBA" | "420v" | "y420" | "L008") => {
    const header = new Uint8Array(HEADER_SIZE);
    encodeHeader(new DataView(header.buffer), computeGeometry(64, 32, format), 0, 0, 0n, 0);
    return new TextDecoder().decode(header.subarray(12, 16));
  };
  assert.equal(text("BGRA"), "ARGB", "0x42475241 little-endian; V4L2 would put B G R A");
  assert.equal(text("RGBA"), "ABGR");
  assert.equal(text("420v"), "v024");
  assert.equal(text("y420"), "024y");
  assert.equal(text("L008"), "800L");
});
