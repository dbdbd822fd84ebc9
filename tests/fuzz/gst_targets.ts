/**
 * Fuzz targets for the GStreamer unixfd codec (`src/gst/protocol.ts`,
 * `src/gst/caps.ts`): everything a hostile GStreamer-side process can put on
 * the socket.
 *
 * - `gst.unixfd.stream`: a mutated byte stream of messages is cut into
 *   random reads, with fake descriptor numbers arriving on random reads, fed
 *   to the framer and decoded in both roles. Only `GstProtocolError` may be
 *   thrown, and every descriptor fed is accounted for exactly once: handed
 *   out with an accepted NEW_BUFFER (as many as it has memories), or given
 *   back for closing with the failing message or by the framer.
 * - `gst.geometry`: an accepted NEW_BUFFER's memory records and video meta,
 *   against the caps and a random file size, give a geometry that passes
 *   `validateGeometry`, or a `GstProtocolError`.
 * - `gst.planCopy`: the copy path's plan for a NEW_BUFFER of several
 *   memories (a lying GstVideoMeta stride or offset included) puts every
 *   plane inside one declared memory and never reads more than
 *   `COPY_READ_MAX` bytes (or one row) at once, or is a `GstProtocolError`.
 * - `gst.parseVideoCaps`: mutated caps strings give a parsed value or a
 *   `GstProtocolError`.
 *
 * @module
 */

import { validateGeometry } from "../../src/core/geometry.ts";
import {
  COPY_READ_MAX,
  geometryOfGstBuffer,
  parseVideoCaps,
  planCopy,
} from "../../src/gst/caps.ts";
import { decodeClientMessage, decodeSinkMessage } from "../../src/gst/decode.ts";
import {
  encodeCaps,
  encodeEos,
  encodeMeta,
  encodeNewBuffer,
  encodeRelease,
  GstProtocolError,
} from "../../src/gst/protocol.ts";
import { UnixFdFramer } from "../../src/gst/framer.ts";
import type { FuzzTarget } from "./contracts.ts";
import type { Field, Xorshift } from "./mutate.ts";

class Finding extends Error {}

function videoMetaPayload(
  format: number,
  width: number,
  height: number,
  offsets: number[],
  strides: number[],
) {
  const n = offsets.length;
  const bytes = new Uint8Array(36 + n * 16);
  const view = new DataView(bytes.buffer);
  view.setInt32(4, format, true);
  view.setUint32(8, width, true);
  view.setUint32(12, height, true);
  view.setUint32(16, n, true);
  offsets.forEach((o, i) => view.setBigUint64(20 + 8 * i, BigInt(o), true));
  strides.forEach((s, i) => view.setInt32(20 + 8 * n + 4 * i, s, true));
  return bytes;
}

const CAPS_NV12 = "video/x-raw, format=(string)NV12, width=(int)320, height=(int)240, " +
  "framerate=(fraction)30/1, colorimetry=(string)bt709";
const CAPS_BGRA = "video/x-raw, format=(string)BGRA, width=(int)322, height=(int)2";

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function newBufferSeed(withMeta: boolean): Uint8Array {
  return encodeNewBuffer({
    id: 0x5566778899n,
    pts: 1_000_000n,
    duration: 33_333_333n,
    offset: 7n,
    memories: [{ size: 320 * 240 * 3 / 2, offset: 0 }],
    metas: withMeta
      ? [encodeMeta("GstVideoMeta", 0, videoMetaPayload(23, 320, 240, [0, 320 * 240], [320, 320]))]
      : [],
  });
}

function streamSeeds(): Uint8Array[] {
  return [
    concat([encodeCaps(CAPS_NV12), newBufferSeed(false), newBufferSeed(true), encodeEos()]),
    concat([encodeCaps(CAPS_BGRA), newBufferSeed(true)]),
    concat([encodeRelease(42n), encodeRelease(43n)]),
    newBufferSeed(true),
  ];
}

