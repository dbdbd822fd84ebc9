/**
 * The bridge against fake GStreamer peers written from the protocol (no
 * GStreamer needed, so these always run): use tracking through the bridge,
 * hostile sinks and sources, credentials, descriptor leaks.
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { PeerClosedError, PeerRefusedError, ProtocolError, Surface, SurfacePool } from "../mod.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import { connectUnixFd, UnixFdServer } from "../src/gst/socket.ts";
import type { UnixFdConnection } from "../src/gst/unixfd_connection.ts";
import {
  encodeCaps,
  encodeCommandHeader,
  encodeEos,
  encodeNewBuffer,
  encodeRelease,
  type GstMessage,
  GstProtocolError,
} from "../src/gst/protocol.ts";
import { TimeoutError } from "../src/core/errors.ts";
import {
  fdTargets,
  openFds,
  pair,
  settleRuntimeFds,
  sleep,
  uniqueName,
  waitUntil,
} from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const F_ADD_SEALS = 1033, F_GET_SEALS = 1034;
const SEAL_SEAL = 1, SEAL_SHRINK = 2, SEAL_GROW = 4, SEAL_WRITE = 8;
const CAPS =
  "video/x-raw, format=(string)BGRA, width=(int)64, height=(int)4, framerate=(fraction)30/1";
const FRAME_BYTES = 64 * 4 * 4;

/** A memfd as GStreamer's GstShmAllocator makes it: sealed against shrinking only, sealing open. */
function gstMemfd(size = 4096, seals = SEAL_SHRINK, fill = 0x5a): number {
  const lib = libc();
  const fd = lib.memfd_create(
    new TextEncoder().encode("gst-test\0"),
    3, /* CLOEXEC | ALLOW_SEALING */
  );
  assert.ok(fd >= 0);
  assert.equal(lib.ftruncate(fd, BigInt(size)), 0);
  const bytes = new Uint8Array(size).fill(fill);
  assert.equal(Number(lib.write(fd, bytes, BigInt(size))), size);
  if (seals) assert.equal(lib.fcntl(fd, F_ADD_SEALS, seals), 0);
  return fd;
}

/** A received message as a plain object (a RELEASE_BUFFER arrives as a reused record). */
function plain(message: GstMessage): unknown {
  return message.type === "release-buffer" ? { type: message.type, id: message.id } : message;
}

/** A fake unixfdsink: the bridge connects to it. */
async function fakeSink(
  options: Parameters<typeof GstSourceBridge.connect>[1] = {},
): Promise<{ sink: UnixFdConnection; bridge: GstSourceBridge; server: UnixFdServer }> {
  const name = uniqueName("fakesink");
  const server = new UnixFdServer(`@${name}`, () => true);
  const accepted = server.accept();
  const bridge = await GstSourceBridge.connect(`@${name}`, { timeout: 2000, ...options });
  return { sink: await accepted, bridge, server };
}

async function sendBuffer(
  sink: UnixFdConnection,
  id: bigint,
  fd: number,
  size = FRAME_BYTES,
  offset = 0,
) {
  await sink.send(encodeNewBuffer({ id, offset: id, memories: [{ size, offset }] }), [fd]);
}

Deno.test("gst bridge: from-gst adopts GStreamer's memfd without a copy and holds the buffer until the consumer lets go", async () => {
  const { sink, bridge, server } = await fakeSink();
  using channels = await pair();
  const fd = gstMemfd();
  try {
    const running = bridge.run(channels.client);
    await sink.send(encodeCaps(CAPS));
    await sendBuffer(sink, 77n, fd);
    const frame = await channels.server.receive({ timeout: 5000 });
    assert.equal(frame.surface.bytes(0)[0], 0x5a, "the memfd's own bytes");
    assert.equal(frame.surface.planes[0].bytesPerRow, 256);
    assert.deepEqual(frame.meta, { pts: null, duration: null, offset: 77 });
    // The bridge added F_SEAL_GROW itself; sealing is still open for GStreamer's other uses.
    assert.equal(libc().fcntl(fd, F_GET_SEALS, 0), SEAL_SHRINK | SEAL_GROW);
    // Held: no RELEASE while the consumer has the frame.
    await assert.rejects(sink.receive(performance.now() + 400), TimeoutError);
    assert.equal(bridge.stats.outstanding, 1);
    frame.close();
    const release = await sink.receive(performance.now() + 5000);
    assert.deepEqual(plain(release), { type: "release-buffer", id: 77n });
    await sink.send(encodeEos());
    await within(running, 5000, "run to end at EOS");
    assert.match(Deno.inspect(bridge), /^GstSourceBridge .*caps: "BGRA 64x4"/s);
    assert.deepEqual(bridge.stats, {
      received: 1,
      forwarded: 1,
      copies: 0,
      dropped: 0,
      released: 1,
      outstanding: 0,
    });
  } finally {
    bridge.close();
    sink.close();
    server.close();
    libc().close(fd);
  }
});

