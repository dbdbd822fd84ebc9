/**
 * `deno task bench`: surfaceport's handoff against copying and against the C
 * floor, in one run on one machine (see `docs/benchmarks.md`).
 *
 *   deno task bench [--json PATH] [--svg PATH] [--quick] [--no-pin] [--no-gst] [--runtimes-only]
 *
 * - C floors (`bench/floor.c`, built with `cc -O2` into a temporary
 *   directory; reported as skipped without `cc`): blocking and spinning
 *   round trips per size; pipelined handoffs per second, plain, with
 *   surfaceport's use tracking, and with use tracking and spinning.
 * - `bench/runtime_driver.ts` under Deno, Node and Bun (`bench/runtimes.ts`):
 *   1920x1080 round trips in both modes, pipelined handoffs and the cost of
 *   one wait off the main thread; `--runtimes-only` runs one round of just
 *   these and the C floors.
 * - `bench/driver.ts` (one Deno process per round) against `bench/peer.ts`
 *   processes: surfaceport round trips in the default and the low-latency
 *   mode with the bytes each side allocates, the copy baseline through
 *   Deno's own Unix socket, pipelined handoffs per second.
 *
 * Each round runs every C floor and then every Deno measurement; three
 * rounds (one with `--quick`). Like is compared with like: the low-latency
 * mode with the spinning floor, the default mode with the blocking floor,
 * pipelined with the spinning floor doing the same use tracking; ratios are
 * taken within a round, and the median over the rounds is reported with the
 * spread. `bench/report.ts` turns the rounds into the table, the targets,
 * the JSON and the chart.
 *
 * With `taskset` and at least 2 cores (unless `--no-pin`), the producer side
 * of every measurement (the C parent, the Deno driver and all its threads)
 * runs on core 0 and the consumer side (the C child, every Deno peer) on
 * core 1: the C floor and the library under the same pinning. Without, none
 * is pinned.
 *
 * @module
 */

import { Child, hasTaskset, sizeKey } from "./common.ts";
import { buildFloor, type FloorRound, floorRound, type FloorRoundtrip } from "./floors.ts";
import { benchRuntimes, runtimeReport, type RuntimeRound, runtimeRound } from "./runtimes.ts";
import { type DriverRound, type Machine, reportRounds } from "./report.ts";

const args = [...Deno.args];
function option(name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}
const quick = args.includes("--quick");
/** One round of the C floors and bench/runtime_driver.ts under each runtime, nothing else. */
const runtimesOnly = args.includes("--runtimes-only");
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
const machine: Machine = {
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

// --- the C floor (bench/floors.ts) ---------------------------------------------

const cpus = { producer: producerCpu, consumer: consumerCpu };
const floorDir = await Deno.makeTempDir({ prefix: "surfaceport-floor-" });
const { exe: floorExe, skipped: floorSkipped } = await buildFloor(floorDir, machine.cc);

// --- surfaceport and the copy baseline (bench/driver.ts) ---------------------

async function driverRound(): Promise<DriverRound> {
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
  try {
    return JSON.parse(await driver.readLine(170_000));
  } finally {
    await driver.stop();
  }
}

// --- the rounds ----------------------------------------------------------------

// Every series runs once per round, the C floors and the library interleaved; each figure below
// is the median over the rounds (and ratios are taken within a round, then their median), with
// the spread over the rounds beside it.
const ROUNDS = quick || runtimesOnly ? 1 : 3;
const floorRounds: FloorRound[] = [];
const driverRounds: DriverRound[] = [];
/** bench/runtime_driver.ts under Deno, Node and Bun, per round. */
const runtimeRounds: Record<string, RuntimeRound[]> = {};
let floorSameCore: FloorRoundtrip | null = null;
try {
  for (let r = 0; r < ROUNDS; r++) {
    if (floorExe) {
      console.log(`round ${r + 1}/${ROUNDS}: C floors ...`);
      floorRounds.push(await floorRound(floorExe, quick, cpus));
    } else if (r === 0) {
      console.log(`C floor: skipped (${floorSkipped})`);
    }
    if (!runtimesOnly) {
      console.log(`round ${r + 1}/${ROUNDS}: surfaceport and copy (Deno) ...`);
      driverRounds.push(await driverRound());
    }
    for (const runtime of benchRuntimes) {
      console.log(`round ${r + 1}/${ROUNDS}: surfaceport under ${runtime.name} ...`);
      (runtimeRounds[runtime.name] ??= []).push(
        await runtimeRound(runtime, producerCpu, consumerCpu, quick),
      );
    }
  }
  if (floorExe && pinned) {
    // For reference only: both processes on one core, where a wake-up is a plain context switch.
    const child = new Child(floorExe, [
      "roundtrip",
      "1920",
      "1080",
      quick ? "1000" : "5000",
      "500",
      "0",
      "0",
    ]);
    try {
      floorSameCore = JSON.parse(await child.readLine(60_000));
    } finally {
      await child.stop();
    }
  }
} finally {
  await Deno.remove(floorDir, { recursive: true }).catch(() => {});
}

// --- results -----------------------------------------------------------------

const FULL_HD = sizeKey(1920, 1080);
const runtimesReport = runtimeReport(
  runtimeRounds,
  floorRounds.map((f) => ({
    spinP50: f.spinRoundtrip[FULL_HD].p50_us,
    spinP99: f.spinRoundtrip[FULL_HD].p99_us,
    blockingP50: f.roundtrip[FULL_HD].p50_us,
    spinTrackedPipelined: f.spinTrackedPipelined,
  })),
);
if (runtimesOnly) {
  if (jsonPath) {
    await Deno.writeTextFile(
      jsonPath,
      JSON.stringify({ runtimes: runtimesReport }, null, 2) + "\n",
    );
  }
  Deno.exit(0);
}

await reportRounds(
  {
    machine,
    pinned,
    roundCount: ROUNDS,
    floorRounds,
    driverRounds,
    floorSameCore,
    floorSkipped,
    runtimes: runtimesReport,
  },
  { svgPath, jsonPath },
);

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
