/**
 * surfaceport hands pixel buffers from one process to another without
 * copying a byte. It passes a capability — a file descriptor on Linux, a
 * mach port on macOS — that the kernel counts as a use of the surface, never
 * a global name that anyone could look up, so a pool never reuses a surface
 * that a consumer (even a crashed one) still holds.
 *
 * ```ts
 * import { connect, listen, Surface } from "@surfaceport/surfaceport";
 *
 * using listener = listen("camera");
 * const accepted = listener.accept();
 * using producer = await connect("camera");
 * using consumer = await accepted;
 *
 * using surface = Surface.create({ width: 1920, height: 1080, format: "BGRA" });
 * surface.bytes().fill(0x80);
 * await producer.send(surface, { pts: 0 });
 *
 * using frame = await consumer.receive({ timeout: 1000 });
 * console.log(frame.surface.id === surface.id, frame.meta); // true { pts: 0 }
 * ```
 *
 * Run with `--allow-ffi` (surfaceport calls libc or the macOS frameworks
 * through the runtime's FFI).
 *
 * @module
 */

// First: refuses an unsupported runtime (src/core/check_runtime.ts) before anything loads.
import "./ffi/runtime.ts";

export { Surface } from "./src/surface/surface.ts";
export type { LockOptions, SurfaceOptions, UnsafeSurfaceHandle } from "./src/surface/surface.ts";
export { SurfacePool } from "./src/surface/pool.ts";
export type { AcquireOptions, SurfacePoolOptions, SurfacePoolStats } from "./src/surface/pool.ts";
export { ACQUIRE_STALL_WARNING_MS } from "./src/surface/pool.ts";
export { Channel } from "./src/channel/channel.ts";
export { Frame } from "./src/channel/frame.ts";
export { connect, listen, Listener } from "./src/channel/listener.ts";
export type {
  ChannelOptions,
  ConnectOptions,
  SendOptions,
  WaitOptions,
} from "./src/channel/options.ts";
export { publish, Publisher } from "./src/pubsub/publish.ts";
export type { PublisherStats, PublishOptions } from "./src/pubsub/publish.ts";
export type { BudgetOptions } from "./src/pubsub/budget.ts";
export type { SubscriberInfo } from "./src/pubsub/subscriber_state.ts";
export { subscribe, Subscription } from "./src/pubsub/subscribe.ts";
export type { SubscriptionStats } from "./src/pubsub/subscribe.ts";
export type { SubscribeOptions } from "./src/pubsub/subscribe_connect.ts";
export type { DeliveryPolicy } from "./src/wire/pubsub_wire.ts";
export { list } from "./src/channel/registry.ts";
export type { EndpointInfo } from "./src/channel/registry.ts";
export {
  canonicalFormat,
  DEFAULT_MAX_SURFACE_BYTES,
  MAX_DIMENSION,
  PIXEL_FORMAT_ALIASES,
  PIXEL_FORMATS,
  ROW_ALIGNMENT,
} from "./src/core/geometry.ts";
export type {
  PixelFormat,
  PixelFormatAlias,
  PlaneGeometry,
  SurfaceGeometry,
} from "./src/core/geometry.ts";
export { defaultMatrix, rangeOf, toRGBA, YCBCR_MATRICES } from "./src/surface/convert.ts";
export type { ToRGBAOptions, YCbCrMatrix, YCbCrRange } from "./src/surface/convert.ts";
export type { Meta } from "./src/wire/wire.ts";
export {
  AbiMismatchError,
  ClosedError,
  LibraryLoadError,
  LockStateError,
  MachError,
  PeerClosedError,
  PeerRefusedError,
  PoolExhaustedError,
  ProtocolError,
  SurfaceportError,
  SystemCallError,
  TimeoutError,
  UnsupportedError,
} from "./src/core/errors.ts";
export type {
  PeerCredentials,
  ProtocolErrorReason,
  SurfaceportErrorCode,
} from "./src/core/errors.ts";
export { MINIMUM_DENO_VERSION } from "./src/core/version.ts";
export { nowMicros } from "./src/platform.ts";

// --- macOS ------------------------------------------------------------------

