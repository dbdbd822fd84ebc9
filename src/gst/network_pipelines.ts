/**
 * The `gst-launch-1.0` pipelines of the network sender and receiver, one
 * pair per transport: plain data, checked here, run by `network.ts`.
 *
 * Modes: `raw` (GStreamer's own RTP payload for any buffer, `rtpgstpay`:
 * every pixel exactly, ~1.5 Gbit/s for 1080p30 NV12: a LAN), `vp8`
 * (`vp8enc` / `vp8dec`) and `h264` (`x264enc` / `openh264dec`) in RTP over
 * UDP for thin links, and `srt`: the same H.264 RTP packets over SRT
 * (`srtsink` / `srtsrc`), which retransmits what a lossy link lost within
 * its latency.
 *
 * Every mode carries each frame's surfaceport timestamp in the RFC 6051
 * RTP header extension (`urn:ietf:params:rtp-hdrext:ntp-64`), which the
 * payloader fills from the frame's `timestamp/x-ntp` reference meta and the
 * depayloader turns back into one (see `timestamp_meta.ts`). `raw` uses
 * `rtpgstpay` rather than RFC 4175's `rtpvrawpay` because `rtpvrawdepay`
 * reads header extensions from the frame's last packet only, while the
 * payloader writes them in the first: no raw frame would keep its
 * timestamp; `rtpgstdepay` reads every packet of a frame and drops a frame
 * that lost one. It also carries the caps, so the receiver learns the size.
 *
 * @module
 */

import type { PixelFormat } from "../core/geometry.ts";
import { gstFormatOf } from "./caps.ts";
import { unixFdProperties } from "./launcher.ts";
import type { SenderMetas } from "./network_meta.ts";

/** How frames are carried: uncompressed RTP, VP8 / H.264 in RTP over UDP, or H.264 RTP over SRT. */
export type NetworkMode = "raw" | "vp8" | "h264" | "srt";

/** Every {@link NetworkMode}. */
export const NETWORK_MODES: readonly NetworkMode[] = ["raw", "vp8", "h264", "srt"];

/** RTP payload type used by every mode (a dynamic one). */
const PAYLOAD_TYPE = 96;
/** Fits an Ethernet frame with IP, UDP and RTP headers. */
const MTU = 1400;
/** SRT's live mode carries at most 1316 bytes a message (`SRTO_PAYLOADSIZE`): one RTP packet each. */
const SRT_MTU = 1316;
/** The RTP header extension that carries each frame's timestamp, as id 1 (RFC 8285 one-byte form). */
const NTP_EXTENSION = "extmap-1=(string)urn:ietf:params:rtp-hdrext:ntp-64";

