/**
 * The shape of a `surfaceport` subcommand, shared by every module that adds
 * one (see `commands.ts`).
 *
 * @module
 */

/** Where a command writes, so tests and embedders can capture it. */
export interface CommandIO {
  /** Writes text to standard output. */
  out(text: string): Promise<void>;
  /** Writes text to standard error. */
  err(text: string): Promise<void>;
  /** True when standard output is a terminal (in-place refresh is allowed). */
  isTerminal: boolean;
  /** Aborts on Ctrl-C (SIGINT) or SIGTERM: long-running commands end cleanly then. */
  signal: AbortSignal;
}

/** One subcommand of the `surfaceport` command line. */
export interface Command {
  /** One line for the command list of `surfaceport help`. */
  summary: string;
  /** The usage text, starting with the synopsis line (`surfaceport NAME ...`). */
  usage: string;
  /**
   * Runs the command with the arguments after its name; resolves to the
   * process exit code. Throws `UsageError` for bad arguments.
   */
  run(args: string[], io: CommandIO): Promise<number>;
}

/**
 * A command whose module is imported only when it runs (so `surfaceport
 * list` never loads, say, GStreamer bindings): its one-line summary, and a
 * loader.
 */
export interface LazyCommand {
  /** One line for the command list of `surfaceport help`. */
  summary: string;
  /** Imports the command's module and returns the command. */
  load(): Promise<Command>;
}

/**
 * A {@link LazyCommand}: `lazy("summary", () => import("./x.ts").then((m) => m.x))`,
 * one line in `COMMANDS`.
 */
export function lazy(summary: string, load: () => Promise<Command>): LazyCommand {
  return { summary, load };
}

/** Bad command-line arguments: the dispatcher prints the message and the command's usage. */
export class UsageError extends Error {
  /** Creates the error with what was wrong. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A parsed command line: named options and positional arguments. */
export interface ParsedArgs {
  /** Option values by name (`--port 8080` gives `{ port: "8080" }`; flags give `true`). */
  values: Record<string, string | boolean | undefined>;
  /** The arguments that are not options. */
  positionals: string[];
}

/**
 * Parses `args` against `options` (`{ port: "string", once: "boolean" }`),
 * throwing `UsageError` for unknown options or missing values.
 */
export function parseCommandArgs(
  args: string[],
  options: Record<string, "string" | "boolean">,
): ParsedArgs {
  const values: Record<string, string | boolean | undefined> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--")) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const key = arg.slice(2, eq < 0 ? undefined : eq);
    const type = Object.hasOwn(options, key) ? options[key] : undefined;
    if (!type) throw new UsageError(`unknown option --${key}`);
    if (type === "boolean") {
      if (eq >= 0) throw new UsageError(`--${key} takes no value`);
      values[key] = true;
    } else if (eq >= 0) {
      values[key] = arg.slice(eq + 1);
    } else {
      if (i + 1 >= args.length) throw new UsageError(`--${key} needs a value`);
      values[key] = args[++i];
    }
  }
  return { values, positionals };
}

/** A non-negative integer option, or `fallback` when absent; `UsageError` otherwise. */
export function integerOption(
  values: ParsedArgs["values"],
  key: string,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const raw = values[key];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || value > max) {
    throw new UsageError(
      `--${key} must be an integer from 0 to ${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return value;
}

/**
 * Writes the line `line()` gives every `interval` ms (a failed write is
 * skipped) until the returned function is called; that one writes it once
 * more, for the final counts.
 */
export function ticker(io: CommandIO, interval: number, line: () => string): () => Promise<void> {
  const timer = setInterval(() => io.out(`${line()}\n`).catch(() => {}), interval);
  return async () => {
    clearInterval(timer);
    await io.out(`${line()}\n`);
  };
}
