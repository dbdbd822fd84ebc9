/**
 * `deno task fuzz`: the full decoder fuzz run.
 *
 * ```sh
 * deno task fuzz                          # 100,000 mutated inputs per decoder, seed 1
 * deno task fuzz --iterations 1000000 --seed 42 --only decodeHeader
 * ```
 *
 * Exits 1 with a reproducer (target, seed, iteration, input bytes) on the
 * first broken decoder contract; see `tests/fuzz/fuzz.ts` for the contracts.
 *
 * @module
 */

import { formatReports, fuzz, FuzzFailure } from "./fuzz.ts";

function option(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

const iterations = Number(option("iterations", "100000"));
const seed = Number(option("seed", "1"));
const only = option("only", "") || undefined;
if (!Number.isInteger(iterations) || iterations < 0 || !Number.isInteger(seed)) {
  console.error("usage: deno task fuzz [--iterations N] [--seed S] [--only NAME]");
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
