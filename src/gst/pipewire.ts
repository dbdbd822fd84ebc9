/**
 * PipeWire, the Linux desktop's video bus, through GStreamer's PipeWire
 * plugin and the unixfd bridges: {@link PipeWireSource} publishes a
 * PipeWire video node as a surfaceport stream (`pipewiresrc ! … !
 * unixfdsink` → from-gst), {@link PipeWireSink} makes a surfaceport stream a
 * PipeWire `Video/Source` node (to-gst → `unixfdsrc ! pipewiresink
 * mode=provide`). Each pipeline runs in a `gst-launch-1.0` process that is
 * restarted when it ends — when the PipeWire daemon restarts, and (a
 * `pipewiresink` in provide mode fails when its consumer leaves) after each
 * consumer of a sink node.
 *
 * Copies: PipeWire hands `pipewiresrc` its buffers as memfds (`MemFd`) or as
 * mapped memory (`MemPtr`), depending on the producer. Memfds go to
 * surfaceport without a copy, held for PipeWire until every surfaceport
 * consumer let go (from-gst's use tracking). Mapped memory cannot be
 * passed on: `unixfdsink` refuses it, and the source then restarts with a
 * `videoconvert` that copies each frame once into `unixfdsink`'s memfds
 * (for a source already in the format wanted: an RGB frame once, unchanged,
 * by a colorimetry change `videoconvert` does not act on; other formats
 * twice, an exact swap and back), counted in `stats.copies`. Towards
 * PipeWire, `pipewiresink` copies every frame once into the buffers
 * PipeWire shares with its consumers (counted), and gives the surfaceport
 * frame back right after.
 *
 * The pipelines themselves (which elements a copy mode puts between
 * `pipewiresrc` and `unixfdsink`) are in `pipewire_pipelines.ts`; this file
 * runs them, restarts them and finds the copy mode a node needs.
 *
 * @module
 */

import type { PixelFormat } from "../core/geometry.ts";
import type { GstSourceBridge } from "./from_gst.ts";
import { type FromGstStats, heldForBudget, type SurfaceSink } from "./from_gst_options.ts";
import { GstSourceSupervisor } from "./from_gst_supervisor.ts";
import { gstFormatOf } from "./caps.ts";
import {
  type GstLauncher,
  type GstProcess,
  lastError,
  pause,
  privateSocketName,
} from "./launcher.ts";
import {
  checkTarget,
  type PipeWireCopyMode,
  pipeWireSinkPipeline,
  pipeWireSourcePipeline,
} from "./pipewire_pipelines.ts";
import type { GstNewBuffer } from "./protocol.ts";
import { GstSinkBridge } from "./to_gst.ts";
import type { SurfaceFrame, ToGstStats } from "./to_gst_options.ts";

/** How long a new sink pipeline's `unixfdsrc` may take to connect before the pipeline is restarted. */
const STARTUP_CONNECT_MS = 5000;

/** What `unixfdsink` says when a buffer is not fd memory (PipeWire handed mapped memory). */
const NOT_FD_MEMORY = "Expecting buffers with FD memories";
/**
 * How the bridges notice a PipeWire daemon restart. `pipewiresrc` and
 * `pipewiresink` (PipeWire 1.4) neither fail nor end when the daemon dies:
 * the source stalls and the sink goes on taking frames. So the caller says
 * which daemon it is — typically the inode of its socket — and the bridge
 * restarts its pipeline when that changes.
 */
export interface DaemonWatchOptions {
  /** Who the daemon is now (e.g. its socket's inode), or undefined when there is none. */
  daemonIdentity?: () => string | undefined;
  /** How often to ask {@link daemonIdentity}, ms (default 500). */
  watchInterval?: number;
}

/** Calls `onChange` whenever `options.daemonIdentity` changes; returns the stop function. */
function watchDaemon(options: DaemonWatchOptions, onChange: () => void): () => void {
  const identity = options.daemonIdentity;
  if (!identity) return () => {};
  let seen = identity();
  const timer = setInterval(() => {
    const now = identity();
    if (now !== seen) {
      seen = now;
      onChange();
    }
  }, Math.max(50, options.watchInterval ?? 500));
  return () => clearInterval(timer);
}