Deno.test("gst bridge: from-gst holds at most maxOutstanding buffers and gives the rest back at once", async () => {
  const { sink, bridge, server } = await fakeSink({ maxOutstanding: 2 });
  using channels = await pair();
  const fds = [1, 2, 3, 4, 5].map(() => gstMemfd());
  try {
    const running = bridge.run(channels.client);
    await sink.send(encodeCaps(CAPS));
    for (const [i, fd] of fds.entries()) await sendBuffer(sink, BigInt(i + 1), fd);
    const held = [
      await channels.server.receive({ timeout: 5000 }),
      await channels.server.receive({ timeout: 5000 }),
    ];
    const released: bigint[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await sink.receive(performance.now() + 5000);
      if (m.type === "release-buffer") released.push(m.id);
    }
    assert.deepEqual(released.sort(), [3n, 4n, 5n]);
    assert.equal(bridge.stats.dropped, 3);
    for (const frame of held) frame.close();
    const back: bigint[] = [];
    for (let i = 0; i < 2; i++) {
      const m = await sink.receive(performance.now() + 5000);
      if (m.type === "release-buffer") back.push(m.id);
    }
    assert.deepEqual(back.sort(), [1n, 2n]);
    await sink.send(encodeEos());
    await within(running, 5000, "run to end");
  } finally {
    bridge.close();
    sink.close();
    server.close();
    for (const fd of fds) libc().close(fd);
  }
});

