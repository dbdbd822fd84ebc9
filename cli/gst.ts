/**
 * `surfaceport from-gst SOCKET NAME` and `surfaceport to-gst NAME SOCKET`:
 * the GStreamer bridges (docs/gstreamer.md) as commands, with a counter
 * line every interval. Linux only.
 *
 * @module
 */

import {
  type FromGstStats,
  GstSinkBridge,
  GstSourceBridge,
  publish,
  subscribe,
  type ToGstStats,
} from "../mod.ts";
import { type Command, integerOption, parseCommandArgs, ticker, UsageError } from "./command.ts";

/** One line of from-gst counters. */
export function fromGstLine(socket: string, name: string, s: FromGstStats, extra: string): string {
  return `from-gst ${socket} → ${name}: ${extra}received ${s.received}  forwarded ${s.forwarded}  ` +
    `copies ${s.copies}  dropped ${s.dropped}  released ${s.released}  held ${s.outstanding}`;
}

/** One line of to-gst counters. */
export function toGstLine(name: string, socket: string, s: ToGstStats): string {
  return `to-gst ${name} → ${socket}: received ${s.received}  zero-copy ${s.zeroCopy}  ` +
    `copies ${s.copies}  dropped ${s.dropped}  released ${s.released}  held ${s.outstanding}  ` +
    `clients ${s.clients}  skipped ${s.skipped}  cut off ${s.cutOff}`;
}

const COMMON_OPTIONS = {
  timeout: "string",
  interval: "string",
  "max-outstanding": "string",
} as const;

/** `from-gst SOCKET NAME`. */
export const fromGst: Command = {
  summary: "publish a GStreamer unixfdsink's frames as NAME (zero-copy)",
  usage: [
    "usage: surfaceport from-gst SOCKET NAME [--timeout MS] [--max-outstanding N] [--interval MS]",
    "                            [--reconnect]",
    "",
    "Connects to the unixfdsink at SOCKET (a path, or @name for socket-type=abstract",
    "socket-path=name) and publishes every buffer under NAME without copying it: the",
    "subscribers get GStreamer's own memory (only a buffer split over several memories",
    "is copied, and counted). A buffer goes back to GStreamer once every subscriber",
    "closed it. Give the sink wait-for-connection=true. Ends at EOS, unless --reconnect.",
    "  --timeout MS          how long to wait for the sink to appear (default 5000)",
    "  --max-outstanding N   buffers held for subscribers at most (default: what the publisher's",
    "                        subscribers may hold, + 1; fewer lets one subscriber stall the others)",
    "  --interval MS         how often to print the counters (default 1000)",
    "  --reconnect           outlive the pipeline: when the sink goes away (EOS, a restart,",
    "                        a crash) wait for it and connect again, until Ctrl-C",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      ...COMMON_OPTIONS,
      reconnect: "boolean",
    });
    if (positionals.length !== 2) throw new UsageError("from-gst needs SOCKET and NAME");
    const [socket, name] = positionals;
    const timeout = integerOption(values, "timeout", 5000);
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    // Default: the publisher's surfaceBudget + 1 (GstSourceBridge.forward's).
    const maxOutstanding = values["max-outstanding"] === undefined
      ? undefined
      : Math.max(1, integerOption(values, "max-outstanding", 1, 4096));
    const reconnect = values.reconnect === true;
    using publisher = publish(name);
    let bridge: GstSourceBridge | undefined;
    let connections = 0;
    const onAbort = () => bridge?.close();
    io.signal.addEventListener("abort", onAbort, { once: true });
    const shape = () => {
      const caps = bridge?.caps;
      return caps ? `${caps.format} ${caps.width}x${caps.height}  ` : "";
    };
    const stats = (): FromGstStats =>
      bridge?.stats ??
        { received: 0, forwarded: 0, copies: 0, dropped: 0, released: 0, outstanding: 0 };
    const stop = ticker(
      io,
      interval,
      () =>
        fromGstLine(
          socket,
          name,
          stats(),
          `${shape()}subscribers ${publisher.subscribers.length}  ` +
            (reconnect ? `connections ${connections}  ` : ""),
        ),
    );
    try {
      await GstSourceBridge.forward(socket, publisher, {
        timeout,
        maxOutstanding,
        signal: io.signal,
        reconnect,
        onConnect: (next) => {
          bridge = next;
          connections++;
        },
      });
    } catch (error) {
      if (!io.signal.aborted) throw error;
    } finally {
      io.signal.removeEventListener("abort", onAbort);
      bridge?.close();
      await stop();
    }
    await io.out(io.signal.aborted ? "interrupted\n" : "end of stream\n");
    return 0;
  },
};

/** `to-gst NAME SOCKET`. */
export const toGst: Command = {
  summary: "serve NAME's frames to GStreamer unixfdsrc clients on SOCKET",
  usage: [
    "usage: surfaceport to-gst NAME SOCKET [--timeout MS] [--max-outstanding N] [--fps N] [--interval MS]",
    "",
    "Subscribes to NAME (newest frame first) and serves its frames on SOCKET (a path,",
    "created 0600, or @name) for `unixfdsrc socket-path=SOCKET` (or socket-type=abstract",
    "socket-path=name). Frames in GStreamer's default layout go without a copy; others",
    "are copied once (counted). A frame is held until GStreamer gives it back.",
    "  --timeout MS          how long to wait for NAME to appear (default 5000)",
    "  --max-outstanding N   frames held for GStreamer at most, all clients together",
    "                        (default 2); one client holds at most two, a client that holds",
    "                        them for 2 s or stops reading for 1 s is disconnected",
    "  --fps N               framerate to announce in the caps (default 0/1, variable)",
    "  --interval MS         how often to print the counters (default 1000)",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, { ...COMMON_OPTIONS, fps: "string" });
    if (positionals.length !== 2) throw new UsageError("to-gst needs NAME and SOCKET");
    const [name, socket] = positionals;
    const timeout = integerOption(values, "timeout", 5000);
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    const maxOutstanding = Math.max(1, integerOption(values, "max-outstanding", 2, 4096));
    const fps = integerOption(values, "fps", 0, 1000);
    using subscription = await subscribe(name, { timeout, signal: io.signal });
    using bridge = GstSinkBridge.listen(socket, { maxOutstanding, fps: fps || undefined });
    const onAbort = () => subscription.close();
    io.signal.addEventListener("abort", onAbort, { once: true });
    await io.out(`serving ${name} on ${socket}\n`);
    const stop = ticker(io, interval, () => toGstLine(name, socket, bridge.stats));
    try {
      await bridge.run(subscription);
    } finally {
      io.signal.removeEventListener("abort", onAbort);
      await stop();
    }
    await io.out(io.signal.aborted ? "interrupted\n" : "end of stream\n");
    return 0;
  },
};