/** Options of {@link PipeWireSource.start}. */
export interface PipeWireSourceOptions extends DaemonWatchOptions {
  /** The format to publish when PipeWire's frames must be copied (default `"BGRA"`). */
  format?: PixelFormat;
  /**
   * Buffers held for surfaceport consumers at most. Default: the sink's
   * `surfaceBudget` (a `Publisher`'s: every frame its subscribers may hold
   * within their budgets) + 1 for the frame being handed on, else 8. Fewer
   * than the publisher's budget lets one subscriber that stops reading take
   * every held buffer, and the bridge would drop every frame meant for the
   * others.
   */
  maxOutstanding?: number;
  /**
   * Restart the pipeline when no frame came for this long, ms (default 3000;
   * 0: never). PipeWire links sometimes stall after the node was provided
   * again; a stalled `pipewiresrc` never says so.
   */
  stallTimeout?: number;
}

/** Counters of a {@link PipeWireSource}. */
export interface PipeWireSourceStats extends FromGstStats {
  /** How the frames come: PipeWire's own memory, or copied once or twice. */
  copyMode: PipeWireCopyMode;
  /** How often the pipeline was started again (daemon restart, node gone, copy mode found). */
  restarts: number;
  /** How often the daemon changed under the bridge (see {@link DaemonWatchOptions}). */
  daemonRestarts: number;
  /** How often the pipeline was restarted because no frame came for `stallTimeout`. */
  stalls: number;
}

/** The metadata a {@link PipeWireSource} publishes each frame with. */
export interface PipeWireFrameMeta {
  /** Presentation time, ns on `CLOCK_MONOTONIC`, or null. */
  pts: number | null;
}

/**
 * Publishes the PipeWire video node `target` (a `node.name` or an
 * `object.serial`) as surfaceport frames: see the module's description.
 */
export class PipeWireSource {
  readonly #pipelines: GstSourceSupervisor;
  readonly #format: PixelFormat;
  #maxOutstanding: number | undefined;
  readonly #options: PipeWireSourceOptions;
  #copy: PipeWireCopyMode = "direct";
  #copies = 0;

