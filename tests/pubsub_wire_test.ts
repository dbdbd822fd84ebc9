/** The publish/subscribe control messages, byte for byte (docs/protocol.md). */
import assert from "node:assert/strict";
import { ProtocolError } from "../mod.ts";
import {
  decodeControlMessage,
  encodeCredit,
  encodeSubscribe,
  MAX_DEPTH,
} from "../src/wire/pubsub_wire.ts";

Deno.test("pubsub wire: SUBSCRIBE and CREDIT are the 16 bytes protocol.md gives", () => {
  assert.deepEqual(
    [...encodeSubscribe("latest", 1)],
    [0x53, 0x50, 0x52, 0x54, 1, 0, 2, 0, 16, 0, 1, 0, 1, 0, 0, 0],
  );
  assert.deepEqual(
    [...encodeSubscribe("queue", 64)],
    [0x53, 0x50, 0x52, 0x54, 1, 0, 2, 0, 16, 0, 2, 0, 64, 0, 0, 0],
  );
  assert.deepEqual(
    [...encodeCredit(3)],
    [0x53, 0x50, 0x52, 0x54, 1, 0, 3, 0, 16, 0, 0, 0, 3, 0, 0, 0],
  );
  assert.deepEqual(decodeControlMessage(encodeSubscribe("queue", 7)), {
    type: 2,
    policy: "queue",
    depth: 7,
  });
  assert.deepEqual(decodeControlMessage(encodeCredit(MAX_DEPTH)), { type: 3, count: 64 });
});

Deno.test("pubsub wire: every malformed control message is a typed ProtocolError", () => {
  const cases: [string, (view: DataView) => void, string, number?][] = [
    ["magic", (v) => v.setUint8(0, 0), "BAD_MAGIC"],
    ["version", (v) => v.setUint16(4, 2, true), "BAD_VERSION"],
    ["type", (v) => v.setUint16(6, 1, true), "BAD_TYPE"],
    ["size field", (v) => v.setUint16(8, 17, true), "BAD_HEADER"],
    ["depth 0", (v) => v.setUint32(12, 0, true), "BAD_CONTROL"],
    ["depth 65", (v) => v.setUint32(12, 65, true), "BAD_CONTROL"],
    ["policy 3", (v) => v.setUint16(10, 3, true), "BAD_CONTROL"],
    ["short", () => {}, "SHORT_MESSAGE", 12],
    ["long", () => {}, "SHORT_MESSAGE", 20],
    ["tiny", () => {}, "SHORT_MESSAGE", 4],
  ];
  for (const [what, mutate, reason, length] of cases) {
    const bytes = new Uint8Array(length ?? 16);
    bytes.set(encodeSubscribe("latest", 1).subarray(0, Math.min(16, bytes.length)));
    mutate(new DataView(bytes.buffer));
    assert.throws(
      () => decodeControlMessage(bytes),
      (e: unknown) => e instanceof ProtocolError && e.reason === reason,
      what,
    );
  }
  const credit = encodeCredit(1);
  credit[10] = 1; // reserved field
  assert.throws(() => decodeControlMessage(credit), ProtocolError);
});