function checkEndpoint(host: string, port: number): void {
  if (!/^[A-Za-z0-9.:_-]+$/.test(host)) throw new RangeError(`bad host: ${JSON.stringify(host)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`bad port: ${port}`);
  }
}

/** The GStreamer format a raw stream of `format` travels as (NV12 and gray go as I420). */
export function rawSamplingOf(format: PixelFormat): { sampling: string; gstFormat: string } {
  if (format === "BGRA" || format === "RGBA") return { sampling: format, gstFormat: format };
  return { sampling: "I420", gstFormat: "I420" };
}

/** Options of {@link senderPipeline} (and `GstNetworkSender.start`). */
export interface NetworkSenderOptions {
  /** How to carry the frames (default `"raw"`). */
  mode?: NetworkMode;
  /** Raw mode: the frames' format (default: the first frame's). */
  format?: PixelFormat;
  /** Target bitrate of the compressed modes, kbit/s (default 4000). */
  bitrate?: number;
  /** A keyframe at least every this many frames in the compressed modes (default 15). */
  keyframeInterval?: number;
  /** SRT: how long lost packets are retransmitted for, ms (default 120; the larger of both ends wins). */
  latency?: number;
  /** Framerate announced to GStreamer (default variable). */
  fps?: number;
  /** Frames held for GStreamer at most (default 4). */
  maxOutstanding?: number;
}

/** I420 frames encoded as H.264 for a live link, in RTP (the parameter sets with every keyframe). */
function h264Payloader(bitrate: number, keyframes: number): string[] {
  return [
    "video/x-raw,format=I420",
    "!",
    "x264enc",
    "tune=zerolatency",
    "speed-preset=ultrafast",
    `bitrate=${bitrate}`,
    `key-int-max=${keyframes}`,
    "!",
    "video/x-h264,profile=constrained-baseline",
    "!",
    "rtph264pay",
    "config-interval=-1",
  ];
}

/** The `gst-launch-1.0` words of a sender pipeline reading `address` and sending to host:port. */
export function senderPipeline(
  address: string,
  host: string,
  port: number,
  options: NetworkSenderOptions = {},
): string[] {
  checkEndpoint(host, port);
  const mode = options.mode ?? "raw";
  const bitrate = Math.max(50, Math.round(options.bitrate ?? 4000));
  const keyframes = Math.max(1, Math.round(options.keyframeInterval ?? 15));
  const source = [
    "unixfdsrc",
    ...unixFdProperties(address),
    "!",
    "queue",
    "max-size-buffers=2",
    "!",
    "videoconvert",
    "!",
  ];
  // The caps after the payloader ask it for the timestamp extension (auto-header-extension).
  const udp = (mtu: number) => [
    `mtu=${mtu}`,
    `pt=${PAYLOAD_TYPE}`,
    "!",
    `application/x-rtp,${NTP_EXTENSION}`,
    "!",
    "udpsink",
    `host=${host}`,
    `port=${port}`,
    "sync=false",
    "async=false",
  ];
  switch (mode) {
    case "raw":
      return [
        ...source,
        `video/x-raw,format=${rawSamplingOf(options.format ?? "BGRA").gstFormat}`,
        "!",
        "rtpgstpay",
        // The caps go once, in band, at the start: a frame that follows them loses its timestamp
        // (the extension goes on the first packet, theirs). The receiver knows them anyway.
        "config-interval=0",
        ...udp(MTU),
      ];
    case "vp8":
      return [
        ...source,
        "video/x-raw,format=I420",
        "!",
        "vp8enc",
        "deadline=1",
        "cpu-used=16",
        "end-usage=cbr",
        `target-bitrate=${bitrate * 1000}`,
        `keyframe-max-dist=${keyframes}`,
        "lag-in-frames=0",
        "error-resilient=default",
        "threads=2",
        "!",
        "rtpvp8pay",
        ...udp(MTU),
      ];
    case "h264":
      return [...source, ...h264Payloader(bitrate, keyframes), ...udp(MTU)];
    case "srt": {
      const latency = Math.max(20, Math.round(options.latency ?? 120));
      return [
        ...source,
        ...h264Payloader(bitrate, keyframes),
        ...udp(SRT_MTU).slice(0, 5),
        "srtsink",
        `uri=srt://${host}:${port}`,
        "mode=caller",
        `latency=${latency}`,
        "wait-for-connection=false",
        "sync=false",
        "async=false",
      ];
    }
    default:
      throw new RangeError(`unknown network mode ${JSON.stringify(mode)}`);
  }
}

/** A format one exact swap away, for a copy that videoconvert would otherwise skip. */
const DETOUR: Record<string, string> = { BGRA: "RGBA", RGBA: "BGRA", I420: "YV12" };

/** Options of {@link receiverPipeline} (and `GstNetworkReceiver.start`). */
export interface NetworkReceiverOptions {
  /** How the sender carries the frames (default `"raw"`). */
  mode?: NetworkMode;
  /** The format to republish (raw: required, the sender's; compressed: default `"y420"`). */
  format?: PixelFormat;
  /** Raw mode only (required there): the sender's frame size. */
  width?: number;
  /** Raw mode only (required there): the sender's frame size. */
  height?: number;
  /**
   * The jitter buffer's latency in ms: how long a late packet is waited for
   * (default 40); in SRT mode also how long SRT retransmits lost packets
   * (default 120).
   */
  latency?: number;
  /** GStreamer buffers held for surfaceport consumers at most (default 4). */
  maxOutstanding?: number;
  /**
   * Where the sender's metadata records arrive (`network_meta.ts`; the
   * command line fills it from a TCP side channel): each frame republished
   * with a timestamp gets its record's metadata. Default none.
   */
  senderMetas?: SenderMetas;
}

