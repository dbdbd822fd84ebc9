/**
 * The subcommands of the `surfaceport` command line, by name. To add one,
 * write a module exporting a `Command` and add one line to `COMMANDS`:
 *
 * ```ts
 * "from-gst": lazy("publish frames from a GStreamer pipeline", () => import("../gst/cli.ts").then((m) => m.fromGst)),
 * ```
 *
 * (`lazy` imports the module only when that command runs).
 *
 * @module
 */

import { type Command, lazy, type LazyCommand } from "./command.ts";
import { list } from "./list.ts";
import { snapshot } from "./snapshot.ts";
import { testcard } from "./testcard.ts";
import { watch } from "./watch.ts";

/** Every subcommand, in the order `surfaceport help` lists them. */
export const COMMANDS: Readonly<Record<string, Command | LazyCommand>> = {
  list,
  watch,
  snapshot,
  preview: lazy(
    "a live view of a stream in the browser (serves 127.0.0.1)",
    () => import("./preview.ts").then((m) => m.preview),
  ),
  testcard,
  "from-gst": lazy(
    "publish a GStreamer unixfdsink's frames as NAME (zero-copy)",
    () => import("./gst.ts").then((m) => m.fromGst),
  ),
  "to-gst": lazy(
    "serve NAME's frames to GStreamer unixfdsrc clients on SOCKET",
    () => import("./gst.ts").then((m) => m.toGst),
  ),
  send: lazy(
    "send NAME's frames to HOST:PORT over RTP/UDP (GStreamer)",
    () => import("./network.ts").then((m) => m.send),
  ),
  receive: lazy(
    "receive a stream sent with `send` on HOST:PORT and publish it as NAME",
    () => import("./network.ts").then((m) => m.receive),
  ),
  "from-pipewire": lazy(
    "publish a PipeWire video node (name or serial) as NAME",
    () => import("./pipewire.ts").then((m) => m.fromPipeWire),
  ),
  "to-pipewire": lazy(
    "make NAME a PipeWire Video/Source node",
    () => import("./pipewire.ts").then((m) => m.toPipeWire),
  ),
  doctor: lazy(
    "check this machine and print a report to paste into an issue",
    () => import("./doctor.ts").then((m) => m.doctor),
  ),
};