  private constructor(launch: GstLauncher, target: string, options: PipeWireSourceOptions) {
    const address = privateSocketName("pipewire-src");
    checkTarget(target);
    this.#format = options.format ?? "BGRA";
    this.#maxOutstanding = options.maxOutstanding;
    this.#options = options;
    this.#pipelines = new GstSourceSupervisor(launch, {
      address,
      pipeline: () =>
        pipeWireSourcePipeline(
          target,
          address,
          this.#copy,
          this.#format,
          this.#lastSourceColorimetry,
        ),
      connectTimeout: 60_000,
      maxBackoff: 1000,
      retiring: (bridge) => this.#retiring(bridge),
      ended: (errorText) => this.#switchCopyMode(errorText),
    });
  }

  /** Checks the arguments; {@link run} starts the pipeline. */
  static start(
    launch: GstLauncher,
    target: string,
    options: PipeWireSourceOptions = {},
  ): PipeWireSource {
    return new PipeWireSource(launch, target, options);
  }

  /** A snapshot of the counters, summed over pipeline restarts. */
  get stats(): PipeWireSourceStats {
    const bridges = this.#pipelines.stats;
    return {
      received: bridges.received,
      forwarded: bridges.forwarded,
      copies: this.#copies + bridges.copies,
      dropped: bridges.dropped,
      released: bridges.released,
      outstanding: bridges.outstanding,
      copyMode: this.#copy,
      restarts: this.#pipelines.restarts,
      daemonRestarts: this.#daemonRestarts,
      stalls: this.#stalls,
    };
  }

  /** The last error line of a pipeline that ended, or "". */
  get lastError(): string {
    return this.#pipelines.lastError;
  }

  #stalls = 0;

  /** Restarts a connected pipeline that delivered no frame for `stallTimeout` ms. */
  #watchStalls(): () => void {
    const timeout = this.#options.stallTimeout ?? 3000;
    if (timeout <= 0) return () => {};
    let seen: GstSourceBridge | undefined;
    let count = -1;
    let since = performance.now();
    const timer = setInterval(() => {
      const bridge = this.#pipelines.bridge;
      const received = bridge ? bridge.stats.received : -1;
      if (bridge !== seen || received !== count) {
        seen = bridge;
        count = received;
        since = performance.now();
      } else if (bridge && performance.now() - since > timeout) {
        this.#stalls++;
        since = performance.now();
        this.#pipelines.restartPipeline();
      }
    }, Math.min(500, timeout));
    return () => clearInterval(timer);
  }

  /** Publishes frames into `sink` until {@link close}. */
  async run(sink: SurfaceSink<PipeWireFrameMeta>): Promise<void> {
    this.#maxOutstanding ??= heldForBudget(sink);
    const copiesPerFrame = () => (this.#copy === "direct" ? 0 : this.#copy === "swap" ? 2 : 1);
    const toMeta = (buffer: GstNewBuffer): PipeWireFrameMeta => {
      this.#copies += copiesPerFrame();
      return { pts: buffer.pts === 0xffff_ffff_ffff_ffffn ? null : Number(buffer.pts) };
    };
    const unwatch = watchDaemon(this.#options, () => {
      this.#daemonRestarts++;
      this.#pipelines.restartPipeline();
    });
    const unwatchStalls = this.#watchStalls();
    try {
      await this.#pipelines.run(sink, toMeta, this.#maxOutstanding);
    } finally {
      unwatch();
      unwatchStalls();
    }
  }

  #daemonRestarts = 0;

  /** The copy mode the next pipeline needs after one ended with `text`; true when it changed. */
  #switchCopyMode(text: string): boolean {
    if (this.#copy === "direct" && text.includes(NOT_FD_MEMORY)) {
      // PipeWire hands this node's frames as mapped memory: copy them from now on, once
      // (into another format, or unchanged for RGB), else twice.
      const source = this.#lastSourceFormat;
      const wanted = gstFormatOf(this.#format);
      this.#copy = source !== wanted
        ? "convert"
        : wanted === "BGRA" || wanted === "RGBA"
        ? "recolour"
        : "swap";
      return true;
    }
    if (
      this.#copy === "recolour" &&
      (text.includes(NOT_FD_MEMORY) || text.includes("not-negotiated"))
    ) {
      // videoconvert passed the frames through after all, or the pinned colorimetry did not fit.
      this.#copy = "swap";
      return true;
    }
    return false;
  }

  #lastSourceFormat: string | undefined;
  #lastSourceColorimetry: string | undefined;

  #retiring(bridge: GstSourceBridge): void {
    if (bridge.caps && this.#copy === "direct") {
      // What the node itself hands (a copying pipeline's caps are its own output's).
      this.#lastSourceFormat = bridge.caps.gstFormat;
      this.#lastSourceColorimetry = bridge.caps.colorimetry;
    }
  }

  /** Stops the pipeline; idempotent. */
  async close(): Promise<void> {
    await this.#pipelines.close();
  }
}

/** Options of {@link PipeWireSink.start}. */
export interface PipeWireSinkOptions extends DaemonWatchOptions {
  /** Frames held for GStreamer at most (default 4). */
  maxOutstanding?: number;
  /** Framerate announced to PipeWire (default 30). */
  fps?: number;
  /**
   * Restart the pipeline when its `unixfdsrc` has not been connected for
   * this long, ms (default 1000). A consumer that stops taking buffers
   * blocks `pipewiresink`, to-gst cuts the stalled `unixfdsrc` off, and
   * the pipeline lives on with nothing to feed the node (`unixfdsrc` never
   * reconnects, and nothing fails).
   */
  clientLostTimeout?: number;
}

/** Counters of a {@link PipeWireSink}. */
export interface PipeWireSinkStats extends ToGstStats {
  /** How often the pipeline was started again (a consumer left, or the daemon restarted). */
  restarts: number;
  /** How often the daemon changed under the bridge (see {@link DaemonWatchOptions}). */
  daemonRestarts: number;
  /** How often the pipeline was restarted because its `unixfdsrc` was gone (cut off or never connected). */
  clientLost: number;
}

/**
 * Provides a surfaceport stream as the PipeWire `Video/Source` node
 * `nodeName`: see the module's description.
 */