/** The `gst-launch-1.0` words of a receiver pipeline listening on bind:port, serving `address`. */
export function receiverPipeline(
  bind: string,
  port: number,
  address: string,
  options: NetworkReceiverOptions = {},
): string[] {
  checkEndpoint(bind, port);
  const mode = options.mode ?? "raw";
  const latency = Math.max(0, Math.round(options.latency ?? (mode === "srt" ? 120 : 40)));
  const format = options.format ?? "y420";
  const rtp = (caps: string) =>
    `application/x-rtp,media=(string)${
      mode === "raw" ? "application" : "video"
    },clock-rate=(int)90000,payload=(int)${PAYLOAD_TYPE},${caps},${NTP_EXTENSION}`;
  const jitter = ["!", "rtpjitterbuffer", `latency=${mode === "srt" ? 40 : latency}`, "!"];
  const source = (caps: string) =>
    mode === "srt"
      ? [
        "srtsrc",
        "mode=listener",
        `localaddress=${bind}`,
        `localport=${port}`,
        `latency=${latency}`,
        "!",
        rtp(caps),
        ...jitter,
      ]
      : [
        "udpsrc",
        `address=${bind}`,
        `port=${port}`,
        "buffer-size=16777216",
        `caps=${rtp(caps)}`,
        ...jitter,
      ];
  const target = gstFormatOf(format);
  // unixfdsink takes only fd memory, and rtpgstdepay's frames are not: a videoconvert that
  // converts (it does not when the formats match) writes them into unixfdsink's memfds. When the
  // wire format is already the target, the frame takes an exact detour (a channel or plane swap).
  // Decoders write into unixfdsink's memfds themselves.
  const wire = mode === "raw" ? rawSamplingOf(format).gstFormat : "I420";
  const detour = wire !== target ? [] : [
    "videoconvert",
    "!",
    `video/x-raw,format=${DETOUR[target] ?? "YV12"}`,
    "!",
  ];
  const sink = [
    ...(mode === "raw" ? detour : []),
    "videoconvert",
    "!",
    `video/x-raw,format=${target}`,
    "!",
    "unixfdsink",
    ...unixFdProperties(address),
    "sync=false",
    "wait-for-connection=true",
  ];
  switch (mode) {
    case "raw": {
      const { width, height } = options;
      if (!options.format || !width || !height) {
        throw new RangeError("a raw receiver needs the sender's format, width and height");
      }
      if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
        throw new RangeError(`bad raw frame size ${width}x${height}`);
      }
      // rtpgstdepay takes the caps from its own (as SDP would give them), base64 of a C string,
      // until the sender's in-band ones arrive; only format and size decide how the bytes are
      // read. NULs pad it to a multiple of 3 bytes: no "=" (not allowed unquoted in caps).
      const frameCaps = `video/x-raw,format=${wire},width=${width},height=${height}`;
      const cString = frameCaps + "\0".repeat(3 - (frameCaps.length % 3));
      return [
        ...source(`encoding-name=(string)X-GST,caps=(string)${btoa(cString)}`),
        "rtpgstdepay",
        "!",
        frameCaps,
        "!",
        ...sink,
      ];
    }
    case "vp8":
      return [...source("encoding-name=(string)VP8"), "rtpvp8depay", "!", "vp8dec", "!", ...sink];
    case "h264":
    case "srt":
      return [
        ...source("encoding-name=(string)H264"),
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "openh264dec",
        "!",
        ...sink,
      ];
    default:
      throw new RangeError(`unknown network mode ${JSON.stringify(mode)}`);
  }
}
