/**
 * Node and Bun beside Deno in `deno task bench`: each round of `bench/run.ts`
 * runs `bench/runtime_driver.ts` under Deno, Node and Bun (the producer on
 * the producer's core, its peers on the consumer's), right after that round's
 * C floors; ratios are taken within the round against the same floors as the
 * Deno driver's (1920x1080): low-latency p50 and p99 against the spinning
 * floor, default p50 against the blocking floor, pipelined against the
 * spinning floor with the same use tracking.
 *
 * @module
 */

import { Child } from "./common.ts";
import { type RuntimeBinary, runtimes } from "../tools/runtimes.ts";

/** What `bench/runtime_driver.ts` prints. */
export interface RuntimeRound {
  runtime: string;
  spinMicros: number;
  roundtrip: Record<"default" | "lowLatency", { p50: number; p99: number }>;
  pipelined: Record<"default" | "lowLatency", number>;
  offThreadHop: { p50: number; p99: number };
}

/** The runtimes measured: all three where present. */
export const benchRuntimes: RuntimeBinary[] = [runtimes.deno, runtimes.node, runtimes.bun]
  .filter((r): r is RuntimeBinary => r !== undefined);

/** Runtimes that are not installed, for the report. */
export const missingRuntimes: string[] = (["node", "bun"] as const).filter((n) => !runtimes[n]);

/** One round under `runtime`. */
export async function runtimeRound(
  runtime: RuntimeBinary,
  producerCpu: number | undefined,
  consumerCpu: number | undefined,
  quick: boolean,
): Promise<RuntimeRound> {
  const script = new URL("runtime_driver.ts", import.meta.url).pathname;
  const [command, args] = runtime.command(script, [
    JSON.stringify({ peerCpu: consumerCpu ?? null, quick }),
  ]);
  const child = new Child(command, args, producerCpu);
  try {
    return JSON.parse(await child.readLine(120_000));
  } finally {
    await child.stop();
  }
}

/** The spinning, blocking and tracked-spinning floors of one round at 1920x1080. */
export interface FloorAt1080 {
  spinP50: number;
  spinP99: number;
  blockingP50: number;
  spinTrackedPipelined: number;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const r1 = (v: number) => Math.round(v * 10) / 10;
const r2 = (v: number) => Math.round(v * 100) / 100;

/**
 * Per runtime: the medians over the rounds, and the ratios to the floors
 * taken within each round (median); prints a table and returns the JSON.
 */
export function runtimeReport(
  rounds: Record<string, RuntimeRound[]>,
  floors: FloorAt1080[],
): Record<string, unknown> {
  const report: Record<string, unknown> = {};
  const rows = [[
    "runtime",
    "low-latency p50/p99",
    "÷ spinning C p50",
    "default p50/p99",
    "÷ blocking C p50",
    "pipelined/s",
    "÷ spin tracked C",
    "worker hop p50",
  ]];
  for (const [name, list] of Object.entries(rounds)) {
    if (list.length === 0) continue;
    const m = (value: (r: RuntimeRound) => number) => median(list.map(value));
    const ratio = (value: (r: RuntimeRound, f: FloorAt1080) => number) =>
      floors.length
        ? r2(median(list.slice(0, floors.length).map((r, i) => value(r, floors[i]))))
        : null;
    const best = (r: RuntimeRound) => Math.max(r.pipelined.default, r.pipelined.lowLatency);
    const entry = {
      version: list[0].runtime,
      low_latency_p50_us: r1(m((r) => r.roundtrip.lowLatency.p50)),
      low_latency_p99_us: r1(m((r) => r.roundtrip.lowLatency.p99)),
      default_p50_us: r1(m((r) => r.roundtrip.default.p50)),
      default_p99_us: r1(m((r) => r.roundtrip.default.p99)),
      pipelined_per_s: Math.round(m(best)),
      off_thread_hop_p50_us: r1(m((r) => r.offThreadHop.p50)),
      low_latency_p50_over_spin_floor_p50: ratio((r, f) => r.roundtrip.lowLatency.p50 / f.spinP50),
      low_latency_p99_over_spin_floor_p99: ratio((r, f) => r.roundtrip.lowLatency.p99 / f.spinP99),
      default_p50_over_floor_p50: ratio((r, f) => r.roundtrip.default.p50 / f.blockingP50),
      pipelined_over_spin_tracked_floor: ratio((r, f) => best(r) / f.spinTrackedPipelined),
    };
    report[name] = entry;
    const x = (v: number | null) => v === null ? "-" : `${v}x`;
    rows.push([
      entry.version,
      `${entry.low_latency_p50_us} / ${entry.low_latency_p99_us}`,
      x(entry.low_latency_p50_over_spin_floor_p50),
      `${entry.default_p50_us} / ${entry.default_p99_us}`,
      x(entry.default_p50_over_floor_p50),
      String(entry.pipelined_per_s),
      x(entry.pipelined_over_spin_tracked_floor),
      `${entry.off_thread_hop_p50_us}`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(
    `\nper runtime, 1920x1080 round trips (µs) and pipelined handoffs, median of ${
      Object.values(rounds)[0]?.length ?? 0
    } rounds (bench/runtime_driver.ts; ratios within a round):`,
  );
  for (const [i, row] of rows.entries()) {
    console.log("| " + row.map((cell, j) => cell.padEnd(widths[j])).join(" | ") + " |");
    if (i === 0) console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
  }
  if (missingRuntimes.length) {
    console.log(`not measured (not installed): ${missingRuntimes.join(", ")}`);
  }
  return report;
}
