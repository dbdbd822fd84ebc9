/**
 * Golden bytes for every Mach encoder/decoder the macOS backend uses, from
 * the tables in `../shared/darwin-abi.md` (XNU headers, x86_64 = arm64), and
 * the ABI self-check comparison. Runs on every platform.
 */

import assert from "node:assert/strict";
import { AbiMismatchError } from "../mod.ts";
import {
  ABI_REPORT_VERSION,
  assertAbiReport,
  compareAbiReport,
  EXPECTED_ABI,
} from "../src/darwin/abi.ts";
import {
  align4,
  decodeReceived,
  encodeHandshake,
  encodePortMessage,
  HANDSHAKE_MESSAGE_SIZE,
  MSG_ID_HELLO,
  receiveBufferSize,
  SURFACE_PAYLOAD_OFFSET,
} from "../src/darwin/messages.ts";
import {
  credentialsOfAuditToken,
  DARWIN,
  decodeMachMsgAuditTrailer,
  decodeMachMsgBody,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  encodeMachMsgAuditTrailer,
  encodeMachMsgBody,
  encodeMachMsgHeader,
  encodeMachMsgPortDescriptor,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  machMsghBits,
  machRcvTrailerElements,
  machRcvTrailerType,
  msghBitsLocal,
  msghBitsRemote,
  msghIsComplex,
  RECEIVE_OPTIONS,
} from "../src/darwin/structs.ts";
import { kernReturnName } from "../src/darwin/mach.ts";
import { HEADER_SIZE, WIRE_MAGIC } from "../src/wire/wire.ts";

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");

Deno.test("darwin structs: sizes match mach/message.h (pack 4)", () => {
  assert.equal(MACH_MSG_HEADER_SIZE, 24);
  assert.equal(MACH_MSG_BODY_SIZE, 4);
  assert.equal(MACH_MSG_PORT_DESCRIPTOR_SIZE, 12);
  assert.equal(MACH_MSG_AUDIT_TRAILER_SIZE, 52);
  assert.equal(DARWIN.MAX_TRAILER_SIZE, 68);
  assert.equal(SURFACE_PAYLOAD_OFFSET, 40);
  assert.equal(HANDSHAKE_MESSAGE_SIZE, 32);
});

Deno.test("darwin structs: mach_msg_header_t golden bytes and round trip", () => {
  const bytes = new Uint8Array(24);
  const view = new DataView(bytes.buffer);
  const header = {
    bits: (machMsghBits(DARWIN.MACH_MSG_TYPE_COPY_SEND, DARWIN.MACH_MSG_TYPE_MAKE_SEND) |
      DARWIN.MACH_MSGH_BITS_COMPLEX) >>> 0,
    size: 0x140,
    remotePort: 0x1103,
    localPort: 0x2207,
    voucherPort: 0,
    id: -2,
  };
  encodeMachMsgHeader(view, 0, header);
  assert.equal(
    hex(bytes),
    "13 14 00 80 40 01 00 00 03 11 00 00 07 22 00 00 00 00 00 00 fe ff ff ff",
  );
  assert.deepEqual(decodeMachMsgHeader(view), header);
  assert.equal(msghBitsRemote(header.bits), 19);
  assert.equal(msghBitsLocal(header.bits), 20);
  assert.ok(msghIsComplex(header.bits));
  assert.equal(machMsghBits(17, 0), 0x11);
  assert.equal(machMsghBits(19, 20), 0x1413);
});

Deno.test("darwin structs: mach_msg_body_t and the port descriptor golden bytes", () => {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  encodeMachMsgBody(view, 0, 1);
  assert.equal(hex(bytes.subarray(0, 4)), "01 00 00 00");
  assert.equal(decodeMachMsgBody(view, 0), 1);
  bytes.fill(0xaa, 4);
  encodeMachMsgPortDescriptor(view, 4, 0x11223344, DARWIN.MACH_MSG_TYPE_MOVE_SEND);
  // The golden bytes from darwin-abi.md (padding is zeroed, not left as it was).
  assert.equal(hex(bytes.subarray(4)), "44 33 22 11 00 00 00 00 00 00 11 00");
  assert.deepEqual(decodeMachMsgPortDescriptor(view, 4), {
    name: 0x11223344,
    disposition: 17,
    type: 0,
  });
});

Deno.test("darwin structs: audit trailer golden bytes; euid, egid, pid and pid version from the token", () => {
  const bytes = new Uint8Array(52);
  const view = new DataView(bytes.buffer);
  const trailer = {
    type: 0,
    size: 52,
    seqno: 7,
    sender: [501, 20] as [number, number],
    // auid, euid, egid, ruid, rgid, pid, asid, pidversion
    audit: [501, 502, 20, 503, 21, 4242, 100004, 9],
  };
  encodeMachMsgAuditTrailer(view, 0, trailer);
  assert.equal(
    hex(bytes),
    "00 00 00 00 34 00 00 00 07 00 00 00 f5 01 00 00 14 00 00 00 " +
      "f5 01 00 00 f6 01 00 00 14 00 00 00 f7 01 00 00 15 00 00 00 " +
      "92 10 00 00 a4 86 01 00 09 00 00 00",
  );
  assert.deepEqual(decodeMachMsgAuditTrailer(view, 0), trailer);
  assert.deepEqual(credentialsOfAuditToken(trailer.audit), {
    pid: 4242,
    uid: 502,
    gid: 20,
    pidVersion: 9,
  });
});

