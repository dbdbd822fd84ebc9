/**
 * `deno task fuzz`: the full decoder fuzz run.
 *
 * ```sh
 * deno task fuzz                          # 100,000 mutated inputs per decoder, seed 1
 * deno task fuzz --iterations 1000000 --seed 42 --only decodeHeader
 * deno task fuzz --race 100000            # the shrink race (tests/hostile/shrink_race.ts), 100,000 tries
 * ```
 *
 * On Linux it then runs the shrink race of issue 10 (a sender that shrinks
 * its memfd as soon as the message leaves the queue): 20,000 tries by
 * default, `--race 0` to skip it.
 *
 * Exits 1 with a reproducer (target, seed, iteration, input bytes) on the
 * first broken decoder contract; see `tests/fuzz/fuzz.ts` for the contracts.
 *
 * @module
 */

import { FuzzFailure } from "./contracts.ts";
import { formatReports, fuzz } from "./fuzz.ts";
import { runShrinkRace } from "../hostile/shrink_race.ts";

function option(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

const iterations = Number(option("iterations", "100000"));
const seed = Number(option("seed", "1"));
const only = option("only", "") || undefined;
const raceTries = Number(option("race", only ? "0" : "20000"));
if (
  !Number.isInteger(iterations) || iterations < 0 || !Number.isInteger(seed) ||
  !Number.isInteger(raceTries) || raceTries < 0
) {
  console.error("usage: deno task fuzz [--iterations N] [--seed S] [--only NAME] [--race TRIES]");
  Deno.exit(2);
}

console.log(
  `fuzz: ${iterations} mutated inputs per decoder, seed ${seed}${only ? `, only ${only}` : ""}`,
);
const started = performance.now();
try {
  const reports = fuzz({ iterations, seed, only });
  console.log(formatReports(reports));
  console.log(`fuzz: no broken contract in ${((performance.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  if (!(error instanceof FuzzFailure)) throw error;
  console.error(`fuzz: FAILED\n${error.message}`);
  if (error.cause) console.error(error.cause);
  Deno.exit(1);
}

if (raceTries > 0 && Deno.build.os === "linux") {
  console.log(`race: ${raceTries} shrink-after-send tries against a receiver process`);
  const raceStarted = performance.now();
  const result = await runShrinkRace(raceTries, 600000);
  const frames = result.counts["frame"] ?? 0;
  console.log(
    `race: ${
      JSON.stringify(result.counts)
    }, receiver fds ${result.fdsBefore} -> ${result.fdsAfter}`,
  );
  if (frames > 0 || result.fdsAfter !== result.fdsBefore) {
    console.error("race: FAILED: a shrunk memfd was accepted, or descriptors leaked");
    Deno.exit(1);
  }
  console.log(
    `race: the receiver survived every try in ${
      ((performance.now() - raceStarted) / 1000).toFixed(1)
    } s`,
  );
}
