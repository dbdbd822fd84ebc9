/**
 * Running the `surfaceport` command line the way a user runs it (`deno run
 * cli/main.ts ...` in a child process), for the CLI tests: a command to
 * completion, or a test card until it publishes.
 *
 * @module
 */

import { Child, CLI, CLI_FLAGS, runRepoScript, type ScriptOutput } from "./helpers.ts";

/** Runs the CLI to completion (bounded), returning exit code and output. */
export function runCli(args: string[], ms = 30000): Promise<ScriptOutput> {
  return runRepoScript(CLI_FLAGS.slice(1), "cli/main.ts", args, ms);
}

/** Starts `surfaceport testcard NAME ...` and waits until it publishes. */
export async function testcard(name: string, ...args: string[]): Promise<Child> {
  const child = new Child(Deno.execPath(), [...CLI_FLAGS, CLI, "testcard", name, ...args]);
  try {
    await child.line(`testcard ${name}:`);
  } catch (error) {
    await child[Symbol.asyncDispose]();
    throw error;
  }
  return child;
}
