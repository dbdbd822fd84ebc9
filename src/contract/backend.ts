/**
 * The contract between the platform-neutral public classes (`Surface`,
 * `SurfacePool`, `Channel`, `Listener`) and a platform backend
 * (`src/linux/` on memfd + SCM_RIGHTS, `src/darwin/` on IOSurface + mach
 * ports). The two backends mirror each other:
 *
 * | role | Linux | macOS |
 * |---|---|---|
 * | struct codecs | `linux/structs.ts` (msghdr, cmsghdr, flock, statx) | `darwin/structs.ts` (mach_msg_header_t, port descriptor, trailer) |
 * | native calls and errors | `linux/libc.ts` (errno) | `darwin/mach.ts` (kern_return_t, MachPort) |
 * | surface memory, created | `linux/surface.ts` (memfd, OFD locks) | `darwin/surface.ts` (IOSurface, use count) |
 * | surface memory, received | `linux/received.ts` (locked fd, mapping cache) | `darwin/received.ts` (looked-up IOSurface, the send right) |
 * | checks of received memory | `linux/verify.ts` (seals, size, mode, filesystem) | `darwin/verify.ts` (IOSurface layout vs geometry) |
 * | transport: one connection | `linux/channel.ts` (`SOCK_SEQPACKET`, `SCM_RIGHTS`; its send and receive buffers in `socket_sender.ts` and `socket_receiver.ts`) | `darwin/channel.ts` (inboxes, `mach_msg`; a send that waits for room in `send.ts`) |
 * | transport: listen, accept, connect | `linux/listener.ts` (socket names, `SO_PEERCRED`) | `darwin/listener.ts` (bootstrap, HELLO / WELCOME) |
 * | parked waits, one thread for all | `linux/poller.ts` (one `poll`; `doorbell.ts` and `bell_tower.ts` where the peer rings) | `darwin/poller.ts` (`PortWaitSet`, one port set) |
 * | release events for pools | `InotifyReleaseWatcher` in `linux/surface.ts` | none (the pool re-probes `IOSurfaceIsInUse`) |
 * | platform only | `linux/doorbell.ts`, `linux/bell_tower.ts` and `linux/channel_doorbell.ts` (a parked wait woken by the event loop itself: the doorbell; the ringer's part, the reactor's part, and a connection's two ends of it, a base class of `SocketConnection`) | `darwin/messages.ts` (surfaceport's mach messages), `darwin/abi.ts` (the shim's ABI self-check), `darwin/native.ts`, `darwin/bootstrap.ts`, `darwin/ports.ts`, `darwin/pixel_buffer.ts` |
 *
 * Nothing here is public API.
 *
 * @module
 */

import type { PeerCredentials } from "../core/errors.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import type { Pointer } from "../../ffi/runtime.ts";

/**
 * The native handle under a surface, for other native code (GStreamer, a
 * video encoder, a GPU API) — see {@link Surface.unsafeHandle} for the
 * ownership rules.
 *
 * - Linux: `{ kind: "memfd", fd }`, a descriptor of the sealed memfd.
 * - macOS: `{ kind: "IOSurfaceRef", pointer }`, the `IOSurfaceRef`.
 */
export type UnsafeSurfaceHandle =
  | { readonly kind: "memfd"; readonly fd: number }
  | { readonly kind: "IOSurfaceRef"; readonly pointer: Pointer };

/**
 * One holder's reference to a surface's memory: a created surface (the
 * memfd / IOSurface itself) or a received one (a held fd / a looked-up
 * IOSurface). Releasing it never affects other holders.
 */
