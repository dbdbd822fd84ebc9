/**
 * `deno task bench`: surfaceport's handoff against copying and against the C
 * floor, in one run on one machine (see `docs/benchmarks.md`).
 *
 *   deno task bench [--json PATH] [--svg PATH] [--quick] [--no-pin] [--no-gst]
 *
 * - C floor (`bench/floor.c`, built with `cc -O2` into a temporary
 *   directory; reported as skipped without `cc`): round trip per size, and
 *   pipelined handoffs per second.
 * - `bench/driver.ts` (one Deno process) against `bench/peer.ts` processes:
 *   surfaceport round trips in the default and the low-latency mode, the
 *   copy baseline through Deno's own Unix socket, pipelined handoffs per
 *   second.
 *
 * With `taskset` and at least 2 cores (unless `--no-pin`), the producer side
 * of every measurement (the C parent, the Deno driver and all its threads)
 * runs on core 0 and the consumer side (the C child, every Deno peer) on
 * core 1: the C floor and the library under the same pinning. Without, none
 * is pinned.
 *
 * @module
 */

import { latencyChart } from "./chart.ts";
import { Child, hasTaskset, sizeKey, SIZES } from "./common.ts";

const args = [...Deno.args];
function option(name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}
const quick = args.includes("--quick");
const jsonPath = option("--json");
const svgPath = option("--svg") ?? new URL("results/latency.svg", import.meta.url).pathname;
const here = new URL(".", import.meta.url).pathname;

// --- the machine -------------------------------------------------------------

