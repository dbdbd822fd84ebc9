/**
 * The subcommands of the `surfaceport` command line, by name. To add one,
 * write a module exporting a `Command` and add one line to `COMMANDS` (plus
 * its import): e.g. `"from-gst": fromGst,`.
 *
 * @module
 */

import type { Command } from "./command.ts";
import { fromGst, toGst } from "./gst.ts";
import { list } from "./list.ts";
import { preview } from "./preview.ts";
import { snapshot } from "./snapshot.ts";
import { testcard } from "./testcard.ts";
import { watch } from "./watch.ts";

/** Every subcommand, in the order `surfaceport help` lists them. */
export const COMMANDS: Readonly<Record<string, Command>> = {
  list,
  watch,
  snapshot,
  preview,
  testcard,
  "from-gst": fromGst,
  "to-gst": toGst,
};
