/**
 * `surfaceport send NAME HOST:PORT` and `surfaceport receive HOST:PORT NAME`:
 * a stream to another machine over RTP/UDP or SRT through GStreamer
 * (docs/network.md), with a counter line every interval. Linux only.
 *
 * @module
 */

import { publish, subscribe } from "../mod.ts";
import { canonicalFormat } from "../src/core/geometry.ts";
import { GstNetworkReceiver, GstNetworkSender } from "../src/gst/network.ts";
import { NETWORK_MODES, type NetworkMode, rawSamplingOf } from "../src/gst/network_pipelines.ts";
import { type Command, integerOption, parseCommandArgs, ticker, UsageError } from "./command.ts";
import { denoGstLauncher } from "./gst_launch.ts";
import { MetaLinkListener, MetaLinkSender, netAllowed } from "./network_meta_link.ts";
import { encodeMetaRecord, SenderMetas } from "../src/gst/network_meta.ts";

/** Splits `HOST:PORT` (an IPv4 address or a name; the port 1–65535). */
export function parseEndpoint(text: string): { host: string; port: number } {
  const match = /^([A-Za-z0-9._-]+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : 0;
  if (!match || port < 1 || port > 65535) {
    throw new UsageError(`expected HOST:PORT (e.g. 192.168.1.20:5004), got ${text}`);
  }
  return { host: match[1], port };
}

function parseMode(value: unknown): NetworkMode {
  const mode = (value ?? "raw") as NetworkMode;
  if (!NETWORK_MODES.includes(mode)) {
    throw new UsageError(`--mode must be one of ${NETWORK_MODES.join(", ")}`);
  }
  return mode;
}

/** `send NAME HOST:PORT`. */
export const send: Command = {
  summary: "send NAME's frames to HOST:PORT over RTP/UDP or SRT (GStreamer)",
  usage: [
    "usage: surfaceport send NAME HOST:PORT [--mode raw|vp8|h264|srt] [--bitrate KBITS] [--timeout MS] [--interval MS]",
    "",
    "Subscribes to NAME (newest frame first) and sends it to HOST:PORT through a",
    "gst-launch-1.0 pipeline: raw RTP (every pixel, ~1.5 Gbit/s for 1080p30 BGRA: a LAN),",
    "VP8 / H.264 in RTP (--bitrate, default 4000 kbit/s), or H.264 RTP over SRT (srt:",
    "lost packets are retransmitted). Each frame's timestamp travels with it; its metadata",
    "goes beside it over TCP to the same port number (with --allow-net).",
    "Prints the matching receive command.",
    "SURFACEPORT_GST_LAUNCH replaces the gst-launch-1.0 command (e.g. a chroot).",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      mode: "string",
      bitrate: "string",
      timeout: "string",
      interval: "string",
    });
    if (positionals.length !== 2) throw new UsageError("send needs NAME and HOST:PORT");
    const [name, endpoint] = positionals;
    const { host, port } = parseEndpoint(endpoint);
    const mode = parseMode(values.mode);
    const bitrate = integerOption(values, "bitrate", 4000, 1_000_000);
    const timeout = integerOption(values, "timeout", 5000);
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    using subscription = await subscribe(name, { timeout, signal: io.signal });
    const sender = GstNetworkSender.start(denoGstLauncher, host, port, { mode, bitrate });
    const metaLink = netAllowed(host) ? new MetaLinkSender(host, port) : undefined;
    if (!metaLink) {
      await io.out(
        `metadata not sent: it goes over TCP to ${host}:${port}, which needs --allow-net\n`,
      );
    }
    const onAbort = () => subscription.close();
    io.signal.addEventListener("abort", onAbort, { once: true });
    let announced = false;
    const frames = (async function* () {
      for await (const frame of subscription) {
        if (!announced) {
          announced = true;
          const { format, width, height } = frame.surface;
          const shape = mode === "raw"
            ? ` --format ${format} --size ${width}x${height}` +
              ` (travels as ${rawSamplingOf(format).sampling})`
            : "";
          await io.out(
            `sending ${name} (${format} ${width}x${height}) to ${host}:${port} ` +
              `as ${mode}; receive with: receive 0.0.0.0:${port} NAME --mode ${mode}${shape}\n`,
          );
        }
        if (metaLink) {
          try {
            metaLink.send(encodeMetaRecord(frame.timestamp, frame.meta));
          } catch {
            metaLink.dropped++; // not JSON-serialisable again (cannot happen for wire metadata)
          }
        }
        yield frame;
      }
    })();
    const stop = ticker(io, interval, () => {
      const s = sender.stats;
      return `send ${name} → ${host}:${port} (${mode}): received ${s.received}  sent ${
        s.zeroCopy + s.copies
      }  dropped ${s.dropped}  held ${s.outstanding}  pipeline restarts ${s.restarts}` +
        (metaLink ? `  metadata sent ${metaLink.sent} dropped ${metaLink.dropped}` : "") +
        (sender.lastError ? `  last error: ${sender.lastError}` : "");
    });
    try {
      await sender.run(frames);
    } finally {
      io.signal.removeEventListener("abort", onAbort);
      await sender.close();
      await metaLink?.close();
      await stop();
    }
    await io.out(io.signal.aborted ? "interrupted\n" : "end of stream\n");
    return 0;
  },
};

