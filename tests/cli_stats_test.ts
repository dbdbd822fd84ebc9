/** The numbers `watch` and `preview` show, from frames made up here. */
import assert from "node:assert/strict";
import { type Frame, nowMicros } from "../mod.ts";
import { metaText, StreamStats } from "../cli/stats.ts";

/** The receiver's clock of the tests that need exact latencies: it never moves. */
const NOW = 1_765_000_000_000_000;

function frame(sequence: number, id: number, ageMicros: number, meta?: unknown): Frame {
  return {
    sequence,
    timestamp: NOW - ageMicros,
    meta,
    surface: { id, format: "420v", width: 64, height: 32 },
  } as unknown as Frame;
}

Deno.test("StreamStats: sequence gaps are drops, latency percentiles, the pool's ids", () => {
  // A fixed clock: the percentiles are exact whatever the machine's load (a real clock moved
  // by a preemption between making a frame up and add() made the p50 bound flaky).
  const stats = new StreamStats(() => NOW);
  const latencies = [100, 200, 300, 400, 500, 600, 700, 800, 900, 10000];
  let sequence = 10;
  for (let i = 0; i < latencies.length; i++) {
    stats.add(frame(sequence, 100 + (i % 3), latencies[i], { i }));
    sequence += i === 4 ? 3 : 1; // frames 15 and 16 never arrive
  }
  const report = stats.report(0);
  assert.equal(report.frames, 10);
  assert.equal(report.drops, 2);
  assert.equal(report.sequence, sequence - 1);
  assert.deepEqual(report.meta, { i: 9 });
  assert.equal(report.format, "420v");
  assert.equal(report.latencyP50Micros, 500, "the median: the 5th of 10 sorted");
  assert.equal(report.latencyP99Micros, 900, "the 9th of 10 sorted, not the outlier");
  assert.deepEqual(report.pool.map((s) => s.id).sort(), [100, 101, 102]);
  assert.equal(report.pool[0].lastSequence, report.sequence, "most recent first");
  assert.equal(report.pool.reduce((n, s) => n + s.frames, 0), 10);
  // The transport's own count wins when it saw more (a subscription's newest-frame policy).
  stats.extraDrops = 7;
  assert.equal(stats.report(Infinity).drops, 7);
  // A surface not seen for 256 frames leaves the pool view.
  stats.add(frame(sequence + 300, 555, 100));
  assert.deepEqual(stats.report(0).pool.map((s) => s.id), [555]);
});

Deno.test("StreamStats: latency is the receiver's nowMicros() less the sender's timestamp", () => {
  const stats = new StreamStats();
  const before = nowMicros();
  stats.add({ ...frame(1, 1, 0), timestamp: before - 5000 } as Frame);
  const after = nowMicros();
  const latency = stats.report(0).latencyP50Micros;
  // Between the two readings of the clock that bracket add(), whatever time the machine took.
  assert.ok(
    latency >= 5000 && latency <= 5000 + (after - before),
    `latency ${latency} µs, add() took ${after - before} µs`,
  );
});

Deno.test("metaText: JSON, bytes and long values in one short line", () => {
  assert.equal(metaText(undefined), "-");
  assert.equal(metaText({ pts: 1 }), '{"pts":1}');
  assert.equal(metaText(new Uint8Array(12)), "<12 bytes>");
  assert.equal(metaText("x".repeat(200), 20).length, 20);
});
