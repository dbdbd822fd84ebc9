/**
 * from-gst's copy path (a buffer whose planes lie in several memories)
 * against a unixfdsink whose GstVideoMeta lies about the strides: the plan is
 * checked before anything is allocated, and reads are bounded whatever the
 * stride, so a lie costs a `GstProtocolError`, never a `RangeError` or
 * gigabytes of memory.
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { GstSourceBridge } from "../src/gst/from_gst.ts";
import { COPY_READ_MAX, gstVideoFormatNumber, parseVideoCaps, planCopy } from "../src/gst/caps.ts";
import { UnixFdServer } from "../src/gst/socket.ts";
import type { UnixFdConnection } from "../src/gst/unixfd_connection.ts";
import {
  encodeCaps,
  encodeMeta,
  encodeNewBuffer,
  GstProtocolError,
  type GstVideoMetaRecord,
} from "../src/gst/protocol.ts";
import { pair, uniqueName } from "./helpers.ts";
import { within } from "./gst_helpers.ts";

const WIDTH = 64, HEIGHT = 256;
const CAPS = `video/x-raw, format=(string)BGRA, width=(int)${WIDTH}, height=(int)${HEIGHT}`;
const ROW = WIDTH * 4;

/** A serialized GstVideoMeta (version 0) of one BGRA plane. */
function videoMeta(offset: number, stride: number): Uint8Array {
  const payload = new Uint8Array(36 + 16);
  const view = new DataView(payload.buffer);
  view.setInt32(4, gstVideoFormatNumber("BGRA")!, true);
  view.setUint32(8, WIDTH, true);
  view.setUint32(12, HEIGHT, true);
  view.setUint32(16, 1, true);
  view.setBigUint64(20, BigInt(offset), true);
  view.setInt32(28, stride, true);
  return encodeMeta("GstVideoMeta", 0, payload);
}

/** A memfd of `size` bytes (sparse) whose first bytes are `content`. */
function memfd(size: number, content: Uint8Array[] = []): number {
  const lib = libc();
  const fd = lib.memfd_create(new TextEncoder().encode("stride-test\0"), 3);
  assert.ok(fd >= 0);
  assert.equal(lib.ftruncate(fd, BigInt(size)), 0);
  for (const part of content) {
    assert.equal(Number(lib.write(fd, part, BigInt(part.length))), part.length);
  }
  return fd;
}

async function withSink(
  body: (sink: UnixFdConnection, bridge: GstSourceBridge, run: Promise<void>) => Promise<void>,
): Promise<void> {
  const name = uniqueName("stride");
  const server = new UnixFdServer(`@${name}`, () => true);
  const accepted = server.accept();
  const bridge = await GstSourceBridge.connect(`@${name}`, { timeout: 2000 });
  const sink = await accepted;
  using channels = await pair();
  try {
    const run = bridge.run(channels.client);
    run.catch(() => {});
    await sink.send(encodeCaps(CAPS));
    await body(sink, bridge, run);
    void channels;
  } finally {
    bridge.close();
    sink.close();
    server.close();
  }
}

/** Sends a two-memory buffer (so the bridge copies) whose first memory is `fd`. */
async function sendTwoMemories(
  sink: UnixFdConnection,
  fd: number,
  size: number,
  meta: Uint8Array,
): Promise<void> {
  const spare = memfd(4096);
  try {
    await sink.send(
      encodeNewBuffer({
        id: 1n,
        memories: [{ size, offset: 0 }, { size: 4096, offset: 0 }],
        metas: [meta],
      }),
      [fd, spare],
    );
  } finally {
    libc().close(spare);
  }
}

async function expectBadMeta(run: Promise<void>): Promise<void> {
  const error = await within(run.then(() => undefined, (e) => e), 10000, "the bridge to fail");
  assert.ok(
    error instanceof GstProtocolError && error.reason === "BAD_META",
    `expected GstProtocolError BAD_META, got ${error?.name}: ${error?.message}`,
  );
}

