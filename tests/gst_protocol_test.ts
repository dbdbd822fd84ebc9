import assert from "node:assert/strict";
import { decodeClientMessage, decodeCommandHeader, decodeSinkMessage } from "../src/gst/decode.ts";
import { decodeMetas } from "../src/gst/meta_decode.ts";
import {
  CLOCK_TIME_NONE,
  encodeCaps,
  encodeEos,
  encodeMeta,
  encodeNewBuffer,
  encodeRelease,
  GstProtocolError,
} from "../src/gst/protocol.ts";
import { UnixFdFramer } from "../src/gst/framer.ts";
import {
  capsOf,
  defaultGstLayout,
  geometryOfGstBuffer,
  matchesDefaultLayout,
  parseVideoCaps,
} from "../src/gst/caps.ts";
import { computeGeometry, validateGeometry } from "../src/core/geometry.ts";

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  return new Uint8Array(clean.match(/../g)!.map((b) => parseInt(b, 16)));
}

// Written by hand from gstunixfd.h (Command, NewBufferPayload, MemoryPayload), little-endian.
const NEW_BUFFER_GOLDEN = unhex(`
  00000000 48000000
  0807060504030201 e803000000000000 ffffffffffffffff 15cd5b0700000000
  0500000000000000 0600000000000000 40000000 00 01 0000
  00201c0000000000 4000000000000000
`);

Deno.test("gst protocol: golden bytes of a NEW_BUFFER with one memory", () => {
  const encoded = encodeNewBuffer({
    id: 0x0102030405060708n,
    pts: 1000n,
    duration: 123456789n,
    offset: 5n,
    offsetEnd: 6n,
    flags: 0x40,
    memories: [{ size: 1843200, offset: 64 }],
  });
  assert.equal(hex(encoded), hex(NEW_BUFFER_GOLDEN));
  const { command, payloadSize } = decodeCommandHeader(encoded);
  assert.deepEqual([command, payloadSize], [0, 72]);
  const message = decodeSinkMessage(command, encoded.subarray(8), [42]);
  assert.equal(message.type, "new-buffer");
  if (message.type !== "new-buffer") return;
  assert.deepEqual(message.fds, [42]);
  const b = message.buffer;
  assert.equal(b.id, 0x0102030405060708n);
  assert.equal(b.pts, 1000n);
  assert.equal(b.dts, CLOCK_TIME_NONE);
  assert.equal(b.duration, 123456789n);
  assert.equal(b.offset, 5n);
  assert.equal(b.offsetEnd, 6n);
  assert.equal(b.flags, 0x40);
  assert.equal(b.memoryType, "memfd");
  assert.deepEqual(b.memories, [{ size: 1843200, offset: 64 }]);
  assert.deepEqual(b.metas, []);
  assert.equal(b.videoMeta, undefined);
});

Deno.test("gst protocol: golden bytes of CAPS, EOS and RELEASE_BUFFER", () => {
  assert.equal(
    hex(encodeCaps("video/x-raw")),
    "020000000c000000" + hex(new TextEncoder().encode("video/x-raw")) + "00",
  );
  assert.equal(hex(encodeEos()), "0300000000000000");
  assert.equal(hex(encodeRelease(0xdeadbeefn)), "0100000008000000efbeadde00000000");
  assert.deepEqual(decodeSinkMessage(2, unhex("61626300"), []), { type: "caps", caps: "abc" });
  assert.deepEqual(decodeSinkMessage(3, new Uint8Array(), []), { type: "eos" });
  assert.deepEqual(decodeSinkMessage(77, new Uint8Array(3), []), { type: "unknown", command: 77 });
  assert.deepEqual(decodeClientMessage(1, unhex("efbeadde00000000"), []), {
    type: "release-buffer",
    id: 0xdeadbeefn,
  });
  assert.deepEqual(decodeClientMessage(9, new Uint8Array(), []), { type: "unknown", command: 9 });
});

Deno.test("gst protocol: golden bytes of a serialized GstVideoMeta (gst_meta_serialize) are decoded", () => {
  // [u32 total][u32 name_len]["GstVideoMeta\0"][u8 version] then video_meta_serialize's
  // flags, format, width, height, n_planes, offsets (u64), strides (i32), 4 paddings, stride_aligns.
  const meta = unhex(`
    5a000000 0c000000 477374566964656f 4d657461 00 00
    00000000 17000000 42010000 f0000000 02000000
    0000000000000000 402f010000000000
    44010000 44010000
    00000000 00000000 00000000 00000000
    00000000 00000000
  `);
  assert.equal(meta.length, 0x5a);
  assert.deepEqual(encodeMeta("GstVideoMeta", 0, meta.subarray(22)), meta);
  const message = decodeSinkMessage(
    0,
    encodeNewBuffer({ id: 1n, memories: [{ size: 116640, offset: 0 }], metas: [meta] }).subarray(8),
    [3],
  );
  assert.equal(message.type, "new-buffer");
  if (message.type !== "new-buffer") return;
  assert.deepEqual(message.buffer.videoMeta, {
    flags: 0,
    format: 23,
    width: 322,
    height: 240,
    offsets: [0, 77632],
    strides: [324, 324],
  });
  assert.equal(message.buffer.metas[0].name, "GstVideoMeta");
});

