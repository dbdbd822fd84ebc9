/**
 * Frames to another machine through GStreamer: a sender serves surfaceport
 * frames to a `gst-launch-1.0` pipeline (through the to-gst bridge) that
 * payloads them as RTP over UDP; a receiver runs the opposite pipeline and
 * republishes what it decodes (through the from-gst bridge). The pipelines
 * are GStreamer's own elements: surfaceport adds no transport of its own.
 *
 * Modes: `raw` (`rtpvrawpay`, RFC 4175: every pixel exactly, ~1.5 Gbit/s
 * for 1080p30 BGRA: a LAN), `vp8` (`vp8enc` / `vp8dec`) and `h264`
 * (`x264enc` / `openh264dec`) for thin links. Raw RTP carries no caps, so a
 * raw receiver is told the format and size (the sender's command line
 * prints them); the compressed modes take the size from the bitstream.
 *
 * @module
 */

import type { PixelFormat } from "../core/geometry.ts";
import {
  addFromGstCounts,
  type FromGstStats,
  GstSourceBridge,
  type SurfaceSink,
} from "./from_gst.ts";
import {
  type GstLauncher,
  type GstProcess,
  lastError,
  pause,
  privateSocketName,
} from "./launcher.ts";
import { unixFdProperties } from "./launcher.ts";
import type { GstNewBuffer } from "./protocol.ts";
import { GstSinkBridge, type SurfaceFrame, type ToGstStats } from "./to_gst.ts";
import { gstFormatOf } from "./caps.ts";

/** How frames are carried: uncompressed RTP, or VP8 / H.264 in RTP. */
export type NetworkMode = "raw" | "vp8" | "h264";

/** Every {@link NetworkMode}. */
export const NETWORK_MODES: readonly NetworkMode[] = ["raw", "vp8", "h264"];

/** RTP payload type used by every mode (a dynamic one). */
const PAYLOAD_TYPE = 96;
/** Fits an Ethernet frame with IP, UDP and RTP headers. */
const MTU = 1400;