Deno.test("gst bridge: a hostile unixfdsink gets typed errors and leaks no descriptor", async () => {
  await settleRuntimeFds();
  const regularFile = (): number => {
    // A regular file of the right size: everything fits except that it is no memfd.
    const path = Deno.makeTempFileSync();
    Deno.writeFileSync(path, new Uint8Array(4096));
    const fd = libc().open(new TextEncoder().encode(path + "\0"), 2, /* O_RDWR */ 0);
    Deno.removeSync(path);
    return fd;
  };

  const cases: [string, (sink: UnixFdConnection) => Promise<unknown>, (e: unknown) => boolean][] = [
    ["not a memfd", async (sink) => {
      const fd = regularFile();
      await sink.send(encodeCaps(CAPS));
      await sendBuffer(sink, 1n, fd);
      libc().close(fd);
    }, (e) => e instanceof ProtocolError && e.reason === "NOT_SHARED_MEMORY"],
    ["sealing closed without F_SEAL_GROW", async (sink) => {
      const fd = gstMemfd(4096, SEAL_SHRINK | SEAL_SEAL);
      await sink.send(encodeCaps(CAPS));
      await sendBuffer(sink, 1n, fd);
      libc().close(fd);
    }, (e) => e instanceof ProtocolError && e.reason === "UNSEALED"],
    ["write-sealed", async (sink) => {
      const fd = gstMemfd(4096, SEAL_SHRINK | SEAL_WRITE);
      await sink.send(encodeCaps(CAPS));
      await sendBuffer(sink, 1n, fd);
      libc().close(fd);
    }, (e) => e instanceof ProtocolError],
    ["memory past the end of the memfd", async (sink) => {
      const fd = gstMemfd(4096);
      await sink.send(encodeCaps(CAPS));
      await sendBuffer(sink, 1n, fd, FRAME_BYTES, 4000);
      libc().close(fd);
    }, (e) => e instanceof GstProtocolError && e.reason === "BAD_META"],
    ["planes outside the memories of a multi-memory buffer", async (sink) => {
      const a = gstMemfd(), b = gstMemfd();
      await sink.send(encodeCaps(CAPS));
      await sink.send(
        encodeNewBuffer({ id: 1n, memories: [{ size: 10, offset: 0 }, { size: 10, offset: 0 }] }),
        [a, b],
      );
      libc().close(a);
      libc().close(b);
    }, (e) => e instanceof GstProtocolError && e.reason === "BAD_META"],
    ["a memory read past the memfd's end", async (sink) => {
      const a = gstMemfd(4096), b = gstMemfd(4096);
      await sink.send(encodeCaps(CAPS));
      await sink.send(
        encodeNewBuffer({
          id: 1n,
          memories: [{ size: FRAME_BYTES, offset: 4000 }, { size: 10, offset: 0 }],
        }),
        [a, b],
      );
      libc().close(a);
      libc().close(b);
    }, (e) => e instanceof GstProtocolError && e.reason === "BAD_META"],
    ["a buffer before any caps", async (sink) => {
      const fd = gstMemfd();
      await sendBuffer(sink, 1n, fd);
      libc().close(fd);
    }, (e) => e instanceof GstProtocolError && e.reason === "BAD_CAPS"],
    ["caps of an unsupported format", async (sink) => {
      const fd = gstMemfd();
      await sink.send(encodeCaps("video/x-raw, format=(string)YUY2, width=(int)64, height=(int)4"));
      await sendBuffer(sink, 1n, fd);
      libc().close(fd);
    }, (e) => e instanceof GstProtocolError && e.reason === "BAD_CAPS"],
    ["descriptors with a CAPS message", async (sink) => {
      const a = gstMemfd(), b = gstMemfd();
      await sink.send(encodeCaps(CAPS), [a, b]);
      libc().close(a);
      libc().close(b);
    }, (e) => e instanceof GstProtocolError && e.reason === "UNEXPECTED_FDS"],
    ["two descriptors for one memory", async (sink) => {
      const a = gstMemfd(), b = gstMemfd();
      await sink.send(encodeCaps(CAPS));
      await sink.send(encodeNewBuffer({ id: 1n, memories: [{ size: FRAME_BYTES, offset: 0 }] }), [
        a,
        b,
      ]);
      libc().close(a);
      libc().close(b);
    }, (e) => e instanceof GstProtocolError && e.reason === "FD_COUNT"],
    ["an absurd payload size", async (sink) => {
      const header = new Uint8Array(8);
      encodeCommandHeader(header, 2, 0xffffffff);
      await sink.send(header);
    }, (e) => e instanceof GstProtocolError && e.reason === "PAYLOAD_TOO_LARGE"],
    ["RELEASE_BUFFER from the sink", async (sink) => {
      await sink.send(encodeRelease(5n));
    }, (e) => e instanceof GstProtocolError && e.reason === "WRONG_DIRECTION"],
    ["the sink hangs up in the middle of a message", async (sink) => {
      const fd = gstMemfd();
      await sink.send(encodeCaps(CAPS));
      await sink.send(
        encodeNewBuffer({ id: 1n, memories: [{ size: FRAME_BYTES, offset: 0 }] }).subarray(0, 30),
        [fd],
      );
      libc().close(fd);
      sink.close();
    }, (e) => e instanceof Error && /middle of a message/.test(e.message)],
  ];
  for (const [what, misbehave, expected] of cases) {
    const baseline = openFds();
    const { sink, bridge, server } = await fakeSink();
    using channels = await pair();
    try {
      const running = bridge.run(channels.client);
      await misbehave(sink);
      const error = await within(running.then(() => undefined, (e) => e), 5000, what);
      assert.ok(expected(error), `${what}: ${error}`);
    } finally {
      bridge.close();
      sink.close();
      server.close();
    }
    channels[Symbol.dispose]();
    // run() settled: its release loop has ended and closed its descriptors.
    assert.deepEqual(fdTargets(baseline), [], `${what}: descriptors leaked`);
  }
});

Deno.test("gst bridge: from-gst refuses a unixfdsink its allowPeer rejects", async () => {
  const name = uniqueName("fakesink");
  using server = new UnixFdServer(`@${name}`, () => true);
  const accepted = server.accept();
  await assert.rejects(
    GstSourceBridge.connect(`@${name}`, { timeout: 2000, allowPeer: () => false }),
    PeerRefusedError,
  );
  (await accepted).close();
});

