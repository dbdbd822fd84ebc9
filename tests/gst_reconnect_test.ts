/**
 * from-gst outlives its GStreamer pipeline with `reconnect`: when the
 * `unixfdsink` goes away (EOS, or the process dies) and comes back on the
 * same socket, the bridge connects again and its subscribers get the new
 * pipeline's frames. The sink here is a fake written from the protocol.
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { publish, subscribe } from "../mod.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { UnixFdServer } from "../src/gst/socket.ts";
import { encodeCaps, encodeEos, encodeNewBuffer } from "../src/gst/protocol.ts";
import { Child, uniqueName } from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const linux = Deno.build.os === "linux";
const CAPS = "video/x-raw, format=(string)BGRA, width=(int)64, height=(int)4";

/** A memfd of one 64x4 BGRA frame filled with `fill`, sealed as GstShmAllocator does. */
function frameMemfd(fill: number): number {
  const lib = libc();
  const fd = lib.memfd_create(new TextEncoder().encode("reconnect\0"), 3);
  assert.equal(lib.ftruncate(fd, 4096n), 0);
  const bytes = new Uint8Array(4096).fill(fill);
  assert.equal(Number(lib.write(fd, bytes, 4096n)), 4096);
  assert.equal(lib.fcntl(fd, 1033, /* F_ADD_SEALS */ 2 /* SHRINK */), 0);
  return fd;
}

/**
 * One "pipeline": listens on `@socket`, sends CAPS and one buffer filled
 * with `fill` to the bridge, and once `finish()` is called ends with EOS
 * (`"eos"`) or by vanishing (`"crash"`: the connection and the socket just
 * close). The publisher keeps the last frame for late subscribers, so the
 * buffer is not given back before the pipeline ends.
 */
function pipeline(socket: string, fill: number, end: "eos" | "crash") {
  const server = new UnixFdServer(`@${socket}`, () => true);
  const fd = frameMemfd(fill);
  const finished = Promise.withResolvers<void>();
  const done = (async () => {
    try {
      const sink = await within(server.accept(), 20_000, "the bridge to (re)connect");
      try {
        await sink.send(encodeCaps(CAPS));
        await sink.send(encodeNewBuffer({ id: 1n, memories: [{ size: 1024, offset: 0 }] }), [fd]);
        await finished.promise;
        if (end === "eos") await sink.send(encodeEos());
      } finally {
        sink.close();
      }
    } finally {
      server.close();
      libc().close(fd);
    }
  })();
  return {
    finish: () => {
      finished.resolve();
      return done;
    },
  };
}

Deno.test({
  name: "from-gst with reconnect: comes back after EOS and after the sink vanished",
  ignore: !linux,
  async fn() {
    const socket = uniqueName("gst-again");
    const name = uniqueName("gst-again-pub");
    using publisher = publish(name);
    const controller = new AbortController();
    let connections = 0;
    const forwarding = GstSourceBridge.forward(`@${socket}`, publisher, {
      timeout: 10_000,
      reconnect: true,
      signal: controller.signal,
      onConnect: () => connections++,
    });
    forwarding.catch(() => {});
    using subscription = await subscribe(name, { timeout: 5000 });
    try {
      for (const [fill, end] of [[0x11, "eos"], [0x22, "crash"], [0x33, "eos"]] as const) {
        const running = pipeline(socket, fill, end);
        const frame = await subscription.receive({ timeout: 20_000 });
        assert.equal(frame.surface.bytes(0)[0], fill, "the new pipeline's frame");
        frame.close();
        await running.finish();
      }
      assert.equal(connections, 3);
    } finally {
      controller.abort();
      await within(forwarding.catch(() => {}), 10_000, "forward() to end when aborted");
    }
  },
});

Deno.test({
  name: "cli from-gst --reconnect: a restarted pipeline's frames reach the subscribers",
  ignore: !linux,
  async fn() {
    const socket = uniqueName("gst-cli-again");
    const name = uniqueName("gst-cli-again-pub");
    const first = pipeline(socket, 0x44, "eos");
    await using bridge = new Child(Deno.execPath(), [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      new URL("../cli/main.ts", import.meta.url).pathname,
      "from-gst",
      `@${socket}`,
      name,
      "--reconnect",
      "--interval",
      "200",
    ]);
    using subscription = await subscribe(name, { timeout: 20_000 });
    {
      const frame = await subscription.receive({ timeout: 20_000 });
      assert.equal(frame.surface.bytes(0)[0], 0x44);
      frame.close();
      await first.finish();
    }
    // The pipeline ended with EOS; a new one on the same socket is picked up.
    const second = pipeline(socket, 0x55, "crash");
    const frame = await subscription.receive({ timeout: 20_000 });
    assert.equal(frame.surface.bytes(0)[0], 0x55, "the restarted pipeline's frame");
    frame.close();
    await second.finish();
    await bridge.line(/connections 2/, 10_000);
    bridge.process.kill("SIGINT");
    assert.equal((await bridge.exit(10_000)).code, 0, bridge.stderr);
  },
});