function checkEndpoint(host: string, port: number): void {
  if (!/^[A-Za-z0-9.:_-]+$/.test(host)) throw new RangeError(`bad host: ${JSON.stringify(host)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`bad UDP port: ${port}`);
  }
}

/** The RFC 4175 sampling a raw stream of `format` travels as (NV12 and gray go as I420). */
export function rawSamplingOf(format: PixelFormat): { sampling: string; gstFormat: string } {
  if (format === "BGRA" || format === "RGBA") return { sampling: format, gstFormat: format };
  return { sampling: "YCbCr-4:2:0", gstFormat: "I420" };
}

/** Options of {@link GstNetworkSender.start}. */
export interface NetworkSenderOptions {
  /** How to carry the frames (default `"raw"`). */
  mode?: NetworkMode;
  /** Raw mode: the frames' format (default: the first frame's). */
  format?: PixelFormat;
  /** Target bitrate of the compressed modes, kbit/s (default 4000). */
  bitrate?: number;
  /** A keyframe at least every this many frames in the compressed modes (default 15). */
  keyframeInterval?: number;
  /** Framerate announced to GStreamer (default variable). */
  fps?: number;
  /** Frames held for GStreamer at most (default 4). */
  maxOutstanding?: number;
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
  const source = ["unixfdsrc", ...unixFdProperties(address), "!", "queue", "max-size-buffers=2"];
  const sink = ["udpsink", `host=${host}`, `port=${port}`, "sync=false", "async=false"];
  switch (mode) {
    case "raw":
      return [
        ...source,
        "!",
        "videoconvert",
        "!",
        `video/x-raw,format=${rawSamplingOf(options.format ?? "BGRA").gstFormat}`,
        "!",
        "rtpvrawpay",
        `mtu=${MTU}`,
        `pt=${PAYLOAD_TYPE}`,
        "!",
        ...sink,
      ];
    case "vp8":
      return [
        ...source,
        "!",
        "videoconvert",
        "!",
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
        `mtu=${MTU}`,
        `pt=${PAYLOAD_TYPE}`,
        "!",
        ...sink,
      ];
    case "h264":
      return [
        ...source,
        "!",
        "videoconvert",
        "!",
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
        `mtu=${MTU}`,
        `pt=${PAYLOAD_TYPE}`,
        "!",
        ...sink,
      ];
    default:
      throw new RangeError(`unknown network mode ${JSON.stringify(mode)}`);
  }
}

/** A format one exact swap away, for a copy that videoconvert would otherwise skip. */
const DETOUR: Record<string, string> = { BGRA: "RGBA", RGBA: "BGRA", I420: "YV12" };

/** Options of {@link GstNetworkReceiver.start}. */
export interface NetworkReceiverOptions {
  /** How the sender carries the frames (default `"raw"`). */
  mode?: NetworkMode;
  /** The format to republish (raw: required, the sender's; compressed: default `"y420"`). */
  format?: PixelFormat;
  /** Raw mode only (required there): the sender's frame size. */
  width?: number;
  /** Raw mode only (required there): the sender's frame size. */
  height?: number;
  /** The jitter buffer's latency in ms: how long a late packet is waited for (default 40). */
  latency?: number;
  /** GStreamer buffers held for surfaceport consumers at most (default 4). */
  maxOutstanding?: number;
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
  const latency = Math.max(0, Math.round(options.latency ?? 40));
  const format = options.format ?? "y420";
  const source = (caps: string) => [
    "udpsrc",
    `address=${bind}`,
    `port=${port}`,
    "buffer-size=16777216",
    `caps=application/x-rtp,media=(string)video,clock-rate=(int)90000,payload=(int)${PAYLOAD_TYPE},${caps}`,
    "!",
    "rtpjitterbuffer",
    `latency=${latency}`,
    "!",
  ];
  const target = gstFormatOf(format);
  // unixfdsink takes only fd memory, and rtpvrawdepay's frames are not: a videoconvert that
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
      const { sampling } = rawSamplingOf(format);
      return [
        ...source(
          `encoding-name=(string)RAW,sampling=(string)${sampling},depth=(string)8,` +
            `width=(string)${width},height=(string)${height},colorimetry=(string)BT709-2`,
        ),
        "rtpvrawdepay",
        "!",
        ...sink,
      ];
    }
    case "vp8":
      return [...source("encoding-name=(string)VP8"), "rtpvp8depay", "!", "vp8dec", "!", ...sink];
    case "h264":
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

/** Counters of a {@link GstNetworkSender}. */
export interface NetworkSenderStats extends ToGstStats {
  /** How often the GStreamer pipeline was started again after it ended. */
  restarts: number;
}

/**
 * Sends a stream of surfaceport frames to `host:port` through a
 * `gst-launch-1.0` pipeline ({@link senderPipeline}). The pipeline is
 * restarted if it dies; frames arriving meanwhile are dropped (counted).
 */
export class GstNetworkSender {
  readonly #bridge: GstSinkBridge;
  readonly #launch: GstLauncher;
  readonly #address: string;
  readonly #host: string;
  readonly #port: number;
  readonly #options: NetworkSenderOptions;
  readonly #stop = new AbortController();
  #process: GstProcess | undefined;
  #supervisor: Promise<void> | undefined;
  #restarts = 0;
  #lastError = "";

  private constructor(
    launch: GstLauncher,
    host: string,
    port: number,
    options: NetworkSenderOptions,
  ) {
    this.#address = privateSocketName("send");
    // Checked now, so bad options fail here rather than at the first frame.
    senderPipeline(this.#address, host, port, { ...options, format: options.format ?? "BGRA" });
    this.#launch = launch;
    this.#host = host;
    this.#port = port;
    this.#options = options;
    this.#bridge = GstSinkBridge.listen(this.#address, {
      maxOutstanding: options.maxOutstanding ?? 4,
      fps: options.fps,
    });
  }

  /**
   * Listens on a private socket; the sending pipeline starts with the first
   * frame (raw mode needs its format: `options.format` or the frame's).
   */
  static start(
    launch: GstLauncher,
    host: string,
    port: number,
    options: NetworkSenderOptions = {},
  ): GstNetworkSender {
    return new GstNetworkSender(launch, host, port, options);
  }

  /** A snapshot of the counters. */
  get stats(): NetworkSenderStats {
    return { ...this.#bridge.stats, restarts: this.#restarts };
  }

  /** The last error line of a pipeline that ended, or "". */
  get lastError(): string {
    return this.#lastError;
  }

  async #supervise(pipeline: string[]): Promise<void> {
    for (let backoff = 100; !this.#stop.signal.aborted; backoff = Math.min(backoff * 2, 2000)) {
      const process = this.#launch(pipeline);
      this.#process = process;
      const code = await process.exited;
      if (this.#stop.signal.aborted) return;
      this.#lastError = lastLine(process);
      this.#restarts++;
      if (code === 0) backoff = 100;
      await pause(backoff, this.#stop.signal);
    }
  }

  /**
   * Sends every frame of `frames` (each is closed once GStreamer let go),
   * then EOS. The pipeline is started for the first frame's format, and
   * that frame waits (at most `connectTimeout` ms, default 10 s) for it.
   */
  async run(frames: AsyncIterable<SurfaceFrame>, connectTimeout = 10_000): Promise<void> {
    for await (const frame of frames) {
      if (this.#stop.signal.aborted) {
        frame.close();
        break;
      }
      if (!this.#supervisor) {
        const format = this.#options.format ?? frame.surface.format;
        const pipeline = senderPipeline(this.#address, this.#host, this.#port, {
          ...this.#options,
          format,
        });
        this.#supervisor = this.#supervise(pipeline);
        await this.#bridge.waitForClient(connectTimeout).catch(() => {});
      }
      await this.#bridge.send(frame);
    }
    await this.#bridge.endOfStream();
  }

  /** Stops the pipeline and the bridge; idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#bridge.close();
    await this.#process?.stop();
    await this.#supervisor;
  }
}

function lastLine(process: GstProcess): string {
  return lastError(process.errorText());
}

/** The metadata a {@link GstNetworkReceiver} republishes each frame with. */
export interface NetworkFrameMeta {
  /** Presentation time in ns on the receiving pipeline's clock (from the RTP timestamps). */
  pts: number | null;
  /** Frames found missing so far (gaps in the RTP timing), see {@link NetworkReceiverStats.lost}. */
  lost: number;
}

/** Counters of a {@link GstNetworkReceiver}. */
export interface NetworkReceiverStats extends FromGstStats {
  /**
   * Frames found missing: gaps in the presentation times larger than the
   * frame period (the shortest recent interval) — frames the jitter buffer
   * or the decoder dropped because packets were lost or late.
   */
  lost: number;
  /** How often the GStreamer pipeline was started again after it ended. */
  restarts: number;
}

/**
 * Counts frames missing from gaps in presentation times (ns): an interval
 * of more than 1.5 frame periods means round(interval / period) - 1 frames
 * are missing. The period is the median of the last 15 intervals, so the
 * jitter of a live sender does not count as loss.
 */
export class FrameGapCounter {
  #last = -1;
  readonly #intervals: number[] = [];
  readonly #sorted: number[] = [];
  /** Frames missing so far. */
  lost = 0;

  /** Notes one frame's presentation time. */
  note(pts: number): void {
    if (this.#last >= 0 && pts > this.#last) {
      const interval = pts - this.#last;
      if (this.#intervals.length >= 5) {
        this.#sorted.length = 0;
        for (const value of this.#intervals) this.#sorted.push(value);
        this.#sorted.sort((a, b) => a - b);
        const period = this.#sorted[this.#sorted.length >> 1];
        if (interval > period * 1.5) this.lost += Math.round(interval / period) - 1;
      }
      this.#intervals.push(interval);
      if (this.#intervals.length > 15) this.#intervals.shift();
    }
    this.#last = pts;
  }
}

/**
 * Receives a stream sent by {@link GstNetworkSender} on `bind:port` through a
 * `gst-launch-1.0` pipeline ({@link receiverPipeline}) and hands every frame
 * to a sink (a `Publisher`), zero-copy from GStreamer's decoder or
 * depayloader output. Restarts the pipeline if it dies.
 */
export class GstNetworkReceiver {
  readonly #launch: GstLauncher;
  readonly #pipeline: string[];
  readonly #address: string;
  readonly #maxOutstanding: number;
  readonly #stop = new AbortController();
  readonly #gaps = new FrameGapCounter();
  #process: GstProcess | undefined;
  #bridge: GstSourceBridge | undefined;
  #restarts = 0;
  #lastError = "";
  #caps = "";
  #totals: FromGstStats = {
    received: 0,
    forwarded: 0,
    copies: 0,
    dropped: 0,
    released: 0,
    outstanding: 0,
  };

  private constructor(
    launch: GstLauncher,
    bind: string,
    port: number,
    options: NetworkReceiverOptions,
  ) {
    this.#address = privateSocketName("receive");
    this.#pipeline = receiverPipeline(bind, port, this.#address, options);
    this.#launch = launch;
    this.#maxOutstanding = options.maxOutstanding ?? 4;
  }

  /** Checks the options; {@link run} starts the pipeline. */
  static start(
    launch: GstLauncher,
    bind: string,
    port: number,
    options: NetworkReceiverOptions = {},
  ): GstNetworkReceiver {
    return new GstNetworkReceiver(launch, bind, port, options);
  }

  /** A snapshot of the counters (summed over pipeline restarts). */
  get stats(): NetworkReceiverStats {
    const now = this.#bridge?.stats;
    const sum = (key: keyof FromGstStats) => this.#totals[key] + (now?.[key] ?? 0);
    return {
      received: sum("received"),
      forwarded: sum("forwarded"),
      copies: sum("copies"),
      dropped: sum("dropped"),
      released: sum("released"),
      outstanding: now?.outstanding ?? 0,
      lost: this.#gaps.lost,
      restarts: this.#restarts,
    };
  }

  /** The last error line of a pipeline that ended, or "". */
  get lastError(): string {
    return this.#lastError;
  }

  /** The current frames' format and size, once known. */
  get caps(): string {
    const caps = this.#bridge?.caps;
    if (caps) this.#caps = `${caps.format} ${caps.width}x${caps.height}`;
    return this.#caps;
  }

  /** Receives and hands on frames until {@link close}. */
  async run(sink: SurfaceSink<NetworkFrameMeta>): Promise<void> {
    const toMeta = (buffer: GstNewBuffer): NetworkFrameMeta => {
      const pts = buffer.pts === 0xffff_ffff_ffff_ffffn ? null : Number(buffer.pts);
      if (pts !== null) this.#gaps.note(pts);
      return { pts, lost: this.#gaps.lost };
    };
    for (let backoff = 100; !this.#stop.signal.aborted; backoff = Math.min(backoff * 2, 2000)) {
      const process = this.#launch(this.#pipeline);
      this.#process = process;
      const ended = new AbortController();
      process.exited.then(() => ended.abort());
      const signal = AbortSignal.any([ended.signal, this.#stop.signal]);
      try {
        this.#bridge = await GstSourceBridge.connect(this.#address, {
          timeout: 30_000,
          maxOutstanding: this.#maxOutstanding,
          signal,
        });
        await this.#bridge.run(sink, toMeta);
        backoff = 100;
      } catch (error) {
        if (this.#stop.signal.aborted) break;
        if (!ended.signal.aborted && !isPeerGone(error)) throw error;
      } finally {
        this.#retire();
        await process.stop();
      }
      if (this.#stop.signal.aborted) break;
      this.#lastError = lastLine(process);
      this.#restarts++;
      await pause(backoff, this.#stop.signal);
    }
  }

  #retire(): void {
    const bridge = this.#bridge;
    if (!bridge) return;
    const caps = bridge.caps;
    if (caps) this.#caps = `${caps.format} ${caps.width}x${caps.height}`;
    addFromGstCounts(this.#totals, bridge.stats);
    bridge.close();
    this.#bridge = undefined;
  }

  /** Stops the pipeline and the bridge; idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#bridge?.close();
    await this.#process?.stop();
  }
}

function isPeerGone(error: unknown): boolean {
  return error instanceof Error &&
    (error.name === "PeerClosedError" || error.name === "AbortError" ||
      error.name === "TimeoutError");
}