export interface SurfaceBacking {
  /** The layout of the memory at {@link baseAddress}. */
  readonly geometry: SurfaceGeometry;
  /** Identifies the buffer on this machine (memfd inode / IOSurfaceID): for logs, never for lookup. */
  readonly id: number;
  /** Address of byte 0 of the surface in this process. */
  readonly baseAddress: Pointer;
  /** Begins CPU access (`IOSurfaceLock`; a barrier on Linux). */
  lock(readOnly: boolean): void;
  /** Ends CPU access (`IOSurfaceUnlock`). */
  unlock(readOnly: boolean): void;
  /**
   * The one `ArrayBuffer` over the whole memory, shared by every `Surface`
   * over this memory and detached (all its views emptied) right before the
   * memory is unmapped (see `src/core/shared_buffer.ts`). It references the
   * backing, so a live view keeps the memory mapped.
   */
  memory(): ArrayBuffer;
  /** True while some other holder (another process, or another frame here) uses the surface. */
  inUseElsewhere(): boolean;
  /**
   * A new transferable handle that by itself keeps the surface in use until
   * the receiver lets go: an OFD-locked fd on Linux, a send right from
   * `IOSurfaceCreateMachPort` on macOS. The caller owns it.
   */
  exportHandle(): number;
  /** The native handle (borrowed, valid until release): see `Surface.unsafeHandle`. */
  unsafeHandle(): UnsafeSurfaceHandle;
  /** Gives this holder's reference up. Idempotent. */
  release(): void;
  /** True once {@link release} has run (a dropped frame's finalizer asks). */
  readonly released: boolean;
  /**
   * macOS only (absent on Linux): a new CVPixelBuffer over this surface
   * (`CVPixelBufferCreateWithIOSurface`) that keeps it in use until closed —
   * a `PixelBuffer`, typed opaquely here so that this contract names no
   * platform type.
   */
  pixelBuffer?(): object;
}

/**
 * A message a backend received, checked and imported. A connection may
 * return one record it rewrites on every receive (Linux does: no garbage per
 * frame): take its fields before the next `receive`/`tryReceive` on that
 * connection — the channel and subscription receive one at a time and wrap
 * it in a `Frame` at once.
 */
export interface ReceivedMessage {
  /** How to read {@link meta}: the header's metadata kind. */
  metaKind: number;
  /** The sender's sequence number (at most 2^53-1). */
  sequence: number;
  /** The sender's timestamp, microseconds since the Unix epoch. */
  timestamp: number;
  /** The metadata bytes (a copy; one shared empty array when there are none). */
  meta: Uint8Array;
  /**
   * The received surface, owned by the caller. It may register no finalizer
   * of its own (Linux): wrap it in a `Surface` at once (whose finalizer
   * releases it) or release it.
   */
  surface: SurfaceBacking;
}

/** How {@link BackendConnection.waitControlThen} ends: woken (`undefined`), or the failure. */
export type ControlWoken = (failure: unknown) => void;

/** How {@link BackendConnection.receiveThen} ends: a message, or (with none) the failure. */
export type ReceiveEnded = (message: ReceivedMessage | undefined, failure: unknown) => void;

/** Options every backend connection honours. */
export interface ConnectionLimits {
  /** Largest surface accepted from the peer, in bytes. */
  maxSurfaceBytes: number;
  /** Largest metadata accepted from the peer, in bytes. */
  maxMetaBytes: number;
  /** How many distinct received surfaces stay mapped for reuse. */
  mappingCacheSize: number;
  /**
   * Low-latency mode: microseconds to keep retrying a non-blocking receive
   * on the JS thread before parking on a worker thread (0: park at once).
   */
  spinMicros: number;
}