Deno.test("gst protocol: hostile messages are GstProtocolErrors with a reason", () => {
  const valid = encodeNewBuffer({ id: 1n, memories: [{ size: 10, offset: 0 }] }).subarray(8);
  const cases: [string, () => unknown][] = [
    ["SHORT_PAYLOAD", () => decodeSinkMessage(0, valid.subarray(0, 55), [1])],
    ["SHORT_PAYLOAD", () => decodeSinkMessage(0, valid.subarray(0, 71), [1])],
    ["FD_COUNT", () => decodeSinkMessage(0, valid, [])],
    ["FD_COUNT", () => decodeSinkMessage(0, valid, [1, 2])],
    ["BAD_MEMORY_TYPE", () => {
      const bad = valid.slice();
      bad[52] = 2;
      return decodeSinkMessage(0, bad, [1]);
    }],
    ["SHORT_PAYLOAD", () => {
      const bad = valid.slice();
      new DataView(bad.buffer).setBigUint64(56, 1n << 60n, true); // a size no JS number holds exactly
      return decodeSinkMessage(0, bad, [1]);
    }],
    ["BAD_META", () => {
      const bad = new Uint8Array(valid.length + 4);
      bad.set(valid);
      new DataView(bad.buffer).setUint16(54, 1, true); // one meta announced, 4 bytes present
      return decodeSinkMessage(0, bad, [1]);
    }],
    [
      "BAD_META",
      () => decodeMetas(encodeMeta("x", 0, new Uint8Array(4)).map((b, i) => i === 0 ? 200 : b), 1),
    ],
    ["BAD_CAPS", () => decodeSinkMessage(2, unhex("616263"), [])],
    ["BAD_CAPS", () => decodeSinkMessage(2, unhex("610062 00"), [])],
    ["BAD_CAPS", () => decodeSinkMessage(2, unhex("ff00"), [])],
    ["UNEXPECTED_FDS", () => decodeSinkMessage(2, unhex("6100"), [5])],
    ["UNEXPECTED_FDS", () => decodeClientMessage(1, new Uint8Array(8), [5])],
    ["WRONG_DIRECTION", () => decodeSinkMessage(1, new Uint8Array(8), [])],
    ["WRONG_DIRECTION", () => decodeClientMessage(0, valid, [])],
    ["SHORT_PAYLOAD", () => decodeClientMessage(1, new Uint8Array(7), [])],
    ["PAYLOAD_TOO_LARGE", () => decodeCommandHeader(unhex("00000000 ffffffff"))],
  ];
  for (const [reason, run] of cases) {
    assert.throws(
      run,
      (error) => error instanceof GstProtocolError && error.reason === reason,
      reason,
    );
  }
});

Deno.test("gst protocol: the framer cuts a stream at message boundaries and keeps fds with their message", () => {
  const stream = [
    encodeCaps("video/x-raw, format=(string)BGRA, width=(int)2, height=(int)2"),
    encodeNewBuffer({ id: 7n, memories: [{ size: 16, offset: 0 }] }),
    encodeEos(),
  ];
  const framer = new UnixFdFramer();
  const got: string[] = [];
  for (const [i, message] of stream.entries()) {
    // One byte at a time, descriptors with the first byte, as the kernel delivers them.
    for (let at = 0; at < message.length; at++) {
      assert.ok(framer.want() >= 1);
      const framed = framer.feed(message.subarray(at, at + 1), at === 0 && i === 1 ? [9] : []);
      if (!framed) continue;
      const decoded = decodeSinkMessage(framed.command, framed.payload, framed.fds);
      got.push(
        decoded.type === "new-buffer"
          ? `buffer ${decoded.buffer.id} fds ${decoded.fds}`
          : decoded.type,
      );
    }
  }
  assert.deepEqual(got, ["caps", "buffer 7 fds 9", "eos"]);
  assert.ok(framer.atBoundary);
  assert.deepEqual(framer.takeFds(), []);
});