Deno.test("from-gst copy: a stride of 2^31-1 is GstProtocolError BAD_META, not a RangeError", async () => {
  const fd = memfd(ROW * HEIGHT);
  try {
    await withSink(async (sink, _bridge, run) => {
      await sendTwoMemories(sink, fd, ROW * HEIGHT, videoMeta(0, 0x7fff_ffff));
      await expectBadMeta(run);
    });
  } finally {
    libc().close(fd);
  }
});

Deno.test("from-gst copy: a stride of 2^24 over a small memory is GstProtocolError BAD_META", async () => {
  const fd = memfd(ROW * HEIGHT);
  try {
    await withSink(async (sink, _bridge, run) => {
      await sendTwoMemories(sink, fd, ROW * HEIGHT, videoMeta(0, 1 << 24));
      await expectBadMeta(run);
    });
  } finally {
    libc().close(fd);
  }
});

Deno.test("from-gst copy: a huge stride over a sparse file that holds it is copied in bounded memory", async () => {
  const stride = 1 << 22; // 256 rows 4 MiB apart: a 1 GiB plane
  const span = stride * (HEIGHT - 1) + ROW;
  const fd = memfd(span, [new Uint8Array(stride).fill(0x11), new Uint8Array(ROW).fill(0x77)]);
  try {
    const name = uniqueName("stride");
    const server = new UnixFdServer(`@${name}`, () => true);
    const accepted = server.accept();
    const bridge = await GstSourceBridge.connect(`@${name}`, { timeout: 2000 });
    const sink = await accepted;
    using channels = await pair();
    try {
      const run = bridge.run(channels.client);
      run.catch(() => {});
      await sink.send(encodeCaps(CAPS));
      const before = Deno.memoryUsage().rss;
      await sendTwoMemories(sink, fd, span, videoMeta(0, stride));
      using frame = await channels.server.receive({ timeout: 20000 });
      const grown = Deno.memoryUsage().rss - before;
      const bytes = frame.surface.bytes(0);
      const rowStride = frame.surface.planes[0].bytesPerRow;
      assert.ok(bytes.subarray(0, ROW).every((b) => b === 0x11), "row 0");
      assert.ok(bytes.subarray(rowStride, rowStride + ROW).every((b) => b === 0x77), "row 1");
      assert.ok(bytes.subarray(2 * rowStride, 2 * rowStride + ROW).every((b) => b === 0), "row 2");
      assert.ok(
        grown < 4 * COPY_READ_MAX,
        `RSS grew ${(grown / 2 ** 20).toFixed(0)} MiB copying a ${ROW * HEIGHT}-byte frame`,
      );
    } finally {
      bridge.close();
      sink.close();
      server.close();
    }
  } finally {
    libc().close(fd);
  }
});

Deno.test("planCopy: every read it plans is bounded and inside one declared memory", () => {
  const caps = parseVideoCaps(CAPS);
  const meta = (stride: number, offset = 0): GstVideoMetaRecord => ({
    flags: 0,
    format: gstVideoFormatNumber("BGRA")!,
    width: WIDTH,
    height: HEIGHT,
    offsets: [offset],
    strides: [stride],
  });
  for (const stride of [ROW, ROW + 4, 1 << 16, 1 << 22, 1 << 24, 0x7fff_ffff]) {
    for (const size of [ROW * HEIGHT, 2 ** 40, 2 ** 53 - 1]) {
      let plan;
      try {
        plan = planCopy(caps, meta(stride), [{ size, offset: 0 }, { size: 16, offset: 0 }]);
      } catch (error) {
        assert.ok(error instanceof GstProtocolError && error.reason === "BAD_META", String(error));
        assert.ok(stride * (HEIGHT - 1) + ROW > size, `refused a plane that fits: ${stride}`);
        continue;
      }
      const [plane] = plan;
      assert.ok(plane.stride * (plane.rowsPerRead - 1) + plane.row <= Math.max(COPY_READ_MAX, ROW));
      assert.ok(plane.fileOffset + plane.span <= size);
    }
  }
  for (const bad of [meta(ROW - 1), meta(-ROW), meta(ROW, -1)]) {
    assert.throws(() => planCopy(caps, bad, [{ size: 2 ** 40, offset: 0 }]), GstProtocolError);
  }
});
