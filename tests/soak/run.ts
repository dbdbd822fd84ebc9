/**
 * `deno task soak`: 1,000,000 handoffs through a pool between two
 * processes, with descriptor counts and RSS sampled along the way. Exits 1
 * if they did not stay flat (see tests/soak/soak.ts for the tolerances).
 *
 * ```sh
 * deno task soak                     # 1,000,000 handoffs
 * deno task soak --handoffs 100000
 * ```
 *
 * @module
 */

import { formatSoakReport, runSoak } from "./soak.ts";

const at = Deno.args.indexOf("--handoffs");
const handoffs = at >= 0 ? Number(Deno.args[at + 1]) : 1_000_000;
if (!Number.isInteger(handoffs) || handoffs < 100) {
  console.error("usage: deno task soak [--handoffs N]  (N >= 100)");
  Deno.exit(2);
}
const report = await runSoak({ handoffs, progress: (line) => console.log(line) });
console.log(formatSoakReport(report));
Deno.exit(report.problems.length === 0 ? 0 : 1);