async function text(command: string, argv: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(command, { args: argv, stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

// Through `cat`/`uname`: Deno asks for more than --allow-read to read /proc itself.
const cpuinfo = await text("cat", ["/proc/cpuinfo"]) ?? "";
const machine = {
  cpus: Number(await text("nproc", [])) || navigator.hardwareConcurrency,
  model: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown",
  kernel: await text("uname", ["-r"]) ?? "unknown",
  os: `${Deno.build.os} ${Deno.build.arch}`,
  deno: Deno.version.deno,
  cc: (await text("cc", ["--version"]))?.split("\n")[0] ?? null,
};
const pinned = !args.includes("--no-pin") && machine.cpus >= 2 && await hasTaskset();
const producerCpu = pinned ? 0 : undefined;
const consumerCpu = pinned ? 1 : undefined;

console.log(
  `machine: ${machine.model}, ${machine.cpus} cores, Linux ${machine.kernel}, Deno ${machine.deno}`,
);
console.log(
  pinned
    ? "pinning: producer side on core 0, consumer side on core 1 (C floor and Deno alike)"
    : "pinning: none (no taskset, fewer than 2 cores, or --no-pin)",
);

// --- the C floor -------------------------------------------------------------

interface FloorRoundtrip {
  p50_us: number;
  p99_us: number;
  mean_us: number;
}

async function runFloor(floor: string, argv: string[]): Promise<Record<string, number>> {
  const cpus = pinned ? [String(producerCpu), String(consumerCpu)] : ["-1", "-1"];
  const child = new Child(floor, [...argv, ...cpus]);
  try {
    return JSON.parse(await child.readLine(60_000));
  } finally {
    await child.stop();
  }
}

let floorExe: string | undefined;
let floorSkipped: string | undefined;
const floorDir = await Deno.makeTempDir({ prefix: "surfaceport-floor-" });
if (machine.cc) {
  const build = await new Deno.Command("cc", {
    args: ["-O2", "-Wall", "-o", `${floorDir}/floor`, `${here}floor.c`],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (build.success) floorExe = `${floorDir}/floor`;
  else floorSkipped = "cc failed to build bench/floor.c";
} else {
  floorSkipped = "no cc on this machine";
}

const floorRoundtrip: Record<string, FloorRoundtrip> = {};
let floorPipelined: number | null = null;
let floorTrackedPipelined: number | null = null;
let floorSameCore: FloorRoundtrip | null = null;
try {
  if (floorExe) {
    console.log("C floor: round trips ...");
    const iterations = quick ? "1000" : "5000";
    for (const [width, height] of SIZES) {
      floorRoundtrip[sizeKey(width, height)] = await runFloor(floorExe, [
        "roundtrip",
        String(width),
        String(height),
        iterations,
        "500",
      ]) as unknown as FloorRoundtrip;
    }
    console.log("C floor: pipelined ...");
    floorPipelined =
      (await runFloor(floorExe, ["pipelined", "1920", "1080", "4", quick ? "300" : "2000"]))
        .per_s;
    // The same, with surfaceport's use tracking (a fresh OFD-locked description per send,
    // F_OFD_GETLK before reuse): the floor for the library's protocol, not just for fd passing.
    floorTrackedPipelined = (await runFloor(floorExe, [
      "pipelined-tracked",
      "1920",
      "1080",
      "4",
      quick ? "300" : "2000",
    ])).per_s;
    if (pinned) {
      // For reference only: both processes on one core, where a wake-up is a plain context switch.
      const child = new Child(floorExe, ["roundtrip", "1920", "1080", iterations, "500", "0", "0"]);
      try {
        floorSameCore = JSON.parse(await child.readLine(60_000));
      } finally {
        await child.stop();
      }
    }
  } else {
    console.log(`C floor: skipped (${floorSkipped})`);
  }
} finally {
  await Deno.remove(floorDir, { recursive: true }).catch(() => {});
}

// --- surfaceport and the copy baseline (bench/driver.ts) ---------------------

interface Latency {
  p50: number;
  p99: number;
  mean?: number;
}
interface DriverResult {
  spinMicros: number;
  roundtrip: { default: Record<string, Latency>; lowLatency: Record<string, Latency> };
  copy: Record<string, Latency>;
  pipelined: { default: number; lowLatency: number };
}

console.log("surfaceport and copy (Deno) ...");
const driver = new Child(
  Deno.execPath(),
  [
    "run",
    "--allow-ffi",
    "--allow-read",
    "--allow-write",
    "--allow-run",
    "--allow-env",
    "--allow-net",
    `${here}driver.ts`,
    JSON.stringify({ peerCpu: consumerCpu ?? null, quick }),
  ],
  producerCpu,
);
let deno: DriverResult;
try {
  deno = JSON.parse(await driver.readLine(170_000));
} finally {
  await driver.stop();
}

// --- results -----------------------------------------------------------------

const keys = SIZES.map(([w, h]) => sizeKey(w, h));
const round = (v: number) => Math.round(v * 10) / 10;
const pick = (table: Record<string, Latency>, field: "p50" | "p99") =>
  Object.fromEntries(keys.map((k) => [k, round(table[k][field])]));
const fastest = keys.every((k) => deno.roundtrip.lowLatency[k].p50 <= deno.roundtrip.default[k].p50)
  ? "lowLatency"
  : "default";
const best = deno.roundtrip[fastest];
const pipelinedBest = Math.max(deno.pipelined.default, deno.pipelined.lowLatency);
const floorP50 = floorExe
  ? Object.fromEntries(keys.map((k) => [k, round(floorRoundtrip[k].p50_us)]))
  : null;

const results = {
  machine: { ...machine, pinned },
  fastest_mode: fastest === "lowLatency" ? `spinMicros: ${deno.spinMicros}` : "default",
  spin_micros: deno.spinMicros,
  roundtrip_p50_us: pick(best, "p50"),
  roundtrip_p99_us: pick(best, "p99"),
  default_roundtrip_p50_us: pick(deno.roundtrip.default, "p50"),
  default_roundtrip_p99_us: pick(deno.roundtrip.default, "p99"),
  low_latency_roundtrip_p50_us: pick(deno.roundtrip.lowLatency, "p50"),
  low_latency_roundtrip_p99_us: pick(deno.roundtrip.lowLatency, "p99"),
  floor_roundtrip_p50_us: floorP50,
  floor_roundtrip_p99_us: floorExe
    ? Object.fromEntries(keys.map((k) => [k, round(floorRoundtrip[k].p99_us)]))
    : null,
  floor_same_core_roundtrip_p50_us: floorSameCore ? round(floorSameCore.p50_us) : null,
  floor_skipped: floorSkipped ?? null,
  copy_p50_us: pick(deno.copy, "p50"),
  copy_p99_us: pick(deno.copy, "p99"),
  pipelined_per_s: Math.round(pipelinedBest),
  default_pipelined_per_s: Math.round(deno.pipelined.default),
  low_latency_pipelined_per_s: Math.round(deno.pipelined.lowLatency),
  floor_pipelined_per_s: floorPipelined === null ? null : Math.round(floorPipelined),
  floor_tracked_pipelined_per_s: floorTrackedPipelined === null
    ? null
    : Math.round(floorTrackedPipelined),
};

const fmt = (v: number) => v >= 1000 ? v.toFixed(0) : v.toPrecision(3);
const ratio = (a: number, b: number) => `${(a / b).toFixed(a / b >= 10 ? 0 : 2)}x`;
const rows: string[][] = [[
  "frame",
  "low-latency p50/p99 µs",
  "default p50/p99 µs",
  "C floor p50 µs",
  "copy p50 µs",
  "copy / fastest",
  "fastest / floor",
]];
for (const k of keys) {
  const low = deno.roundtrip.lowLatency[k], def = deno.roundtrip.default[k];
  rows.push([
    k,
    `${fmt(low.p50)} / ${fmt(low.p99)}`,
    `${fmt(def.p50)} / ${fmt(def.p99)}`,
    floorP50 ? fmt(floorP50[k]) : "skipped",
    fmt(deno.copy[k].p50),
    ratio(deno.copy[k].p50, best[k].p50),
    floorP50 ? ratio(best[k].p50, floorP50[k]) : "-",
  ]);
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
console.log("\nround trip (two fd handoffs) vs copying one frame one way:");
for (const [i, row] of rows.entries()) {
  console.log("| " + row.map((cell, j) => cell.padEnd(widths[j])).join(" | ") + " |");
  if (i === 0) console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
}
console.log(
  `\npipelined 1920x1080, pool of 4: surfaceport ${results.pipelined_per_s}/s ` +
    `(default ${results.default_pipelined_per_s}/s, low-latency ` +
    `${results.low_latency_pipelined_per_s}/s), C floor ` +
    (floorPipelined === null
      ? "skipped"
      : `${results.floor_pipelined_per_s}/s (ratio ${
        (pipelinedBest / floorPipelined).toFixed(2)
      })`),
);
if (floorTrackedPipelined !== null) {
  console.log(
    `the same protocol in C (fresh locked description per send, F_OFD_GETLK before reuse): ` +
      `${results.floor_tracked_pipelined_per_s}/s (surfaceport / that: ${
        (pipelinedBest / floorTrackedPipelined).toFixed(2)
      })`,
  );
}
if (floorSameCore) {
  console.log(
    `reference: C floor with both processes on core 0, 1920x1080: p50 ${
      fmt(floorSameCore.p50_us)
    } µs`,
  );
}

const small = keys[0], large = keys[keys.length - 1];
const targets: [string, boolean | null, string][] = [
  [
    "4K round trip p50 >= 100x faster than copying the 4K frame",
    deno.copy[large].p50 / best[large].p50 >= 100,
    ratio(deno.copy[large].p50, best[large].p50),
  ],
  [
    "round trip p50 at 4K <= 1.2x that at 640x480",
    best[large].p50 / best[small].p50 <= 1.2,
    ratio(best[large].p50, best[small].p50),
  ],
  [
    "round trip p50 within 3x of the C floor (every size)",
    floorP50 ? keys.every((k) => best[k].p50 / floorP50[k] <= 3) : null,
    floorP50 ? keys.map((k) => ratio(best[k].p50, floorP50[k])).join(", ") : "floor skipped",
  ],
  [
    "pipelined throughput >= half the C floor's",
    floorPipelined === null ? null : pipelinedBest / floorPipelined >= 0.5,
    floorPipelined === null ? "floor skipped" : (pipelinedBest / floorPipelined).toFixed(2),
  ],
];
console.log("\ntargets:");
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
      label: `surfaceport spin ${deno.spinMicros} µs`,
      color: "#2ca02c",
      points: results.low_latency_roundtrip_p50_us,
    },
    ...(floorP50 ? [{ label: "C floor", color: "#555", dashed: true, points: floorP50 }] : []),
  ],
);
await Deno.mkdir(new URL(".", `file://${svgPath}`).pathname, { recursive: true });
await Deno.writeTextFile(svgPath, chart);
console.log(`\nchart: ${svgPath}`);
if (jsonPath) {
  await Deno.writeTextFile(jsonPath, JSON.stringify(results, null, 2) + "\n");
  console.log(`json: ${jsonPath}`);
}

// Publishing one frame to 1, 2 and 4 subscribers (bench/publish.ts), its keys in the same JSON.
const { runPublishBenchPinned } = await import("./publish.ts");
const publishing = await runPublishBenchPinned({ quick, pin: !args.includes("--no-pin") });
if (jsonPath) {
  const merged = { ...JSON.parse(await Deno.readTextFile(jsonPath)), ...publishing };
  await Deno.writeTextFile(jsonPath, JSON.stringify(merged, null, 2) + "\n");
}

// The GStreamer bridge (bench/gst.ts), in its own process; it says why when it cannot run.
if (!args.includes("--no-gst")) {
  const gst = new URL("gst.ts", import.meta.url).pathname;
  console.log("");
  const flags = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-run", "--allow-env"];
  await new Deno.Command(Deno.execPath(), { args: ["run", ...flags, gst] }).spawn().status;
}
