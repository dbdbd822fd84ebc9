/**
 * What `deno task bench` reports from its rounds (`bench/run.ts` runs them):
 * the JSON keys (each the median over the rounds, with ratios taken within
 * a round and their spread), the round-trip table, the targets met or
 * missed, and the latency chart (`bench/chart.ts`).
 *
 * @module
 */

import { latencyChart } from "./chart.ts";
import { sizeKey, SIZES } from "./common.ts";
import type { FloorRound, FloorRoundtrip } from "./floors.ts";

/** The machine the bench ran on. */
export interface Machine {
  cpus: number;
  model: string;
  kernel: string;
  os: string;
  deno: string;
  /** `cc --version`'s first line (null: no cc). */
  cc: string | null;
}

/** One latency series (µs). */
interface Latency {
  p50: number;
  p99: number;
  mean?: number;
}
type Mode = "default" | "doorbell" | "lowLatency";

/** What `bench/driver.ts` prints: one round of every Deno measurement. */
export interface DriverRound {
  spinMicros: number;
  roundtrip: Record<Mode, Record<string, Latency>>;
  allocated: Record<Mode, Record<string, { driver: number; peer: number | null }>>;
  copy: Record<string, Latency>;
  /** Deno's own 1-byte stream ping-pong (`Deno.connect` / `Deno.listen`, no FFI; issue 24). */
  streamPingPong: Latency;
  pipelined: Record<Mode, number>;
  /** CPU ms per second of a receive parked 2 s on an idle channel, by how it parks. */
  idleCpuMsPerS: Record<"bell" | "poll", number>;
}

/** Every round of a run, and what the report needs beside them. */
export interface BenchRounds {
  machine: Machine;
  /** Whether producer and consumer sides were pinned to cores 0 and 1. */
  pinned: boolean;
  /** How many rounds ran. */
  roundCount: number;
  floorRounds: FloorRound[];
  driverRounds: DriverRound[];
  /** The blocking C floor with both processes on one core, for reference (null: not run). */
  floorSameCore: FloorRoundtrip | null;
  /** Why the C floor did not run. */
  floorSkipped: string | undefined;
  /** Deno, Node and Bun through `bench/runtime_driver.ts` (`runtimeReport` of `bench/runtimes.ts`). */
  runtimes: Record<string, unknown>;
}

/** Where {@link reportRounds} writes. */
export interface ReportPaths {
  svgPath: string;
  jsonPath: string | undefined;
}

const keys = SIZES.map(([w, h]) => sizeKey(w, h));
const round1 = (v: number) => Math.round(v * 10) / 10;
const round2 = (v: number) => Math.round(v * 100) / 100;
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
/** The median over the rounds of `value(round)`, with its spread. */
function stat<R>(rounds: R[], value: (round: R) => number) {
  const values = rounds.map(value);
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}
const bySize = <R>(rounds: R[], value: (round: R, key: string) => number, digits = round1) =>
  Object.fromEntries(keys.map((k) => [k, digits(stat(rounds, (r) => value(r, k)).median)]));
const fmt = (v: number | null) => v === null ? "-" : v >= 1000 ? v.toFixed(0) : v.toPrecision(3);
const x = (v: number) => `${v.toFixed(v >= 10 ? 0 : 2)}x`;

/**
 * Prints the table and the targets, writes the chart to `svgPath` and the
 * JSON to `jsonPath` (if given).
 */
