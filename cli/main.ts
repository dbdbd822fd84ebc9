/**
 * The `surfaceport` command line: see what streams exist and what they
 * carry, without writing code.
 *
 * ```sh
 * deno run -A jsr:@surfaceport/surfaceport/cli list
 * deno task cli watch camera          # in a checkout
 * ```
 *
 * Subcommands: `list`, `watch NAME`, `snapshot NAME [out.png]`,
 * `preview NAME [--port N]`, `testcard NAME` (`help COMMAND` for details).
 *
 * @module
 */

import type { Command, CommandIO, LazyCommand } from "./command.ts";
import { UsageError } from "./command.ts";
import { COMMANDS } from "./commands.ts";

export type { Command, CommandIO, LazyCommand } from "./command.ts";
export { lazy, UsageError } from "./command.ts";
export { COMMANDS } from "./commands.ts";

function helpText(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  const lines = Object.entries(COMMANDS).map(([name, command]) =>
    `  ${name.padEnd(width)}  ${command.summary}`
  );
  return [
    "usage: surfaceport COMMAND [ARGS...]",
    "",
    "commands:",
    ...lines,
    "",
    "surfaceport help COMMAND shows a command's options.",
    "",
  ].join("\n");
}

function resolve(entry: Command | LazyCommand): Promise<Command> {
  return "load" in entry ? entry.load() : Promise.resolve(entry);
}

/** Writes to the real standard output and error; aborts `signal` on Ctrl-C / SIGTERM. */
function processIO(): CommandIO & Disposable {
  const encoder = new TextEncoder();
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const onSignal = () => controller.abort(new DOMException("interrupted", "AbortError"));
  for (const name of signals) Deno.addSignalListener(name, onSignal);
  const write = async (stream: typeof Deno.stdout, text: string) => {
    const bytes = encoder.encode(text);
    for (let done = 0; done < bytes.length;) done += await stream.write(bytes.subarray(done));
  };
  return {
    out: (text) => write(Deno.stdout, text),
    err: (text) => write(Deno.stderr, text),
    isTerminal: Deno.stdout.isTerminal(),
    signal: controller.signal,
    [Symbol.dispose]() {
      for (const name of signals) Deno.removeSignalListener(name, onSignal);
    },
  };
}

/**
 * Runs the command line with `args` (as `Deno.args`) and resolves to the
 * exit code: 0 on success, 1 on failure, 2 on bad usage.
 */
export async function main(args: string[], io?: CommandIO): Promise<number> {
  using owned = io ? undefined : processIO();
  const out = io ?? owned!;
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    const entry = rest[0] !== undefined && Object.hasOwn(COMMANDS, rest[0])
      ? COMMANDS[rest[0]]
      : undefined;
    const about = entry ? await resolve(entry) : undefined;
    if (about) await out.out(`${about.usage}\n`);
    else await out.out(helpText());
    return 0;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!entry) {
    await out.err(`surfaceport: unknown command ${JSON.stringify(name)}\n\n${helpText()}`);
    return 2;
  }
  const command = await resolve(entry);
  if (rest.includes("--help") || rest.includes("-h")) {
    await out.out(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(rest, out);
  } catch (error) {
    if (error instanceof UsageError) {
      await out.err(`surfaceport ${name}: ${error.message}\n\n${command.usage}\n`);
      return 2;
    }
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    await out.err(`surfaceport ${name}: ${message}\n`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