export class PipeWireSink {
  readonly #launch: GstLauncher;
  readonly #bridge: GstSinkBridge;
  readonly #pipeline: string[];
  readonly #stop = new AbortController();
  #process: GstProcess | undefined;
  #supervisor: Promise<void> | undefined;
  #restarts = 0;
  #daemonRestarts = 0;
  #lastError = "";
  #unwatch: () => void = () => {};
  #unwatchClient: () => void = () => {};
  #clientLost = 0;
  #started = 0;
  /** The pipeline process while it runs. */
  #running: GstProcess | undefined;

  private constructor(launch: GstLauncher, nodeName: string, options: PipeWireSinkOptions) {
    const address = privateSocketName("pipewire-sink");
    this.#pipeline = pipeWireSinkPipeline(address, nodeName);
    this.#launch = launch;
    this.#bridge = GstSinkBridge.listen(address, {
      maxOutstanding: options.maxOutstanding ?? 4,
      fps: options.fps ?? 30,
    });
  }

  /** Listens on a private socket and starts providing the node. */
  static start(
    launch: GstLauncher,
    nodeName: string,
    options: PipeWireSinkOptions = {},
  ): PipeWireSink {
    const sink = new PipeWireSink(launch, nodeName, options);
    sink.#supervisor = sink.#supervise();
    sink.#unwatch = watchDaemon(options, () => {
      sink.#daemonRestarts++;
      void sink.#process?.stop();
    });
    sink.#unwatchClient = sink.#watchClient(options.clientLostTimeout ?? 1000);
    return sink;
  }

  /**
   * Restarts a running pipeline whose `unixfdsrc` was cut off (it never
   * reconnects), is gone for `timeout` ms, or did not connect within 5 s of
   * the start.
   */
  #watchClient(timeout: number): () => void {
    let seenAt = 0;
    let cutOff = 0;
    const timer = setInterval(() => {
      const stats = this.#bridge.stats;
      const now = performance.now();
      const process = this.#running;
      if (!process) return;
      if (stats.clients > 0 && stats.cutOff === cutOff) {
        seenAt = now;
        return;
      }
      const lost = stats.cutOff > cutOff ||
        (seenAt > this.#started
          ? now - seenAt > timeout
          : now - this.#started > Math.max(timeout, STARTUP_CONNECT_MS));
      cutOff = stats.cutOff;
      if (!lost) return;
      this.#clientLost++;
      this.#running = undefined;
      void process.stop();
    }, Math.max(50, Math.min(250, timeout / 4)));
    return () => clearInterval(timer);
  }

  /** A snapshot of the counters; every frame sent is copied once by `pipewiresink`. */
  get stats(): PipeWireSinkStats {
    return {
      ...this.#bridge.stats,
      restarts: this.#restarts,
      daemonRestarts: this.#daemonRestarts,
      clientLost: this.#clientLost,
    };
  }

  /** The last error line of a pipeline that ended, or "". */
  get lastError(): string {
    return this.#lastError;
  }

  async #supervise(): Promise<void> {
    for (let backoff = 100; !this.#stop.signal.aborted; backoff = Math.min(backoff * 2, 1000)) {
      const process = this.#launch(this.#pipeline);
      this.#process = process;
      const started = this.#started = performance.now();
      this.#running = process;
      await process.exited;
      this.#running = undefined;
      if (this.#stop.signal.aborted) return;
      this.#lastError = lastError(process.errorText());
      this.#restarts++;
      // A pipeline that ran (its consumer left: provide mode ends then) comes back at once; one
      // that failed at start (no daemon) backs off.
      if (performance.now() - started > 300) backoff = 50;
      await pause(backoff, this.#stop.signal);
    }
  }

  /** Serves every frame of `frames` to the node (frames arriving between consumers are dropped). */
  async run(frames: AsyncIterable<SurfaceFrame>): Promise<void> {
    await this.#bridge.run(frames);
  }

  /** Removes the node; idempotent. */
  async close(): Promise<void> {
    this.#unwatch();
    this.#unwatchClient();
    this.#stop.abort();
    this.#bridge.close();
    await this.#process?.stop();
    await this.#supervisor;
  }
}