/**
 * macOS only: a CoreVideo `CVPixelBuffer` over an IOSurface. Get one with
 * `surface.pixelBuffer()`, `PixelBuffer.create()` or
 * `PixelBuffer.fromPointer()`; turn one into a sendable surface with
 * `Surface.fromPixelBuffer()`. Elsewhere these throw `UnsupportedError`.
 */
export { PixelBuffer } from "./src/darwin/pixel_buffer.ts";
export type { PixelBufferLockOptions, PixelBufferOptions } from "./src/darwin/pixel_buffer.ts";
/**
 * macOS only, for programs with their own mach ports: send a send right to a
 * port, and receive one with a timeout (the audit trailer gives the sender's
 * credentials). Elsewhere they throw `UnsupportedError`.
 */
export { receivePortRight, sendPortRight } from "./src/darwin/ports.ts";
export type {
  ReceivedPortRight,
  ReceivePortRightOptions,
  SendPortRightOptions,
} from "./src/darwin/ports.ts";
export { prepareNative } from "./src/darwin/backend.ts";

// --- GStreamer (Linux) --------------------------------------------------------

/**
 * Linux only: bridges to GStreamer's `unixfdsink` / `unixfdsrc` (GStreamer
 * 1.24+), zero-copy where the layout allows. See docs/gstreamer.md.
 */
export { GstSourceBridge } from "./src/gst/from_gst.ts";
export type {
  FromGstOptions,
  FromGstStats,
  GstFrameMeta,
  SurfaceSink,
} from "./src/gst/from_gst_options.ts";
export { GstSinkBridge } from "./src/gst/to_gst.ts";
export type { SurfaceFrame, ToGstOptions, ToGstStats } from "./src/gst/to_gst_options.ts";
export { GstProtocolError } from "./src/gst/protocol.ts";
export type {
  GstMemoryRecord,
  GstNewBuffer,
  GstProtocolErrorReason,
  GstSerializedMeta,
  GstVideoMetaRecord,
} from "./src/gst/protocol.ts";
export type { GstVideoCaps } from "./src/gst/caps.ts";
/**
 * Linux only: adopt a memfd made outside surfaceport (e.g. by another
 * library's allocator) as a {@link Surface}, after the checks a received
 * surface gets.
 */
export { adoptMemfd, ForeignMemfdAdopter } from "./src/gst/adopt.ts";
/**
 * Linux only: frames to another machine as RTP over UDP (raw, VP8 or H.264) or SRT
 * through `gst-launch-1.0` pipelines and the bridges above. The caller
 * supplies a {@link GstLauncher} (the command line's spawns
 * `gst-launch-1.0`). See docs/network.md.
 */
export {
  FrameGapCounter,
  GstNetworkReceiver,
  GstNetworkSender,
  SenderTimestamps,
} from "./src/gst/network.ts";
export type {
  NetworkFrameMeta,
  NetworkReceiverStats,
  NetworkSenderStats,
  TimedSurfaceSink,
} from "./src/gst/network.ts";
export { NETWORK_MODES, receiverPipeline, senderPipeline } from "./src/gst/network_pipelines.ts";
export { encodeMetaRecord, MetaRecordReader, SenderMetas } from "./src/gst/network_meta.ts";
export type {
  NetworkMode,
  NetworkReceiverOptions,
  NetworkSenderOptions,
} from "./src/gst/network_pipelines.ts";
export type { GstLauncher, GstProcess } from "./src/gst/launcher.ts";
/**
 * Linux only: PipeWire video nodes as surfaceport streams and back, through
 * GStreamer's PipeWire plugin (`gst-launch-1.0`, started by a
 * {@link GstLauncher}) and the bridges above. See docs/pipewire.md.
 */
export { PipeWireSink, PipeWireSource } from "./src/gst/pipewire.ts";
export { pipeWireSinkPipeline, pipeWireSourcePipeline } from "./src/gst/pipewire_pipelines.ts";
export type { PipeWireCopyMode } from "./src/gst/pipewire_pipelines.ts";
export type {
  DaemonWatchOptions,
  PipeWireFrameMeta,
  PipeWireSinkOptions,
  PipeWireSinkStats,
  PipeWireSourceOptions,
  PipeWireSourceStats,
} from "./src/gst/pipewire.ts";
export type { Pointer } from "./ffi/runtime.ts";
export type { Inspect, InspectOptions } from "./src/core/inspect.ts";
