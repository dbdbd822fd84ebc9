/**
 * Frames to another machine through GStreamer: a sender serves surfaceport
 * frames to a `gst-launch-1.0` pipeline (through the to-gst bridge) that
 * payloads them as RTP over UDP; a receiver runs the opposite pipeline and
 * republishes what it decodes (through the from-gst bridge). The pipelines
 * are GStreamer's own elements: surfaceport adds no transport of its own.
 *
 * The pipelines, one pair per mode, are in `network_pipelines.ts`; this
 * module runs them and the bridges, restarts a pipeline that died, and
 * republishes each frame with the timestamp its sender gave it, carried in
 * an RTP header extension (`timestamp_meta.ts`).
 *
 * @module
 */

import type { GstSourceBridge } from "./from_gst.ts";
import type { FromGstStats, SurfaceSink } from "./from_gst_options.ts";
import { GstSourceSupervisor } from "./from_gst_supervisor.ts";
import {
  type GstLauncher,
  type GstProcess,
  lastError,
  pause,
  privateSocketName,
} from "./launcher.ts";
import {
  type NetworkReceiverOptions,
  type NetworkSenderOptions,
  receiverPipeline,
  senderPipeline,
} from "./network_pipelines.ts";
import type { SenderMetas } from "./network_meta.ts";
import type { GstNewBuffer } from "./protocol.ts";
import type { Surface } from "../surface/surface.ts";
import { microsOfNtpNanos, ntpTimestampsOf } from "./timestamp_meta.ts";
import { GstSinkBridge } from "./to_gst.ts";
import type { SurfaceFrame, ToGstStats } from "./to_gst_options.ts";

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
      ntpTimestamps: true,
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
  /**
   * The timestamp the sender's frame had (µs, as `frame.timestamp` there),
   * carried in the frame's RTP packets; the republished frame has it as its
   * own `timestamp`. Null when the frame arrived without one (see
   * {@link NetworkReceiverStats.untimed}): its `timestamp` is then the
   * time it was republished.
   */
  timestamp: number | null;
  /** Presentation time in ns on the receiving pipeline's clock (from the RTP timestamps). */
  pts: number | null;
  /**
   * The sender's JSON metadata of this frame, when its record arrived on the
   * side channel ({@link NetworkReceiverOptions.senderMetas}); absent otherwise.
   */
  meta?: unknown;
  /** The sender's byte metadata of this frame (base64), when it had bytes rather than JSON. */
  metaBytes?: string;
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
  /**
   * Frames republished without the sender's timestamp: none arrived with
   * them, several different ones did (packets of two frames merged), or the
   * same one as the frame before.
   */
  untimed: number;
  /**
   * Frames with a timestamp whose metadata record had not arrived on the
   * side channel (only counted when there is one).
   */
  metaMissing: number;
}

/** Where a {@link GstNetworkReceiver} republishes (a `Publisher`). */
export interface TimedSurfaceSink<M = unknown> {
  /** Hands `surface` on with `meta` and, when known, the sender's `timestamp`. */
  send(surface: Surface, meta: M, options: { timestamp?: number }): Promise<void>;
}

/**
 * The sender's timestamp of one received frame from the NTP reference
 * timestamps GStreamer attached to it: exactly one distinct non-zero value
 * (every packet of the frame carries the same one; 0 is what the extension
 * holds for a buffer that had none), not the previous frame's. Anything else
 * is not trusted: a wrong timestamp is worse than none.
 */
export class SenderTimestamps {
  #last = Number.NaN;
  /** Frames that had no trustworthy timestamp. */
  untimed = 0;

  /** The sender's timestamp (µs) of a frame with these reference timestamps, or null. */
  take(ntpNanos: readonly bigint[]): number | null {
    let found: bigint | undefined;
    for (const value of ntpNanos) {
      if (value === 0n) continue;
      if (found !== undefined && found !== value) {
        found = undefined;
        break;
      }
      found = value;
    }
    const timestamp = found === undefined ? null : microsOfNtpNanos(found);
    if (timestamp === null || timestamp === this.#last) {
      this.untimed++;
      return null;
    }
    this.#last = timestamp;
    return timestamp;
  }
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
  readonly #pipelines: GstSourceSupervisor;
  readonly #maxOutstanding: number;
  readonly #gaps = new FrameGapCounter();
  readonly #timestamps = new SenderTimestamps();
  readonly #senderMetas: SenderMetas | undefined;
  #metaMissing = 0;
  #caps = "";

  private constructor(
    launch: GstLauncher,
    bind: string,
    port: number,
    options: NetworkReceiverOptions,
  ) {
    const address = privateSocketName("receive");
    const pipeline = receiverPipeline(bind, port, address, options);
    this.#pipelines = new GstSourceSupervisor(launch, {
      address,
      pipeline: () => pipeline,
      connectTimeout: 30_000,
      maxBackoff: 2000,
      retiring: (bridge) => this.#noteCaps(bridge),
    });
    this.#maxOutstanding = options.maxOutstanding ?? 4;
    this.#senderMetas = options.senderMetas;
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
    const bridges = this.#pipelines.stats;
    return {
      received: bridges.received,
      forwarded: bridges.forwarded,
      copies: bridges.copies,
      dropped: bridges.dropped,
      released: bridges.released,
      outstanding: bridges.outstanding,
      lost: this.#gaps.lost,
      restarts: this.#pipelines.restarts,
      untimed: this.#timestamps.untimed,
      metaMissing: this.#metaMissing,
    };
  }

  /** The last error line of a pipeline that ended, or "". */
  get lastError(): string {
    return this.#pipelines.lastError;
  }

  /** The current frames' format and size, once known. */
  get caps(): string {
    const bridge = this.#pipelines.bridge;
    if (bridge) this.#noteCaps(bridge);
    return this.#caps;
  }

  #noteCaps(bridge: GstSourceBridge): void {
    const caps = bridge.caps;
    if (caps) this.#caps = `${caps.format} ${caps.width}x${caps.height}`;
  }

  /** Receives and hands on frames until {@link close}. */
  async run(sink: TimedSurfaceSink<NetworkFrameMeta>): Promise<void> {
    // The from-gst bridge calls toMeta and then send for the same buffer, one buffer at a time.
    const options: { timestamp?: number } = {};
    const toMeta = (buffer: GstNewBuffer): NetworkFrameMeta => {
      const pts = buffer.pts === 0xffff_ffff_ffff_ffffn ? null : Number(buffer.pts);
      if (pts !== null) this.#gaps.note(pts);
      const timestamp = this.#timestamps.take(ntpTimestampsOf(buffer.metas));
      options.timestamp = timestamp ?? undefined;
      const meta: NetworkFrameMeta = { timestamp, pts, lost: this.#gaps.lost };
      if (timestamp !== null && this.#senderMetas) {
        const joined = this.#senderMetas.take(timestamp);
        if (!joined.found) this.#metaMissing++;
        else if (joined.meta instanceof Uint8Array) meta.metaBytes = base64(joined.meta);
        else if (joined.meta !== undefined) meta.meta = joined.meta;
      }
      return meta;
    };
    const timed: SurfaceSink<NetworkFrameMeta> = {
      send: (surface, meta) => sink.send(surface, meta!, options),
    };
    await this.#pipelines.run(timed, toMeta, this.#maxOutstanding);
  }

  /** Stops the pipeline and the bridge; idempotent. */
  async close(): Promise<void> {
    await this.#pipelines.close();
  }
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return btoa(text);
}
