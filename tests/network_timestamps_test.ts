/**
 * The network bridge's timestamps and metadata records, without a network:
 * frame gaps counted in whole periods, a timestamp through NTP's 32.32
 * format and back, one trusted timestamp per frame, metadata records split
 * anywhere in the stream, and the newest records kept. (Across a network:
 * `tests/network_send_receive_test.ts`.)
 *
 * @module
 */

import assert from "node:assert/strict";
import { FrameGapCounter, SenderTimestamps } from "../src/gst/network.ts";
import { microsOfNtpNanos, ntpNanosOfMicros } from "../src/gst/timestamp_meta.ts";
import { encodeMetaRecord, MetaRecordReader, SenderMetas } from "../src/gst/network_meta.ts";
import { ProtocolError } from "../src/core/errors.ts";
import { T0, timestampOf } from "./network_frames.ts";

Deno.test("FrameGapCounter counts gaps of whole frame periods, not jitter", () => {
  const counter = new FrameGapCounter();
  const period = 33_333_333;
  let t = 0;
  for (let i = 0; i < 30; i++) {
    t += period + ((i * 7919) % 5_000_000) - 2_500_000; // ±2.5 ms jitter
    counter.note(t);
  }
  assert.deepEqual(counter.lost, 0);
  t += period * 4; // three frames missing
  counter.note(t);
  assert.deepEqual(counter.lost, 3);
  t += period;
  counter.note(t);
  assert.deepEqual(counter.lost, 3);
});

Deno.test("a timestamp crosses NTP's 32.32 format exactly, also when GStreamer's rounding takes 1 ns off", () => {
  for (const micros of [0, 1, 999_999, T0, timestampOf(255), -1_000_000, 2_085_978_495_999_999]) {
    const nanos = ntpNanosOfMicros(micros)!;
    // What rtphdrextntp64 does: ns to 32.32 rounding down, and back rounding down.
    const ntp = (nanos << 32n) / 1_000_000_000n;
    const back = (ntp * 1_000_000_000n) >> 32n;
    assert(back === nanos || back === nanos - 1n);
    assert.deepEqual(microsOfNtpNanos(back), micros);
    assert.deepEqual(microsOfNtpNanos(nanos), micros);
  }
  // Outside NTP era 0 (or not whole µs) it is not sent at all.
  assert.deepEqual(ntpNanosOfMicros(2_085_978_496_000_000), undefined);
  assert.deepEqual(ntpNanosOfMicros(-2_208_988_800_000_000), undefined);
  assert.deepEqual(ntpNanosOfMicros(1.5), undefined);
});

Deno.test("SenderTimestamps trusts one timestamp per frame, never a merged or repeated one", () => {
  const stamps = new SenderTimestamps();
  const a = ntpNanosOfMicros(T0)!;
  const b = ntpNanosOfMicros(timestampOf(1))!;
  assert.deepEqual(stamps.take([a, a, 0n]), T0); // every packet's copy, and an empty extension
  assert.deepEqual(stamps.take([a]), null); // the previous frame's again
  assert.deepEqual(stamps.take([b, a]), null); // packets of two frames
  assert.deepEqual(stamps.take([]), null);
  assert.deepEqual(stamps.take([0n]), null);
  assert.deepEqual(stamps.take([b]), timestampOf(1));
  assert.deepEqual(stamps.untimed, 4);
});

Deno.test("metadata records survive any split of the stream; a malformed one is a ProtocolError", () => {
  const records = [
    encodeMetaRecord(T0, { n: 0 }),
    encodeMetaRecord(timestampOf(1), new Uint8Array([1, 2, 3])),
    encodeMetaRecord(-5, undefined),
  ];
  const stream = new Uint8Array(records.reduce((sum, r) => sum + r.length, 0));
  let at = 0;
  for (const record of records) {
    stream.set(record, at);
    at += record.length;
  }
  for (const step of [1, 3, 7, stream.length]) {
    const got: [number, unknown][] = [];
    const reader = new MetaRecordReader((timestamp, meta) => got.push([timestamp, meta]));
    for (let i = 0; i < stream.length; i += step) reader.push(stream.subarray(i, i + step));
    assert.deepEqual(got, [[T0, { n: 0 }], [timestampOf(1), new Uint8Array([1, 2, 3])], [
      -5,
      undefined,
    ]]);
  }
  const huge = new Uint8Array(8);
  new DataView(huge.buffer).setUint32(0, 0x7fff_ffff, true);
  assert.throws(() => new MetaRecordReader(() => {}).push(huge), ProtocolError);
  const badKind = encodeMetaRecord(T0, { n: 0 });
  badKind[12] = 9;
  assert.throws(() => new MetaRecordReader(() => {}).push(badKind), ProtocolError);
});

Deno.test("SenderMetas keeps the newest records only, and each is taken once", () => {
  const metas = new SenderMetas(3);
  for (let n = 0; n < 5; n++) metas.put(timestampOf(n), { n });
  assert.deepEqual(metas.take(timestampOf(1)).found, false); // evicted
  assert.deepEqual(metas.take(timestampOf(4)), { found: true, meta: { n: 4 } });
  assert.deepEqual(metas.take(timestampOf(4)).found, false);
});