Deno.test("gst caps: videotestsrc caps map to formats; range picks 420v or 420f", () => {
  const caps = parseVideoCaps(
    "video/x-raw, format=(string)NV12, width=(int)1280, height=(int)720, framerate=(fraction)30/1, " +
      "multiview-mode=(string)mono, pixel-aspect-ratio=(fraction)1/1, interlace-mode=(string)progressive, " +
      "colorimetry=(string)bt709",
  );
  assert.deepEqual(
    [caps.format, caps.width, caps.height, caps.framerate],
    ["420v", 1280, 720, [30, 1]],
  );
  assert.equal(
    parseVideoCaps("video/x-raw,format=NV12,width=2,height=2,colorimetry=1:3:5:1").format,
    "420f",
  );
  assert.equal(
    parseVideoCaps("video/x-raw,format=(string)GRAY8,width=(int)3,height=(int)1").format,
    "L008",
  );
  assert.equal(parseVideoCaps("video/x-raw,format=I420,width=4,height=2").format, "y420");
  for (
    const bad of [
      "video/x-h264, width=(int)2, height=(int)2",
      "video/x-raw(memory:DMABuf), format=(string)NV12, width=(int)2, height=(int)2",
      "video/x-raw, format=(string)YUY2, width=(int)2, height=(int)2",
      "video/x-raw, format=(string)NV12, width=(int)3, height=(int)2",
      "video/x-raw, format=(string)BGRA",
    ]
  ) {
    assert.throws(() => parseVideoCaps(bad), GstProtocolError, bad);
  }
  // What the to-gst bridge announces parses back to the same format.
  for (const format of ["BGRA", "RGBA", "L008", "420v", "420f", "y420"] as const) {
    assert.equal(parseVideoCaps(capsOf(format, 64, 32, 30)).format, format);
  }
});

Deno.test("gst caps: GStreamer's default layout (rows to 4 bytes, planes back to back)", () => {
  assert.deepEqual(
    defaultGstLayout("y420", 322, 240).planes.map((p) => [p.bytesPerRow, p.offset]),
    [[324, 0], [164, 77760], [164, 97440]],
  );
  assert.equal(defaultGstLayout("y420", 322, 240).size, 117120);
  assert.deepEqual(
    defaultGstLayout("420v", 322, 240).planes.map((p) => [p.bytesPerRow, p.offset]),
    [[324, 0], [324, 77760]],
  );
  assert.equal(defaultGstLayout("420v", 322, 240).size, 116640);
  assert.equal(defaultGstLayout("BGRA", 322, 2).size, 2576);
  assert.equal(defaultGstLayout("L008", 5, 2).planes[0].bytesPerRow, 8);
  // surfaceport's 64-byte rows coincide with GStreamer's only for some widths.
  assert.ok(matchesDefaultLayout(computeGeometry(1920, 1080, "BGRA")));
  assert.ok(matchesDefaultLayout(computeGeometry(1280, 720, "420v")));
  assert.ok(!matchesDefaultLayout(computeGeometry(322, 240, "BGRA")));
  assert.ok(matchesDefaultLayout(computeGeometry(1920, 1080, "y420")));
  assert.ok(
    !matchesDefaultLayout(computeGeometry(1056, 64, "y420")),
    "chroma rows of 528 bytes: 576 in surfaceport",
  );
});

Deno.test("gst caps: a buffer's geometry comes from its GstVideoMeta when present, and must fit", () => {
  const caps = parseVideoCaps("video/x-raw,format=NV12,width=322,height=240");
  const plain = geometryOfGstBuffer(caps, undefined, 128, 116640, 120000);
  assert.equal(validateGeometry(plain), undefined);
  assert.deepEqual(plain.planes.map((p) => p.offset), [128, 128 + 77760]);
  const meta = {
    flags: 0,
    format: 23,
    width: 322,
    height: 240,
    offsets: [0, 92160],
    strides: [384, 384],
  };
  const strided = geometryOfGstBuffer(caps, meta, 0, 92160 + 384 * 120, 92160 + 384 * 120);
  assert.deepEqual(strided.planes.map((p) => [p.bytesPerRow, p.offset]), [[384, 0], [384, 92160]]);
  assert.throws(() => geometryOfGstBuffer(caps, undefined, 0, 1000, 1000), GstProtocolError);
  assert.throws(() => geometryOfGstBuffer(caps, undefined, 4096, 116640, 116640), GstProtocolError);
  assert.throws(
    () => geometryOfGstBuffer(caps, { ...meta, format: 2 }, 0, 200000, 200000),
    GstProtocolError,
  );
  assert.throws(
    () => geometryOfGstBuffer(caps, { ...meta, strides: [100, 384] }, 0, 200000, 200000),
    GstProtocolError,
  );
});