/** A connected channel endpoint. */
export interface BackendConnection {
  /** The peer's credentials, as the kernel reported them. */
  readonly peer: PeerCredentials;
  /**
   * Sends `message` (header + metadata) with `handle` (from
   * {@link SurfaceBacking.exportHandle}), taking ownership of the handle: it
   * is sent, or released on every failure path. Waits for room until
   * `deadline` (ms, `performance.now()` clock; `Infinity` for none) or `signal`.
   */
  send(message: Uint8Array, handle: number, deadline: number, signal?: AbortSignal): Promise<void>;
  /**
   * Optional synchronous fast path of {@link send}: sends `message` with
   * `handle` now if the transport has room and returns true (the handle is
   * then consumed); returns false, having sent nothing, if it would have to
   * wait (the caller still owns the handle); throws, having released the
   * handle, on failure. `message` is read only during the call, so the
   * caller may reuse its buffer afterwards.
   */
  trySend?(message: Uint8Array, handle: number): boolean;
  /** Receives the next message, waiting until `deadline` or `signal`. */
  receive(deadline: number, signal?: AbortSignal): Promise<ReceivedMessage>;
  /**
   * Optional form of {@link receive} without a promise of its own, for a
   * caller that waits for one message at a time and keeps `ended` (made
   * once): calls `ended(message, undefined)` when the next message is here
   * (during the call if one is waiting), or `ended(undefined, error)` with
   * what {@link receive} would reject with.
   */
  receiveThen?(deadline: number, signal: AbortSignal | undefined, ended: ReceiveEnded): void;
  /**
   * Optional synchronous fast path of {@link receive}: the next message if
   * one is waiting, `undefined` if none is (nothing waited for), or throws
   * what {@link receive} would.
   */
  tryReceive?(): ReceivedMessage | undefined;
  /**
   * Sends a control message (publish/subscribe: SUBSCRIBE, CREDIT; see
   * `src/wire/pubsub_wire.ts`) that carries no handle. Waits for room like
   * {@link send}.
   */
  sendControl(message: Uint8Array, deadline: number, signal?: AbortSignal): Promise<void>;
  /**
   * Optional synchronous form of {@link sendControl}: sends `message` now and
   * returns true, or returns false having sent nothing when the transport has
   * no room (the peer does not read); throws like {@link sendControl}.
   * `message` is read only during the call.
   */
  trySendControl?(message: Uint8Array): boolean;
  /**
   * Optional: bytes of the messages sent on this connection that the peer
   * has not read yet (Linux: `ioctl(SIOCOUTQ)`), 0 once it read them all.
   * Absent where the transport cannot tell (macOS). A publisher serves a
   * plain peer, which returns no credits, only when this is 0.
   */
  unreadByPeer?(): number;
  /**
   * Receives the next message as a control message: its bytes, not yet
   * decoded, valid until the next receive on this connection (a backend may
   * return one array it rewrites: Linux does, so that a credit costs no
   * garbage). A message that carries a handle is a `ProtocolError` (its
   * handles released). Used only on a publisher's side, which receives
   * nothing else.
   */
  receiveControl(deadline: number, signal?: AbortSignal): Promise<Uint8Array>;
  /**
   * {@link receiveControl} without waiting: the next control message if one
   * is queued now, else `undefined`. Throws like it (`PeerClosedError` once
   * the peer is gone).
   */
  tryReceiveControl(): Uint8Array | undefined;
  /**
   * Optional wait for {@link receiveControl} without a promise of its own,
   * for a caller that keeps `woken` (made once): parks until a control
   * message may be here (or the peer hung up, or this closed) and then calls
   * `woken(undefined)`; the caller reads with {@link tryReceiveControl},
   * which throws what {@link receiveControl} would. `woken(error)` if the
   * wait itself failed. One wait at a time. Returns false, having parked
   * nothing, where this connection would park on a doorbell (then use
   * {@link receiveControl}); throws if closed.
   */
  waitControlThen?(woken: ControlWoken): boolean;
  /** Closes the endpoint and wakes pending calls. Idempotent. */
  close(): void;
}

/** A bound listener. */
export interface BackendListener {
  /** The address it is bound to, for messages. */
  readonly address: string;
  /** Accepts the next admitted peer. */
  accept(signal?: AbortSignal): Promise<BackendConnection>;
  /** Stops listening and wakes a pending accept. Idempotent. */
  close(): void;
}