Deno.test("darwin structs: trailer request macros give 0x03000002", () => {
  assert.equal(machRcvTrailerType(0), 0);
  assert.equal(machRcvTrailerElements(DARWIN.MACH_RCV_TRAILER_AUDIT), 0x03000000);
  assert.equal(RECEIVE_OPTIONS, 0x03000002);
  assert.equal(machRcvTrailerType(0x1f), 0xf0000000);
  assert.equal(
    RECEIVE_OPTIONS & DARWIN.MACH_RCV_LARGE,
    0,
    "no MACH_RCV_LARGE: too-large messages are destroyed",
  );
});

Deno.test("darwin structs: a surface message is 40 bytes + payload, padded to 4, golden prefix", () => {
  const buffer = new Uint8Array(256).fill(0xcc);
  const payload = new Uint8Array(HEADER_SIZE + 3).fill(0x5a);
  const size = encodePortMessage(
    buffer,
    0x1503,
    DARWIN.MACH_MSG_TYPE_COPY_SEND,
    0x53505203,
    0x11223344,
    DARWIN.MACH_MSG_TYPE_MOVE_SEND,
    payload,
  );
  assert.equal(size, align4(40 + HEADER_SIZE + 3));
  assert.equal(size % 4, 0);
  assert.equal(
    hex(buffer.subarray(0, 40)),
    "13 00 00 80 " + // bits: COPY_SEND | COMPLEX
      "b4 00 00 00 " + // size 180 = align4(40 + 136 + 3)
      "03 15 00 00 00 00 00 00 00 00 00 00 " + // remote, local, voucher
      "03 52 50 53 " + // id
      "01 00 00 00 " + // descriptor count
      "44 33 22 11 00 00 00 00 00 00 11 00", // port descriptor, MOVE_SEND
  );
  assert.ok(buffer.subarray(40, 40 + payload.length).every((b) => b === 0x5a));
  assert.ok(buffer.subarray(40 + payload.length, size).every((b) => b === 0), "zero padding");
  assert.equal(buffer[size], 0xcc, "nothing written past msgh_size");
  assert.throws(() => encodePortMessage(new Uint8Array(16), 1, 19, 1, 1, 17, payload), RangeError);
});

Deno.test("darwin structs: the handshake message golden bytes", () => {
  const buffer = new Uint8Array(32);
  assert.equal(
    encodeHandshake(buffer, MSG_ID_HELLO, 0x1a03, 19, 0x2b07, 20, WIRE_MAGIC, 1),
    32,
  );
  assert.equal(
    hex(buffer),
    "13 14 00 00 20 00 00 00 03 1a 00 00 07 2b 00 00 00 00 00 00 01 52 50 53 " +
      "53 50 52 54 01 00 00 00",
  );
});

Deno.test("darwin structs: decodeReceived walks descriptors and finds the trailer at msgh_size", () => {
  const buffer = new Uint8Array(receiveBufferSize(HEADER_SIZE, 16));
  assert.equal(buffer.length, align4(40 + HEADER_SIZE + 16) + 68);
  const payload = new Uint8Array(HEADER_SIZE);
  const size = encodePortMessage(buffer, 0, 0, 0x53505203, 0x303, 17, payload);
  const view = new DataView(buffer.buffer);
  // Make it look received: remote = no reply right, local = our port.
  view.setUint32(0, (DARWIN.MACH_MSGH_BITS_COMPLEX | (17 << 8)) >>> 0, true);
  view.setUint32(12, 0x703, true);
  encodeMachMsgAuditTrailer(view, size, {
    type: 0,
    size: 52,
    seqno: 3,
    sender: [501, 20],
    audit: [501, 501, 20, 501, 20, 77, 0, 0],
  });
  const layout = decodeReceived(buffer)!;
  assert.equal(layout.header.localPort, 0x703);
  assert.equal(layout.descriptorCount, 1);
  assert.deepEqual(layout.ports, [{ name: 0x303, disposition: 17, type: 0 }]);
  assert.equal(layout.otherDescriptors, 0);
  assert.equal(layout.inlineOffset, 40);
  assert.equal(layout.trailer.seqno, 3);
  assert.equal(credentialsOfAuditToken(layout.trailer.audit).pid, 77);
  // An OOL descriptor (type 1) is 16 bytes and is counted, not read as a port.
  view.setUint32(24, 2, true);
  view.setUint8(40 + 11, 1);
  assert.equal(decodeReceived(buffer)!.otherDescriptors, 1);
  assert.equal(decodeReceived(buffer)!.inlineOffset, 56);
  // A header claiming more than the buffer holds is refused.
  view.setUint32(4, buffer.length, true);
  assert.equal(decodeReceived(buffer), undefined);
  view.setUint32(4, 20, true);
  assert.equal(decodeReceived(buffer), undefined);
});

