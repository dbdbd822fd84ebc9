/**
 * `surfaceport list`: the live channels and publishers of this user on this
 * machine, one per line.
 *
 * @module
 */

import { type Command, parseCommandArgs, UsageError } from "./command.ts";
import { listEndpoints } from "./source.ts";

/** `list [--json]`. */
export const list: Command = {
  summary: "the live channels and publishers, one per line",
  usage: [
    "usage: surfaceport list [--json]",
    "",
    "Prints one line per live endpoint of this user on this machine:",
    "NAME, KIND (channel or publisher), PID and, for publishers, SUBSCRIBERS.",
    "  --json   one JSON object per line instead",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, { json: "boolean" });
    if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
    const endpoints = await listEndpoints();
    if (values.json) {
      await io.out(endpoints.map((e) => JSON.stringify(e) + "\n").join(""));
      return 0;
    }
    if (endpoints.length === 0) {
      if (io.isTerminal) await io.err("no surfaceport endpoints of this user are live\n");
      return 0;
    }
    const width = Math.max(4, ...endpoints.map((e) => e.name.length));
    let text = "";
    for (const e of endpoints) {
      const subscribers = e.kind === "publisher" ? ` subscribers=${e.subscribers ?? 0}` : "";
      text += `${e.name.padEnd(width)}  ${e.kind.padEnd(9)}  pid=${e.pid ?? "?"}${subscribers}\n`;
    }
    await io.out(text);
    return 0;
  },
};
