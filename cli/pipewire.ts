/**
 * `surfaceport from-pipewire TARGET NAME` and `surfaceport to-pipewire NAME`:
 * PipeWire video nodes as surfaceport streams and back, through GStreamer's
 * PipeWire plugin (docs/pipewire.md), with a counter line every interval.
 * Linux only.
 *
 * @module
 */

import { publish, subscribe } from "../mod.ts";
import { canonicalFormat } from "../src/core/geometry.ts";
import { PipeWireSink, PipeWireSource } from "../src/gst/pipewire.ts";
import { type Command, integerOption, parseCommandArgs, ticker, UsageError } from "./command.ts";
import { denoGstLauncher } from "./gst_launch.ts";

/**
 * The PipeWire daemon's identity for the bridges' restart watch: the inode
 * and creation times of its socket, `SURFACEPORT_PIPEWIRE_SOCKET` (as this process sees it,
 * e.g. inside a chroot's directory), else `$XDG_RUNTIME_DIR/pipewire-0`.
 */
export function daemonSocketIdentity(): (() => string | undefined) | undefined {
  const runtimeDir = Deno.env.get("XDG_RUNTIME_DIR");
  const socket = Deno.env.get("SURFACEPORT_PIPEWIRE_SOCKET") ??
    (runtimeDir ? `${runtimeDir}/${Deno.env.get("PIPEWIRE_REMOTE") ?? "pipewire-0"}` : undefined);
  if (!socket) return undefined;
  return () => {
    try {
      // The inode number alone is not enough: the file system may give a new socket the old one's.
      const info = Deno.statSync(socket);
      return `${info.dev}:${info.ino}:${info.ctime?.getTime()}:${info.birthtime?.getTime()}`;
    } catch {
      return undefined;
    }
  };
}

function checkedName(text: string, what: string): string {
  if (!/^[A-Za-z0-9._:-]{1,200}$/.test(text)) {
    throw new UsageError(`${what} must be letters, digits and . _ : - (got ${text})`);
  }
  return text;
}

/** `from-pipewire TARGET NAME`. */
export const fromPipeWire: Command = {
  summary: "publish a PipeWire video node (name or serial) as NAME",
  usage: [
    "usage: surfaceport from-pipewire TARGET NAME [--format F] [--max-outstanding N] [--interval MS]",
    "",
    "Captures the PipeWire video node TARGET (its node.name or object.serial) through",
    "gst-launch-1.0 pipewiresrc and publishes its frames as NAME. Frames PipeWire hands",
    "as memfds go without a copy; mapped ones are copied once into --format (default",
    "BGRA; a YUV node already in --format twice). At most --max-outstanding",
    "frames are held for subscribers (default: the publisher's surface budget + 1, so",
    "that a subscriber that stops reading never starves the others). Survives the node and",
    "the PipeWire daemon going away (the pipeline is restarted). XDG_RUNTIME_DIR or",
    "PIPEWIRE_REMOTE say which daemon; SURFACEPORT_GST_LAUNCH replaces gst-launch-1.0;",
    "SURFACEPORT_PIPEWIRE_SOCKET is the daemon's socket as seen from here, watched for",
    "restarts (default $XDG_RUNTIME_DIR/pipewire-0).",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      format: "string",
      "max-outstanding": "string",
      interval: "string",
    });
    if (positionals.length !== 2) throw new UsageError("from-pipewire needs TARGET and NAME");
    const target = checkedName(positionals[0], "TARGET");
    const name = positionals[1];
    const format = values.format === undefined ? "BGRA" : canonicalFormat(values.format);
    if (!format) throw new UsageError(`unknown --format ${values.format}`);
    // Default: the publisher's surface budget + 1 (PipeWireSource asks it), so that one
    // subscriber that stops reading cannot take every held buffer from the others.
    const maxOutstanding = values["max-outstanding"] === undefined
      ? undefined
      : Math.max(1, integerOption(values, "max-outstanding", 1, 4096));
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    const source = PipeWireSource.start(denoGstLauncher, target, {
      format,
      maxOutstanding,
      daemonIdentity: daemonSocketIdentity(),
    });
    using publisher = publish(name);
    const onAbort = () => void source.close();
    io.signal.addEventListener("abort", onAbort, { once: true });
    await io.out(`publishing PipeWire node ${target} as ${name}\n`);
    const stop = ticker(io, interval, () => {
      const s = source.stats;
      return `from-pipewire ${target} → ${name}: received ${s.received}  forwarded ${s.forwarded}  ` +
        `copies ${s.copies} (${s.copyMode})  dropped ${s.dropped}  held ${s.outstanding}  ` +
        `subscribers ${publisher.subscribers.length}  pipeline restarts ${s.restarts}  ` +
        `daemon restarts ${s.daemonRestarts}  stalls ${s.stalls}` +
        (source.lastError ? `  last error: ${source.lastError}` : "");
    });
    try {
      await source.run(publisher);
    } finally {
      io.signal.removeEventListener("abort", onAbort);
      await source.close();
      await stop();
    }
    await io.out("interrupted\n");
    return 0;
  },
};

/** `to-pipewire NAME [--node-name N]`. */
export const toPipeWire: Command = {
  summary: "make NAME a PipeWire Video/Source node",
  usage: [
    "usage: surfaceport to-pipewire NAME [--node-name N] [--fps N] [--timeout MS] [--interval MS]",
    "",
    "Subscribes to NAME (newest frame first) and provides it as the PipeWire",
    "Video/Source node N (default: surfaceport-NAME) through gst-launch-1.0 pipewiresink,",
    "for any PipeWire client (pipewiresrc target-object=N, pw-cat, OBS, the portal).",
    "pipewiresink copies each frame once into PipeWire's buffers (counted); the node is",
    "provided again after each consumer leaves and after a daemon restart.",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      "node-name": "string",
      fps: "string",
      timeout: "string",
      interval: "string",
    });
    if (positionals.length !== 1) throw new UsageError("to-pipewire needs NAME");
    const [name] = positionals;
    const nodeName = checkedName(
      String(values["node-name"] ?? `surfaceport-${name.replace(/[^A-Za-z0-9._:-]/g, "_")}`),
      "--node-name",
    );
    const fps = integerOption(values, "fps", 30, 1000);
    const timeout = integerOption(values, "timeout", 5000);
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    using subscription = await subscribe(name, { timeout, signal: io.signal });
    const sink = PipeWireSink.start(denoGstLauncher, nodeName, {
      fps,
      daemonIdentity: daemonSocketIdentity(),
    });
    const onAbort = () => subscription.close();
    io.signal.addEventListener("abort", onAbort, { once: true });
    await io.out(`providing ${name} as PipeWire node ${nodeName}\n`);
    const stop = ticker(io, interval, () => {
      const s = sink.stats;
      const sent = s.zeroCopy + s.copies;
      return `to-pipewire ${name} → ${nodeName}: received ${s.received}  sent ${sent}  ` +
        `copies ${sent + s.copies} (pipewiresink copies each)  dropped ${s.dropped}  ` +
        `held ${s.outstanding}  clients ${s.clients}  cut off ${s.cutOff}  ` +
        `client lost ${s.clientLost}  ` +
        `pipeline restarts ${s.restarts}  daemon restarts ${s.daemonRestarts}` +
        (sink.lastError ? `  last error: ${sink.lastError}` : "");
    });
    try {
      await sink.run(subscription);
    } finally {
      io.signal.removeEventListener("abort", onAbort);
      await sink.close();
      await stop();
    }
    await io.out(io.signal.aborted ? "interrupted\n" : "end of stream\n");
    return 0;
  },
};