export async function reportRounds(rounds: BenchRounds, paths: ReportPaths): Promise<void> {
  const { machine, pinned, roundCount, floorRounds, driverRounds, floorSameCore, floorSkipped } =
    rounds;
  const runtimesReport = rounds.runtimes;
  const { svgPath, jsonPath } = paths;

  const haveFloor = floorRounds.length > 0;
  const lat = (mode: Mode, field: "p50" | "p99") => (r: DriverRound, k: string) =>
    r.roundtrip[mode][k][field];
  const fastest: Mode =
    keys.every((k) =>
        stat(driverRounds, (r) => lat("lowLatency", "p50")(r, k)).median <=
          stat(driverRounds, (r) => lat("default", "p50")(r, k)).median
      )
      ? "lowLatency"
      : "default";
  const spinMicros = driverRounds[0].spinMicros;
  const pipelinedBest = (r: DriverRound) => Math.max(r.pipelined.default, r.pipelined.lowLatency);
  const allocated = (mode: Mode, side: "driver" | "peer") =>
    Object.fromEntries(
      keys.map((k) => {
        const values = driverRounds.map((r) => r.allocated[mode][k][side]);
        return [k, values.some((v) => v === null) ? null : Math.round(median(values as number[]))];
      }),
    );

  const results = {
    machine: { ...machine, pinned },
    rounds: roundCount,
    fastest_mode: fastest === "lowLatency" ? `spinMicros: ${spinMicros}` : "default",
    spin_micros: spinMicros,
    roundtrip_p50_us: bySize(driverRounds, lat(fastest, "p50")),
    roundtrip_p99_us: bySize(driverRounds, lat(fastest, "p99")),
    default_roundtrip_p50_us: bySize(driverRounds, lat("default", "p50")),
    default_roundtrip_p99_us: bySize(driverRounds, lat("default", "p99")),
    /** The default mode with the doorbell on in both processes (docs/protocol.md, "Doorbell"). */
    doorbell_roundtrip_p50_us: bySize(driverRounds, lat("doorbell", "p50")),
    doorbell_roundtrip_p99_us: bySize(driverRounds, lat("doorbell", "p99")),
    low_latency_roundtrip_p50_us: bySize(driverRounds, lat("lowLatency", "p50")),
    low_latency_roundtrip_p99_us: bySize(driverRounds, lat("lowLatency", "p99")),
    floor_roundtrip_p50_us: haveFloor ? bySize(floorRounds, (r, k) => r.roundtrip[k].p50_us) : null,
    floor_roundtrip_p99_us: haveFloor ? bySize(floorRounds, (r, k) => r.roundtrip[k].p99_us) : null,
    spin_floor_roundtrip_p50_us: haveFloor
      ? bySize(floorRounds, (r, k) => r.spinRoundtrip[k].p50_us)
      : null,
    spin_floor_roundtrip_p99_us: haveFloor
      ? bySize(floorRounds, (r, k) => r.spinRoundtrip[k].p99_us)
      : null,
    /** The wake-up alone, 1-byte C ping-pongs (issue 24): blocking stream, stream as a reactor waits, seqpacket. */
    floor_stream_pingpong_p50_us: haveFloor
      ? round1(stat(floorRounds, (r) => r.pingpong.stream.p50_us).median)
      : null,
    floor_stream_epoll_pingpong_p50_us: haveFloor
      ? round1(stat(floorRounds, (r) => r.pingpong.streamEpoll.p50_us).median)
      : null,
    floor_seqpacket_pingpong_p50_us: haveFloor
      ? round1(stat(floorRounds, (r) => r.pingpong.seqpacket.p50_us).median)
      : null,
    /** The same ping-pong through Deno's own reactor (`Deno.connect` / `Deno.listen`). */
    deno_stream_pingpong_p50_us: round1(stat(driverRounds, (r) => r.streamPingPong.p50).median),
    floor_same_core_roundtrip_p50_us: floorSameCore ? round1(floorSameCore.p50_us) : null,
    floor_skipped: floorSkipped ?? null,
    copy_p50_us: bySize(driverRounds, (r, k) => r.copy[k].p50),
    copy_p99_us: bySize(driverRounds, (r, k) => r.copy[k].p99),
    pipelined_per_s: Math.round(stat(driverRounds, pipelinedBest).median),
    default_pipelined_per_s: Math.round(stat(driverRounds, (r) => r.pipelined.default).median),
    doorbell_pipelined_per_s: Math.round(stat(driverRounds, (r) => r.pipelined.doorbell).median),
    /** CPU ms per second used by a receiver parked 2 s on an idle channel (shared poll; doorbell). */
    default_idle_cpu_ms_per_s: round2(stat(driverRounds, (r) => r.idleCpuMsPerS.poll).median),
    doorbell_idle_cpu_ms_per_s: round2(stat(driverRounds, (r) => r.idleCpuMsPerS.bell).median),
    low_latency_pipelined_per_s: Math.round(
      stat(driverRounds, (r) => r.pipelined.lowLatency).median,
    ),
    floor_pipelined_per_s: haveFloor
      ? Math.round(stat(floorRounds, (r) => r.pipelined).median)
      : null,
    floor_tracked_pipelined_per_s: haveFloor
      ? Math.round(stat(floorRounds, (r) => r.trackedPipelined).median)
      : null,
    spin_floor_tracked_pipelined_per_s: haveFloor
      ? Math.round(stat(floorRounds, (r) => r.spinTrackedPipelined).median)
      : null,
    /** Bytes V8 allocated per round trip on each side (low-latency mode), measured over every timed round trip. */
    allocated_bytes_per_roundtrip: {
      producer: allocated("lowLatency", "driver"),
      consumer: allocated("lowLatency", "peer"),
    },
    default_allocated_bytes_per_roundtrip: {
      producer: allocated("default", "driver"),
      consumer: allocated("default", "peer"),
    },
    /** Deno, Node and Bun through bench/runtime_driver.ts (1920x1080), with their ratios to the floors. */
    runtimes: runtimesReport,
    /** Ratios taken within each round (library and floor measured minutes apart at most): median, min, max. */
    ratios: {} as Record<string, Record<string, { median: number; min: number; max: number }>>,
  };

  // Ratios within a round, then their median and spread over the rounds.
  const paired = driverRounds.slice(0, floorRounds.length).map((d, i) => ({
    d,
    f: floorRounds[i],
  }));
  const ratioStat = (value: (p: { d: DriverRound; f: FloorRound }) => number) => {
    const s = stat(paired, value);
    return { median: round2(s.median), min: round2(s.min), max: round2(s.max) };
  };
  if (haveFloor) {
    const perSize = (value: (p: { d: DriverRound; f: FloorRound }, k: string) => number) =>
      Object.fromEntries(keys.map((k) => [k, ratioStat((p) => value(p, k))]));
    results.ratios = {
      low_latency_p50_over_spin_floor_p50: perSize((p, k) =>
        p.d.roundtrip.lowLatency[k].p50 / p.f.spinRoundtrip[k].p50_us
      ),
      low_latency_p99_over_spin_floor_p99: perSize((p, k) =>
        p.d.roundtrip.lowLatency[k].p99 / p.f.spinRoundtrip[k].p99_us
      ),
      default_p50_over_floor_p50: perSize((p, k) =>
        p.d.roundtrip.default[k].p50 / p.f.roundtrip[k].p50_us
      ),
      default_p99_over_floor_p99: perSize((p, k) =>
        p.d.roundtrip.default[k].p99 / p.f.roundtrip[k].p99_us
      ),
      doorbell_p50_over_floor_p50: perSize((p, k) =>
        p.d.roundtrip.doorbell[k].p50 / p.f.roundtrip[k].p50_us
      ),
      doorbell_p99_over_floor_p99: perSize((p, k) =>
        p.d.roundtrip.doorbell[k].p99 / p.f.roundtrip[k].p99_us
      ),
      pipelined: {
        over_spin_tracked_floor: ratioStat((p) => pipelinedBest(p.d) / p.f.spinTrackedPipelined),
        over_tracked_floor: ratioStat((p) => pipelinedBest(p.d) / p.f.trackedPipelined),
        over_plain_floor: ratioStat((p) => pipelinedBest(p.d) / p.f.pipelined),
      },
    };
  }

  const rows: string[][] = [[
    "frame",
    "low-latency p50/p99",
    "spinning C p50/p99",
    "default p50/p99",
    "blocking C p50/p99",
    "copy p50",
    "alloc B/rt prod/cons",
  ]];
  for (const k of keys) {
    const pair = (a: Record<string, number> | null, b: Record<string, number> | null) =>
      a && b ? `${fmt(a[k])} / ${fmt(b[k])}` : "skipped";
    rows.push([
      k,
      pair(results.low_latency_roundtrip_p50_us, results.low_latency_roundtrip_p99_us),
      pair(results.spin_floor_roundtrip_p50_us, results.spin_floor_roundtrip_p99_us),
      pair(results.default_roundtrip_p50_us, results.default_roundtrip_p99_us),
      pair(results.floor_roundtrip_p50_us, results.floor_roundtrip_p99_us),
      fmt(results.copy_p50_us[k]),
      `${fmt(results.allocated_bytes_per_roundtrip.producer[k])} / ${
        fmt(results.allocated_bytes_per_roundtrip.consumer[k])
      }`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(`\nround trip (two fd handoffs), µs, median of ${roundCount} rounds:`);
  for (const [i, row] of rows.entries()) {
    console.log("| " + row.map((cell, j) => cell.padEnd(widths[j])).join(" | ") + " |");
    if (i === 0) console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
  }
  console.log(
    `\npipelined 1920x1080, pool of 4: surfaceport ${results.pipelined_per_s}/s ` +
      `(default ${results.default_pipelined_per_s}/s, with the doorbell ` +
      `${results.doorbell_pipelined_per_s}/s, low-latency ` +
      `${results.low_latency_pipelined_per_s}/s); C floors: plain ${
        results.floor_pipelined_per_s ?? "skipped"
      }/s, tracked ${results.floor_tracked_pipelined_per_s ?? "skipped"}/s, tracked spinning ${
        results.spin_floor_tracked_pipelined_per_s ?? "skipped"
      }/s`,
  );
  if (floorSameCore) {
    console.log(
      `reference: blocking C floor with both processes on core 0, 1920x1080: p50 ${
        fmt(floorSameCore.p50_us)
      } µs`,
    );
  }

  const small = keys[0], large = keys[keys.length - 1];
  const spread = (s: { median: number; min: number; max: number }) =>
    `${x(s.median)} (rounds ${x(s.min)}-${x(s.max)})`;
  const ratios = results.ratios;
  const lowAlloc = [
    ...Object.values(results.allocated_bytes_per_roundtrip.producer),
    ...Object.values(results.allocated_bytes_per_roundtrip.consumer),
  ];
  const targets: [string, boolean | null, string][] = [
    [
      "low-latency p50 / spinning C p50 <= 2x (every size)",
      haveFloor
        ? keys.every((k) => ratios.low_latency_p50_over_spin_floor_p50[k].median <= 2)
        : null,
      haveFloor
        ? keys.map((k) => spread(ratios.low_latency_p50_over_spin_floor_p50[k])).join(", ")
        : "floor skipped",
    ],
    [
      "low-latency p99 / spinning C p99 <= 6x (every size)",
      haveFloor
        ? keys.every((k) => ratios.low_latency_p99_over_spin_floor_p99[k].median <= 6)
        : null,
      haveFloor
        ? keys.map((k) => spread(ratios.low_latency_p99_over_spin_floor_p99[k])).join(", ")
        : "floor skipped",
    ],
    [
      "default p50 / blocking C p50 <= 1.0x (every size)",
      haveFloor ? keys.every((k) => ratios.default_p50_over_floor_p50[k].median <= 1.0) : null,
      haveFloor
        ? keys.map((k) => spread(ratios.default_p50_over_floor_p50[k])).join(", ") +
          ` (with the doorbell: ${
            keys.map((k) => x(ratios.doorbell_p50_over_floor_p50[k].median)).join(", ")
          })`
        : "floor skipped",
    ],
    [
      "default p99 / blocking C p99 <= 2x (every size)",
      haveFloor ? keys.every((k) => ratios.default_p99_over_floor_p99[k].median <= 2) : null,
      haveFloor
        ? keys.map((k) => spread(ratios.default_p99_over_floor_p99[k])).join(", ") +
          ` (with the doorbell: ${
            keys.map((k) => x(ratios.doorbell_p99_over_floor_p99[k].median)).join(", ")
          })`
        : "floor skipped",
    ],
    [
      "a receiver parked 2 s on an idle channel uses <= 5 ms CPU per second",
      results.default_idle_cpu_ms_per_s <= 5,
      `${results.default_idle_cpu_ms_per_s} ms/s (with the doorbell: ${results.doorbell_idle_cpu_ms_per_s} ms/s)`,
    ],
    [
      "pipelined / spinning C with the same use tracking >= 0.7",
      haveFloor ? ratios.pipelined.over_spin_tracked_floor.median >= 0.7 : null,
      haveFloor
        ? `${ratios.pipelined.over_spin_tracked_floor.median} (rounds ${ratios.pipelined.over_spin_tracked_floor.min}-${ratios.pipelined.over_spin_tracked_floor.max})`
        : "floor skipped",
    ],
    [
      "allocated per round trip, per side <= 1 KB (low-latency)",
      lowAlloc.some((v) => v === null) ? null : lowAlloc.every((v) => v! <= 1024),
      `producer ${Object.values(results.allocated_bytes_per_roundtrip.producer).join("/")} B, ` +
      `consumer ${Object.values(results.allocated_bytes_per_roundtrip.consumer).join("/")} B`,
    ],
    [
      "4K round trip p50 <= 1.1x that at 640x480 (low-latency)",
      results.low_latency_roundtrip_p50_us[large] / results.low_latency_roundtrip_p50_us[small] <=
        1.1,
      x(results.low_latency_roundtrip_p50_us[large] / results.low_latency_roundtrip_p50_us[small]),
    ],
    [
      "4K round trip p50 >= 100x faster than copying the 4K frame",
      results.copy_p50_us[large] / results.roundtrip_p50_us[large] >= 100,
      x(results.copy_p50_us[large] / results.roundtrip_p50_us[large]),
    ],
  ];
  console.log("\ntargets (ratios within a round, median over the rounds):");
  for (const [what, met, value] of targets) {
    console.log(`  ${met === null ? "SKIPPED" : met ? "met    " : "MISSED "}  ${what}: ${value}`);
  }

  const chart = latencyChart(
    "surfaceport round trip vs copying a frame (p50)",
    `${machine.model}, ${machine.cpus} cores, Linux ${machine.kernel}, Deno ${machine.deno}` +
      (pinned ? ", pinned 0/1" : ""),
    SIZES.map(([w, h]) => ({ key: sizeKey(w, h), bytes: w * h * 4 })),
    [
      { label: "copy via Deno unix socket", color: "#d62728", points: results.copy_p50_us },
      {
        label: "surfaceport default",
        color: "#1f77b4",
        points: results.default_roundtrip_p50_us,
      },
      {
        label: `surfaceport spin ${spinMicros} µs`,
        color: "#2ca02c",
        points: results.low_latency_roundtrip_p50_us,
      },
      ...(results.floor_roundtrip_p50_us
        ? [{
          label: "C floor, blocking",
          color: "#555",
          dashed: true,
          points: results.floor_roundtrip_p50_us,
        }]
        : []),
      ...(results.spin_floor_roundtrip_p50_us
        ? [{
          label: "C floor, spinning",
          color: "#999",
          dashed: true,
          points: results.spin_floor_roundtrip_p50_us,
        }]
        : []),
    ],
  );
  await Deno.mkdir(new URL(".", `file://${svgPath}`).pathname, { recursive: true });
  await Deno.writeTextFile(svgPath, chart);
  console.log(`\nchart: ${svgPath}`);
  if (jsonPath) {
    await Deno.writeTextFile(jsonPath, JSON.stringify(results, null, 2) + "\n");
    console.log(`json: ${jsonPath}`);
  }
}