Deno.test("gst bridge: to-gst hands each client a locked descriptor and holds the frame until RELEASE_BUFFER", async () => {
  const name = uniqueName("fakesrc");
  const bridge = GstSinkBridge.listen(`@${name}`);
  using channels = await pair();
  using pool = new SurfacePool({ width: 64, height: 4, format: "BGRA", maxSurfaces: 2 });
  const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
  try {
    await bridge.waitForClient(2000);
    const running = bridge.run(channels.server);
    using surface = await pool.acquire({ timeout: 1000 });
    surface.bytes(0).fill(0x33);
    await channels.client.send(surface);
    const caps = await client.receive(performance.now() + 5000);
    assert.equal(caps.type, "caps");
    const message = await client.receive(performance.now() + 5000);
    assert.equal(message.type, "new-buffer");
    if (message.type !== "new-buffer") return;
    assert.deepEqual(message.buffer.memories, [{ size: FRAME_BYTES, offset: 0 }]);
    assert.equal(message.fds.length, 1);
    assert.equal(bridge.stats.zeroCopy, 1);
    const mapped = new Uint8Array(4);
    libc().read(message.fds[0], mapped, 4n);
    assert.deepEqual([...mapped], [0x33, 0x33, 0x33, 0x33], "the producer's own memory");
    assert.ok(surface.inUse);
    libc().close(message.fds[0]);
    await sleep(100);
    assert.equal(
      bridge.stats.outstanding,
      1,
      "no RELEASE_BUFFER yet: the bridge still holds the frame",
    );
    assert.ok(surface.inUse, "held by the bridge for GStreamer");
    await client.send(encodeRelease(message.buffer.id));
    await waitUntil(() => !surface.inUse, 2000, "the producer's surface to be free");
    assert.equal(bridge.stats.outstanding, 0);
    // A release for an id the client does not hold disconnects it, as unixfdsink does.
    await client.send(encodeRelease(999n));
    // Dropped: the connection ends (PeerClosedError), it does not merely stay quiet (TimeoutError).
    await assert.rejects(client.receive(performance.now() + 2000), PeerClosedError);
    await waitUntil(() => bridge.stats.clients === 0, 2000, "the bridge to drop the client");
    channels.client.close();
    await within(running, 5000, "to-gst to end");
  } finally {
    client.close();
    bridge.close();
  }
});

Deno.test("gst bridge: to-gst disconnects a client its allowPeer refuses", async () => {
  const name = uniqueName("fakesrc");
  const bridge = GstSinkBridge.listen(`@${name}`, { allowPeer: () => false });
  try {
    const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
    await assert.rejects(client.receive(performance.now() + 2000), /closed/);
    client.close();
    assert.equal(bridge.stats.clients, 0);
  } finally {
    bridge.close();
  }
});

Deno.test("gst bridge: to-gst copies a frame whose rows are not GStreamer's, once, and counts it", async () => {
  const name = uniqueName("fakesrc");
  const bridge = GstSinkBridge.listen(`@${name}`);
  using channels = await pair();
  const client = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
  try {
    await bridge.waitForClient(2000);
    const running = bridge.run(channels.server);
    using surface = Surface.create({ width: 6, height: 2, format: "BGRA" }); // rows of 24 bytes, padded to 64
    surface.bytes(0).set([1, 2, 3, 4], 0);
    surface.bytes(0).set([9, 8, 7, 6], 64);
    await channels.client.send(surface);
    await client.receive(performance.now() + 5000); // caps
    const message = await client.receive(performance.now() + 5000);
    assert.equal(message.type, "new-buffer");
    if (message.type !== "new-buffer") return;
    const data = new Uint8Array(48);
    libc().read(message.fds[0], data, 48n);
    libc().close(message.fds[0]);
    assert.deepEqual([...data.subarray(0, 4)], [1, 2, 3, 4]);
    assert.deepEqual(
      [...data.subarray(24, 28)],
      [9, 8, 7, 6],
      "row 1 right after row 0's 24 bytes",
    );
    assert.deepEqual(message.buffer.memories, [{ size: 48, offset: 0 }]);
    assert.equal(bridge.stats.copies, 1);
    await client.send(encodeRelease(message.buffer.id));
    channels.client.close();
    await within(running, 5000, "to-gst to end");
  } finally {
    client.close();
    bridge.close();
  }
});