/** Decides whether a peer may talk to this side. */
export type PeerPredicate = (peer: PeerCredentials) => boolean;

/**
 * Tells a pool promptly that a surface it lent out may have come back from
 * another holder — a hint to probe again, never a verdict: only
 * {@link SurfaceBacking.inUseElsewhere} decides reuse.
 */
export interface ReleaseWatcher {
  /** Starts watching `surface`, a backing this process allocated. Best effort. */
  watch(surface: SurfaceBacking): void;
  /**
   * Resolves when a watched surface may have been released, or at
   * `deadline` (ms, `performance.now()` clock); rejects with the reason if
   * `signal` aborts.
   */
  wait(deadline: number, signal: AbortSignal): Promise<void>;
  /** Stops watching. Idempotent. */
  close(): void;
}

/** What the registry's backend check makes of one entry: see `Backend.endpointStates`. */
export type EndpointState = "live" | "dead" | "unknown";

/** A platform backend. */
export interface Backend {
  /** The effective uid of this process (the default peer check admits only this uid). */
  currentUid(): number;
  /** The pid of this process (of the task whose calls this backend makes: a test double's own). */
  currentPid(): number;
  /**
   * Microseconds since the Unix epoch from the system's real-time clock, the
   * same in every process. Optional: without it, timestamps come from
   * `performance.timeOrigin + performance.now()`, which can differ between
   * processes by ~0.1 ms.
   */
  clockMicros?(): number;
  /**
   * Optional: the process is about to wait (a pool found no free surface):
   * the moment for deferred work that would otherwise cost a later send
   * (Linux: reopening the spare descriptions sends used).
   */
  beforeWait?(): void;
  /** Allocates a new surface of `geometry`. */
  allocateSurface(geometry: SurfaceGeometry): SurfaceBacking;
  /**
   * A watcher that wakes a pool when a surface comes back, or `undefined`
   * where the platform offers no such event (the pool then re-probes on a
   * timer).
   */
  watchReleases?(): ReleaseWatcher | undefined;
  /**
   * macOS only (absent on Linux): the backing of `Surface.fromPixelBuffer`,
   * the IOSurface behind a `PixelBuffer`, holding its own reference and use.
   */
  adoptPixelBuffer?(pixelBuffer: object): SurfaceBacking;
  /** Binds a listener under `name`. */
  listen(name: string, allowPeer: PeerPredicate, limits: ConnectionLimits): BackendListener;
  /**
   * A second handle to the same surface as `handle` (from
   * {@link SurfaceBacking.exportHandle}) that by itself keeps it in use: a
   * new OFD-locked description on Linux, one more reference to the send
   * right on macOS. The caller owns both.
   */
  duplicateHandle(handle: number): number;
  /** Releases a handle from {@link SurfaceBacking.exportHandle} that will not be sent. */
  releaseHandle(handle: number): void;
  /**
   * True if `error` (from {@link connect}) means that nothing is bound under
   * the name yet: `ECONNREFUSED`/`ENOENT` on Linux, an unknown bootstrap
   * service on macOS. `connect` with a timeout retries those.
   */
  nameAbsent(error: unknown): boolean;
  /**
   * For the registry behind `list()`: what each entry is now. `"live"`: its
   * process `pid` exists and the endpoint bound at `address` (the address of
   * its `name`) is that process's; `"dead"`: it is not (the process is gone,
   * the pid was reused, another process holds the name, or the address is
   * not the name's); `"unknown"`: this process cannot judge it (the entry is
   * then neither listed nor deleted). Never connects (a probe connection
   * would show up as a peer).
   */
  endpointStates(
    endpoints: readonly { name: string; pid: number; address: string }[],
  ): EndpointState[];
  /** Connects to the listener under `name`. */
  connect(
    name: string,
    allowPeer: PeerPredicate,
    limits: ConnectionLimits,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<BackendConnection>;
}
