/**
 * The C floors of `deno task bench` (`bench/floor.c`, built with `cc -O2`
 * into a temporary directory): one round of every floor, and how to build it.
 *
 * @module
 */

import { Child, sizeKey, SIZES } from "./common.ts";

/** One floor's round trips (µs). */
export interface FloorRoundtrip {
  p50_us: number;
  p99_us: number;
  mean_us: number;
}

/** One round of every C floor. */
export interface FloorRound {
  /** Blocking round trips (the floor of the default mode), by size. */
  roundtrip: Record<string, FloorRoundtrip>;
  /** Spinning round trips (the floor of the low-latency mode), by size. */
  spinRoundtrip: Record<string, FloorRoundtrip>;
  pipelined: number;
  trackedPipelined: number;
  spinTrackedPipelined: number;
  /**
   * The wake-up alone (1-byte ping-pongs, no descriptor): blocking `read` on
   * a stream, `epoll_wait` + `read` as a runtime's reactor waits, blocking
   * `recv` on a seqpacket socket (issue 24).
   */
  pingpong: { stream: FloorRoundtrip; streamEpoll: FloorRoundtrip; seqpacket: FloorRoundtrip };
}

/** Where the floors' processes run: the producer's and the consumer's core, or unpinned. */
export interface FloorCpus {
  producer: number | undefined;
  consumer: number | undefined;
}

/** Runs the floor executable with `argv` and returns the JSON line it prints. */
export async function runFloor(
  floor: string,
  argv: string[],
  cpus: FloorCpus,
): Promise<Record<string, number>> {
  const pinning = cpus.producer === undefined
    ? ["-1", "-1"]
    : [String(cpus.producer), String(cpus.consumer)];
  const child = new Child(floor, [...argv, ...pinning]);
  try {
    return JSON.parse(await child.readLine(60_000));
  } finally {
    await child.stop();
  }
}

/** Builds `bench/floor.c` into `dir` with `cc`: the executable, or why not. */
export async function buildFloor(
  dir: string,
  cc: string | null,
): Promise<{ exe?: string; skipped?: string }> {
  if (!cc) return { skipped: "no cc on this machine" };
  const build = await new Deno.Command("cc", {
    args: ["-O2", "-Wall", "-o", `${dir}/floor`, new URL("floor.c", import.meta.url).pathname],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return build.success ? { exe: `${dir}/floor` } : { skipped: "cc failed to build bench/floor.c" };
}

/** One round of every C floor. */
export async function floorRound(
  exe: string,
  quick: boolean,
  cpus: FloorCpus,
): Promise<FloorRound> {
  const iterations = quick ? "1000" : "5000";
  const round: FloorRound = {
    roundtrip: {},
    spinRoundtrip: {},
    pipelined: 0,
    trackedPipelined: 0,
    spinTrackedPipelined: 0,
    pingpong: {} as FloorRound["pingpong"],
  };
  for (const [width, height] of SIZES) {
    const size = [String(width), String(height), iterations, "500"];
    round.roundtrip[sizeKey(width, height)] = await runFloor(exe, [
      "roundtrip",
      ...size,
    ], cpus) as unknown as FloorRoundtrip;
    round.spinRoundtrip[sizeKey(width, height)] = await runFloor(exe, [
      "roundtrip-spin",
      ...size,
    ], cpus) as unknown as FloorRoundtrip;
  }
  const pingpong = (mode: string) =>
    runFloor(exe, [mode, "1", "1", iterations, "500"], cpus) as Promise<unknown> as Promise<
      FloorRoundtrip
    >;
  round.pingpong = {
    stream: await pingpong("pingpong-stream"),
    streamEpoll: await pingpong("pingpong-stream-epoll"),
    seqpacket: await pingpong("pingpong-seqpacket"),
  };
  const pipe = ["1920", "1080", "4", quick ? "300" : "1500"];
  round.pipelined = (await runFloor(exe, ["pipelined", ...pipe], cpus)).per_s;
  // The same, with surfaceport's use tracking (a fresh OFD-locked description per send,
  // F_OFD_GETLK before reuse): the floor for the library's protocol, not just for fd passing.
  round.trackedPipelined = (await runFloor(exe, ["pipelined-tracked", ...pipe], cpus)).per_s;
  round.spinTrackedPipelined =
    (await runFloor(exe, ["pipelined-tracked-spin", ...pipe], cpus)).per_s;
  return round;
}