Deno.test("darwin structs: constants match the darwin-abi tables", () => {
  assert.deepEqual(
    [16, 17, 18, 19, 20, 21],
    [
      DARWIN.MACH_MSG_TYPE_MOVE_RECEIVE,
      DARWIN.MACH_MSG_TYPE_MOVE_SEND,
      DARWIN.MACH_MSG_TYPE_MOVE_SEND_ONCE,
      DARWIN.MACH_MSG_TYPE_COPY_SEND,
      DARWIN.MACH_MSG_TYPE_MAKE_SEND,
      DARWIN.MACH_MSG_TYPE_MAKE_SEND_ONCE,
    ],
  );
  assert.equal(DARWIN.MACH_SEND_INVALID_DEST, 0x10000003);
  assert.equal(DARWIN.MACH_SEND_TIMED_OUT, 0x10000004);
  assert.equal(DARWIN.MACH_RCV_TIMED_OUT, 0x10004003);
  assert.equal(DARWIN.MACH_RCV_TOO_LARGE, 0x10004004);
  assert.equal(DARWIN.MACH_RCV_PORT_DIED, 0x10004009);
  assert.equal(DARWIN.MACH_NOTIFY_NO_SENDERS, 0o106);
  assert.equal(DARWIN.kIOReturnCannotLock >>> 0, 0xe00002cc);
  assert.equal(DARWIN.kIOReturnError >>> 0, 0xe00002bc);
  assert.equal(DARWIN.kCFStringEncodingUTF8, 0x08000100);
  assert.equal(kernReturnName(0x10000003), "MACH_SEND_INVALID_DEST");
  assert.equal(kernReturnName(1102), "BOOTSTRAP_UNKNOWN_SERVICE");
  assert.equal(kernReturnName(-6661), "kCVReturnInvalidArgument");
  assert.equal(kernReturnName(-536870196), "kIOReturnCannotLock");
  assert.equal(kernReturnName(0x12345), "0x12345");
});

Deno.test("darwin ABI self-check: a matching report passes, any difference is AbiMismatchError", () => {
  const good = { version: ABI_REPORT_VERSION, ...EXPECTED_ABI };
  assert.deepEqual(compareAbiReport(good), []);
  assertAbiReport(good);
  const bad = { ...good, "sizeof(mach_msg_port_descriptor_t)": 16, "MACH_RCV_TOO_LARGE": 1 };
  delete (bad as Record<string, unknown>)["sizeof(mach_msg_audit_trailer_t)"];
  const error = (() => {
    try {
      assertAbiReport(bad);
    } catch (e) {
      return e;
    }
  })();
  assert.ok(error instanceof AbiMismatchError, String(error));
  assert.equal(error.code, "ABI_MISMATCH");
  assert.deepEqual(error.mismatches, [
    "sizeof(mach_msg_port_descriptor_t): expected 12, shim says 16",
    "sizeof(mach_msg_audit_trailer_t): expected 52, shim did not report it",
    "MACH_RCV_TOO_LARGE: expected 268451844, shim says 1",
  ]);
  assert.throws(() => assertAbiReport({ ...good, version: 2 }), AbiMismatchError);
});

Deno.test("darwin ABI self-check: native/shim.m reports every key the TypeScript compares", () => {
  const source = Deno.readTextFileSync(new URL("../native/shim.m", import.meta.url));
  const reported = new Set<string>();
  for (const [, key] of source.matchAll(/put\("([^"]+)"/g)) reported.add(key);
  for (const [, type] of source.matchAll(/SIZE\(([^)#]+)\);/g)) reported.add(`sizeof(${type})`);
  for (const [, type, field] of source.matchAll(/OFFSET\(([^,#]+), ([^)#]+)\);/g)) {
    reported.add(`offsetof(${type}, ${field})`);
  }
  for (const [, name] of source.matchAll(/CONSTANT\(([^)#]+)\);/g)) reported.add(name);
  const missing = Object.keys(EXPECTED_ABI).filter((key) => !reported.has(key));
  assert.deepEqual(missing, [], "keys the shim never reports would always fail the check");
  // The file the shim names as the other side of the comparison is the one that holds it.
  const named = /(src\/darwin\/\w+\.ts) \(EXPECTED_ABI\)/.exec(source)?.[1];
  assert.ok(named, "native/shim.m names the file holding EXPECTED_ABI");
  assert.match(
    Deno.readTextFileSync(new URL(`../${named}`, import.meta.url)),
    /export const EXPECTED_ABI\b/,
    `native/shim.m names ${named} for EXPECTED_ABI`,
  );
  assert.match(source, /put\("version", SP_ABI_REPORT_VERSION\)/);
  assert.match(source, new RegExp(`#define SP_ABI_REPORT_VERSION ${ABI_REPORT_VERSION}\\b`));
});