/** `receive HOST:PORT NAME`. */
export const receive: Command = {
  summary: "receive a stream sent with `send` on HOST:PORT and publish it as NAME",
  usage: [
    "usage: surfaceport receive HOST:PORT NAME [--mode raw|vp8|h264|srt] [--format F] [--size WxH]",
    "                           [--latency MS] [--interval MS]",
    "",
    "Listens for RTP (or SRT) on HOST:PORT (0.0.0.0 for every interface) through a",
    "gst-launch-1.0 pipeline and publishes the frames as NAME, each with the sender's",
    "timestamp and (with --allow-net: TCP on the same port number) its metadata.",
    "Raw mode: give the sender's --format and --size (send prints them).",
    "Compressed modes republish --format (default y420). Prints frames lost (gaps in the",
    "RTP timing) and frames that came without a timestamp (untimed) every interval.",
    "  --latency MS   how long the jitter buffer waits for a late packet (default 40;",
    "                 srt: how long SRT retransmits, default 120)",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, {
      mode: "string",
      format: "string",
      size: "string",
      latency: "string",
      interval: "string",
    });
    if (positionals.length !== 2) throw new UsageError("receive needs HOST:PORT and NAME");
    const [endpoint, name] = positionals;
    const { host, port } = parseEndpoint(endpoint);
    const mode = parseMode(values.mode);
    const format = values.format === undefined ? undefined : canonicalFormat(values.format);
    if (values.format !== undefined && !format) {
      throw new UsageError(`unknown --format ${values.format}`);
    }
    let width: number | undefined;
    let height: number | undefined;
    if (values.size !== undefined) {
      const match = /^(\d+)x(\d+)$/.exec(String(values.size));
      if (!match) throw new UsageError("--size must be WIDTHxHEIGHT");
      width = Number(match[1]);
      height = Number(match[2]);
    }
    if (mode === "raw" && (!format || !width || !height)) {
      throw new UsageError("raw mode needs the sender's --format and --size (send prints them)");
    }
    const latency = integerOption(values, "latency", mode === "srt" ? 120 : 40, 10_000);
    const interval = Math.max(50, integerOption(values, "interval", 1000));
    // First, so that a name already taken fails before a TCP listener is left open.
    using publisher = publish(name);
    const senderMetas = netAllowed(host) ? new SenderMetas() : undefined;
    let metaListener: MetaLinkListener | undefined;
    if (senderMetas) {
      try {
        metaListener = new MetaLinkListener(host, port, senderMetas);
      } catch (error) {
        await io.out(`metadata not received: TCP ${host}:${port}: ${(error as Error).message}\n`);
      }
    } else {
      await io.out(
        `metadata not received: it comes over TCP on ${host}:${port}, which needs --allow-net\n`,
      );
    }
    let receiver: GstNetworkReceiver;
    try {
      receiver = GstNetworkReceiver.start(denoGstLauncher, host, port, {
        mode,
        format,
        width,
        height,
        latency,
        senderMetas: metaListener ? senderMetas : undefined,
      });
    } catch (error) {
      await metaListener?.close();
      if (error instanceof RangeError) throw new UsageError(error.message);
      throw error;
    }
    const onAbort = () => void receiver.close();
    io.signal.addEventListener("abort", onAbort, { once: true });
    await io.out(`receiving ${mode} on ${host}:${port} as ${name}\n`);
    const stop = ticker(io, interval, () => {
      const s = receiver.stats;
      return `receive ${host}:${port} → ${name}: ${
        receiver.caps || "no caps yet"
      }  received ${s.received}  ` +
        `lost ${s.lost}  untimed ${s.untimed}  ${
          metaListener ? `metadata missing ${s.metaMissing}  ` : ""
        }dropped ${s.dropped}  held ${s.outstanding}  pipeline restarts ${s.restarts}` +
        (receiver.lastError ? `  last error: ${receiver.lastError}` : "");
    });
    try {
      await receiver.run(publisher);
    } finally {
      io.signal.removeEventListener("abort", onAbort);
      await receiver.close();
      await metaListener?.close();
      await stop();
    }
    await io.out("interrupted\n");
    return 0;
  },
};
