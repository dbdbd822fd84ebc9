/**
 * The other runtimes for the tests (found by `tools/runtimes.ts`): a test
 * that needs a missing one is ignored with the reason in its name.
 *
 * @module
 */

import { Child } from "./helpers.ts";
import { repositoryRoot, type RuntimeBinary, runtimes } from "../tools/runtimes.ts";

export { repositoryRoot, type RuntimeBinary, runtimes };

/** Why `name` cannot run here, for a test's name; `undefined` if it can. */
export function missing(name: "node" | "bun"): string | undefined {
  return runtimes[name]
    ? undefined
    : `${name} not found (set SURFACEPORT_${name.toUpperCase()} or run .ci/run, which installs it into .rt)`;
}

/** Starts `tests/peers/runtime_peer.ts` with `args` under `runtime`. */
export function spawnPeer(runtime: RuntimeBinary, args: string[]): Child {
  const [command, commandArgs] = runtime.command(
    `${repositoryRoot}tests/peers/runtime_peer.ts`,
    args,
  );
  return new Child(command, commandArgs);
}