Deno.test("gst bridge: to-gst serves several clients; a frame is held until each released it; a misbehaving client is dropped alone", async () => {
  await settleRuntimeFds();
  const baseline = openFds();
  const name = uniqueName("fakesrc");
  const bridge = GstSinkBridge.listen(`@${name}`);
  const channels = await pair();
  const a = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
  const b = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
  const rogue = await connectUnixFd(`@${name}`, () => true, performance.now() + 2000);
  try {
    await waitUntil(() => bridge.stats.clients === 3, 2000, "three clients");
    // A client that sends a buffer (only sinks do) is disconnected; the others stay.
    await rogue.send(encodeNewBuffer({ id: 1n, memories: [] }));
    await waitUntil(() => bridge.stats.clients === 2, 2000, "the rogue client to be dropped");
    const running = bridge.run(channels.server);
    using surface = Surface.create({ width: 64, height: 4, format: "BGRA" });
    await channels.client.send(surface);
    const ids: bigint[] = [];
    for (const client of [a, b]) {
      assert.equal((await client.receive(performance.now() + 5000)).type, "caps");
      const m = await client.receive(performance.now() + 5000);
      assert.equal(m.type, "new-buffer");
      if (m.type !== "new-buffer") return;
      for (const fd of m.fds) libc().close(fd);
      ids.push(m.buffer.id);
    }
    assert.equal(ids[0], ids[1], "one id per buffer, as unixfdsink does");
    await a.send(encodeRelease(ids[0]));
    await sleep(100);
    assert.equal(bridge.stats.outstanding, 1, "b still holds it");
    assert.ok(surface.inUse);
    await b.send(encodeRelease(ids[1]));
    await waitUntil(() => !surface.inUse, 2000, "the surface to be free");
    assert.equal(bridge.stats.released, 1);
    channels.client.close();
    await within(running, 5000, "to-gst to end");
    // EOS went to both clients.
    assert.equal((await a.receive(performance.now() + 2000)).type, "eos");
    assert.equal((await b.receive(performance.now() + 2000)).type, "eos");
  } finally {
    a.close();
    b.close();
    rogue.close();
    bridge.close();
    channels[Symbol.dispose]();
  }
  await sleep(50);
  assert.deepEqual(fdTargets(baseline), [], "descriptors leaked");
});

Deno.test("gst bridge: from-gst copies a buffer whose planes lie in several memories, gives it back at once, counts the copy", async () => {
  const { sink, bridge, server } = await fakeSink();
  using channels = await pair();
  const y = gstMemfd(4096, SEAL_SHRINK, 0x11);
  const uv = gstMemfd(4096, SEAL_SHRINK, 0x80);
  const notMemfd = libc().socket(1, 1, 0);
  try {
    const running = bridge.run(channels.client);
    await sink.send(encodeCaps("video/x-raw, format=(string)NV12, width=(int)64, height=(int)4"));
    // GStreamer's default NV12 layout: Y rows of 64 bytes, then CbCr at 256, here in a second memory.
    await sink.send(
      encodeNewBuffer({ id: 5n, memories: [{ size: 256, offset: 0 }, { size: 128, offset: 0 }] }),
      [y, uv],
    );
    const release = await sink.receive(performance.now() + 5000);
    assert.deepEqual(
      plain(release),
      { type: "release-buffer", id: 5n },
      "given back before anyone closed a frame",
    );
    using frame = await channels.server.receive({ timeout: 5000 });
    assert.equal(frame.surface.format, "420v");
    assert.ok(frame.surface.bytes(0).subarray(0, 256).every((b) => b === 0x11));
    assert.ok(frame.surface.bytes(1).subarray(0, 128).every((b) => b === 0x80));
    assert.equal(bridge.stats.copies, 1);
    // A memory that is not a memfd is refused (a FIFO or a slow file could block the read).
    await sink.send(
      encodeNewBuffer({ id: 6n, memories: [{ size: 256, offset: 0 }, { size: 128, offset: 0 }] }),
      [y, notMemfd],
    );
    const error = await within(running.then(() => undefined, (e) => e), 5000, "run to fail");
    assert.ok(
      error instanceof ProtocolError && error.reason === "NOT_SHARED_MEMORY",
      String(error),
    );
  } finally {
    bridge.close();
    sink.close();
    server.close();
    for (const fd of [y, uv, notMemfd]) libc().close(fd);
  }
});
