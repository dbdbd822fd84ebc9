/**
 * Fuzz targets for the macOS mach message decoders (`src/darwin/messages.ts`,
 * `src/darwin/structs.ts`), on messages as a peer and the kernel's trailer
 * leave them in the receive buffer.
 *
 * - `darwin.decodeReceived` never throws: what it accepts has a size, a
 *   trailer and descriptors inside the buffer, and only port descriptors are
 *   reported as ports.
 * - The header, port descriptor and audit trailer readers are fixed-layout
 *   readers ({@link fixedLayout}).
 *
 * @module
 */

import { computeGeometry } from "../../src/core/geometry.ts";
import {
  decodeReceived,
  encodeHandshake,
  encodePortMessage,
  MSG_ID_HELLO,
  MSG_ID_SURFACE,
} from "../../src/darwin/messages.ts";
import {
  DARWIN,
  decodeMachMsgAuditTrailer,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  encodeMachMsgAuditTrailer,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
} from "../../src/darwin/structs.ts";
import { encodeHeader, encodeMeta, HEADER_SIZE, WIRE_MAGIC } from "../../src/wire/wire.ts";
import { describe, fail, fixedLayout, type FuzzTarget } from "./contracts.ts";
import type { Field } from "./mutate.ts";

function withTrailer(message: Uint8Array, size: number): Uint8Array {
  const bytes = new Uint8Array(size + MACH_MSG_AUDIT_TRAILER_SIZE + 16);
  bytes.set(message.subarray(0, size));
  encodeMachMsgAuditTrailer(new DataView(bytes.buffer), size, {
    type: 0,
    size: MACH_MSG_AUDIT_TRAILER_SIZE,
    seqno: 3,
    sender: [501, 20],
    audit: [0, 501, 20, 501, 20, 4242, 100001, 7],
  });
  return bytes;
}

function machSeeds(): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  for (const geometry of [computeGeometry(64, 32, "BGRA"), computeGeometry(64, 32, "y420")]) {
    for (const meta of [undefined, { pts: 1 }]) {
      const encoded = encodeMeta(meta);
      const payload = new Uint8Array(HEADER_SIZE + encoded.bytes.length);
      encodeHeader(
        new DataView(payload.buffer),
        geometry,
        encoded.kind,
        encoded.bytes.length,
        0n,
        0,
      );
      payload.set(encoded.bytes, HEADER_SIZE);
      const buffer = new Uint8Array(512);
      const size = encodePortMessage(
        buffer,
        0,
        0,
        MSG_ID_SURFACE,
        0x1103,
        DARWIN.MACH_MSG_TYPE_PORT_SEND,
        payload,
      );
      seeds.push(withTrailer(buffer, size));
    }
  }
  const hello = new Uint8Array(64);
  const size = encodeHandshake(hello, MSG_ID_HELLO, 0x707, 0x11, 0x903, 0x12, WIRE_MAGIC, 1);
  seeds.push(withTrailer(hello, size));
  return seeds;
}

const MACH_FIELDS: Field[] = [
  { offset: 0, size: 4 },
  { offset: 4, size: 4 },
  { offset: 8, size: 4 },
  { offset: 12, size: 4 },
  { offset: 20, size: 4 },
  { offset: 24, size: 4 }, // descriptor count
  { offset: 28, size: 4 }, // port name
  { offset: 38, size: 1 }, // disposition
  { offset: 39, size: 1 }, // descriptor type
  { offset: 40, size: 4 },
  { offset: 68, size: 4 }, // wire header metadata length
];

function runMachReceived(input: Uint8Array): string {
  let layout: ReturnType<typeof decodeReceived>;
  try {
    layout = decodeReceived(input);
  } catch (error) {
    fail(`decodeReceived threw ${describe(error)}`);
  }
  if (!layout) return "undefined";
  const { header } = layout;
  if (header.size < MACH_MSG_HEADER_SIZE) fail(`accepted msgh_size ${header.size}`);
  if (header.size + MACH_MSG_AUDIT_TRAILER_SIZE > input.length) {
    fail(`accepted msgh_size ${header.size} with a trailer past ${input.length} bytes`);
  }
  if (layout.inlineOffset > header.size) {
    fail(`inline data at ${layout.inlineOffset} > ${header.size}`);
  }
  if (layout.ports.length + layout.otherDescriptors !== layout.descriptorCount) {
    fail("descriptors found do not add up to the count");
  }
  if (layout.ports.some((p) => p.type !== DARWIN.MACH_MSG_PORT_DESCRIPTOR)) {
    fail("a non-port descriptor was reported as a port");
  }
  return layout.descriptorCount === 0
    ? "simple"
    : `descriptors:${Math.min(layout.descriptorCount, 3)}`;
}

/** The macOS targets, in the order `TARGETS` (fuzz.ts) runs them. */
export const DARWIN_TARGETS: readonly FuzzTarget[] = [
  { name: "darwin.decodeReceived", seeds: machSeeds, fields: MACH_FIELDS, run: runMachReceived },
  {
    name: "darwin.decodeMachMsgHeader",
    seeds: machSeeds,
    fields: MACH_FIELDS,
    run: (input) => fixedLayout(input, MACH_MSG_HEADER_SIZE, (v) => decodeMachMsgHeader(v, 0)),
  },
  {
    name: "darwin.decodeMachMsgPortDescriptor",
    seeds: machSeeds,
    fields: MACH_FIELDS,
    run: (input) =>
      fixedLayout(
        input,
        MACH_MSG_HEADER_SIZE + 4 + MACH_MSG_PORT_DESCRIPTOR_SIZE,
        (v) => decodeMachMsgPortDescriptor(v, MACH_MSG_HEADER_SIZE + 4),
      ),
  },
  {
    name: "darwin.decodeMachMsgAuditTrailer",
    seeds: () => [withTrailer(new Uint8Array(0), 0)],
    fields: [{ offset: 0, size: 4 }, { offset: 4, size: 4 }, { offset: 24, size: 4 }],
    run: (input) =>
      fixedLayout(input, MACH_MSG_AUDIT_TRAILER_SIZE, (v) => decodeMachMsgAuditTrailer(v, 0)),
  },
];