/** Offsets of the fields of a NEW_BUFFER at the start of a seed (after an 8-byte header). */
const STREAM_FIELDS: readonly Field[] = [
  { offset: 0, size: 4 },
  { offset: 4, size: 4 },
  { offset: 8 + 48, size: 4 },
  { offset: 8 + 52, size: 1 },
  { offset: 8 + 53, size: 1 },
  { offset: 8 + 54, size: 2 },
  { offset: 8 + 56, size: 8 },
  { offset: 8 + 64, size: 8 },
  { offset: 8 + 72, size: 4 },
  { offset: 8 + 76, size: 4 },
];

let nextFakeFd = 100_000;

function runStream(input: Uint8Array, rng: Xorshift): string {
  const framer = new UnixFdFramer(1 << 16);
  const fed = new Set<number>();
  const accounted = new Set<number>();
  const account = (fds: readonly number[], how: string) => {
    for (const fd of fds) {
      if (!fed.has(fd)) throw new Finding(`${how}: fd ${fd} was never fed`);
      if (accounted.has(fd)) throw new Finding(`${how}: fd ${fd} handed out twice`);
      accounted.add(fd);
    }
  };
  const role = rng.chance(0.5) ? "client" : "server";
  let outcome = "ok";
  let at = 0;
  try {
    while (at < input.length) {
      const n = Math.min(framer.want(), 1 + rng.below(input.length - at), input.length - at);
      const fds: number[] = [];
      for (let i = rng.chance(0.3) ? rng.below(4) : 0; i > 0; i--) {
        const fd = nextFakeFd++;
        fds.push(fd);
        fed.add(fd);
      }
      const framed = framer.feed(input.subarray(at, at + n), fds);
      at += n;
      if (!framed) continue;
      try {
        const message = role === "client"
          ? decodeSinkMessage(framed.command, framed.payload, framed.fds)
          : decodeClientMessage(framed.command, framed.payload, framed.fds);
        if (message.type === "new-buffer") {
          if (message.fds.length !== message.buffer.memories.length) {
            throw new Finding(
              `accepted NEW_BUFFER with ${message.fds.length} fds for ${message.buffer.memories.length} memories`,
            );
          }
          account(message.fds, "accepted");
        } else if (framed.fds.length > 0) {
          throw new Finding(`accepted ${message.type} that came with ${framed.fds.length} fds`);
        }
      } catch (error) {
        account(framed.fds, "rejected message");
        throw error;
      }
    }
  } catch (error) {
    if (error instanceof Finding) throw error;
    if (!(error instanceof GstProtocolError)) {
      throw new Finding(`threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
    }
    outcome = `protocol:${error.reason}`;
  }
  account(framer.takeFds(), "left in the framer");
  for (const fd of fed) {
    if (!accounted.has(fd)) {
      throw new Finding(`fd ${fd} was lost (neither handed out nor given back)`);
    }
  }
  return outcome;
}

function runGeometry(input: Uint8Array, rng: Xorshift): string {
  const caps = parseVideoCaps(rng.chance(0.5) ? CAPS_NV12 : CAPS_BGRA);
  const framer = new UnixFdFramer(1 << 16);
  let framed;
  try {
    let at = 0;
    while (at < input.length && !framed) {
      const n = Math.min(framer.want(), input.length - at);
      framed = framer.feed(
        input.subarray(at, at + n),
        at === 0 ? [1, 2, 3].slice(0, 1 + rng.below(2)) : [],
      );
      at += n;
    }
    if (!framed) return "incomplete";
    const message = decodeSinkMessage(framed.command, framed.payload, framed.fds);
    if (message.type !== "new-buffer") return message.type;
    const memory = message.buffer.memories[0];
    if (!memory) return "no-memory";
    const fileSize = rng.pick([memory.offset + memory.size, 4096, 1 << 20, 0, rng.next()]);
    const geometry = geometryOfGstBuffer(
      caps,
      message.buffer.videoMeta,
      memory.offset,
      memory.size,
      fileSize,
    );
    const problem = validateGeometry(geometry);
    if (problem) throw new Finding(`geometryOfGstBuffer accepted an invalid geometry: ${problem}`);
    return "ok";
  } catch (error) {
    if (error instanceof Finding) throw error;
    if (error instanceof GstProtocolError) return `protocol:${error.reason}`;
    throw new Finding(`threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
  }
}

/** A NEW_BUFFER of two memories: NV12's Y plane in the first, CbCr in the second. */
function twoMemorySeed(): Uint8Array {
  return encodeNewBuffer({
    id: 9n,
    memories: [{ size: 320 * 240, offset: 0 }, { size: 320 * 120, offset: 4096 }],
    metas: [
      encodeMeta("GstVideoMeta", 0, videoMetaPayload(23, 320, 240, [0, 320 * 240], [320, 320])),
    ],
  });
}

function runCopyPlan(input: Uint8Array, rng: Xorshift): string {
  const caps = parseVideoCaps(rng.chance(0.5) ? CAPS_NV12 : CAPS_BGRA);
  const framer = new UnixFdFramer(1 << 16);
  let framed;
  try {
    let at = 0;
    while (at < input.length && !framed) {
      const n = Math.min(framer.want(), input.length - at);
      framed = framer.feed(
        input.subarray(at, at + n),
        at === 0 ? [1, 2, 3].slice(0, 1 + rng.below(3)) : [],
      );
      at += n;
    }
    if (!framed) return "incomplete";
    const message = decodeSinkMessage(framed.command, framed.payload, framed.fds);
    if (message.type !== "new-buffer") return message.type;
    const memories = message.buffer.memories;
    for (const plane of planCopy(caps, message.buffer.videoMeta, memories)) {
      const chunk = plane.stride * (plane.rowsPerRead - 1) + plane.row;
      if (chunk > Math.max(COPY_READ_MAX, plane.row)) {
        throw new Finding(`planCopy plans a ${chunk}-byte read (stride ${plane.stride})`);
      }
      const memory = memories[plane.memory];
      if (
        !(plane.fileOffset >= memory.offset &&
          plane.fileOffset + plane.span <= memory.offset + memory.size)
      ) {
        throw new Finding(`planCopy reads outside memory ${plane.memory}`);
      }
    }
    return "ok";
  } catch (error) {
    if (error instanceof Finding) throw error;
    if (error instanceof GstProtocolError) return `protocol:${error.reason}`;
    throw new Finding(`threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
  }
}

function runCaps(input: Uint8Array): string {
  const text = new TextDecoder().decode(input);
  try {
    const caps = parseVideoCaps(text);
    if (!(caps.width >= 1 && caps.height >= 1 && Number.isInteger(caps.width))) {
      throw new Finding(`parseVideoCaps accepted ${caps.width}x${caps.height}`);
    }
    return "ok";
  } catch (error) {
    if (error instanceof Finding) throw error;
    if (error instanceof GstProtocolError) return `protocol:${error.reason}`;
    throw new Finding(`threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
  }
}

/** The GStreamer codec's fuzz targets, added to the shared fuzzer's list. */
export const GST_TARGETS: readonly FuzzTarget[] = [
  {
    name: "gst.unixfd.stream",
    seeds: streamSeeds,
    fields: STREAM_FIELDS,
    run: (input, rng) => {
      try {
        return runStream(input, rng);
      } catch (error) {
        if (error instanceof Finding) throw new Error(error.message);
        throw error;
      }
    },
  },
  {
    name: "gst.geometry",
    seeds: () => [newBufferSeed(true), newBufferSeed(false)],
    fields: STREAM_FIELDS,
    run: (input, rng) => {
      try {
        return runGeometry(input, rng);
      } catch (error) {
        if (error instanceof Finding) throw new Error(error.message);
        throw error;
      }
    },
  },
  {
    name: "gst.planCopy",
    seeds: () => [twoMemorySeed(), newBufferSeed(true)],
    fields: STREAM_FIELDS,
    run: (input, rng) => {
      try {
        return runCopyPlan(input, rng);
      } catch (error) {
        if (error instanceof Finding) throw new Error(error.message);
        throw error;
      }
    },
  },
  {
    name: "gst.parseVideoCaps",
    seeds: () =>
      [CAPS_NV12, CAPS_BGRA, "video/x-raw, format=(string)I420, width=(int)2, height=(int)2"]
        .map((s) => new TextEncoder().encode(s)),
    fields: [],
    run: (input) => {
      try {
        return runCaps(input);
      } catch (error) {
        if (error instanceof Finding) throw new Error(error.message);
        throw error;
      }
    },
  },
];
