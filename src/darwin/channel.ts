/**
 * The macOS transport: bootstrap-registered mach ports and `mach_msg`.
 *
 * - `listen(name)` checks in `surfaceport.NAME` with the bootstrap server
 *   (`bootstrap_check_in`: this task gets the receive right).
 * - `connect(name)` looks it up (`bootstrap_look_up`: a send right),
 *   allocates its own inbox, and sends a HELLO whose reply port is a
 *   MAKE_SEND of that inbox. The listener checks the sender's credentials
 *   from the audit trailer, allocates an inbox for this connection and
 *   answers WELCOME to the reply right with a MAKE_SEND of it. The client
 *   checks the listener's credentials the same way. Now each side holds the
 *   only send right to the other's inbox.
 * - A surface is one complex message: the send right from
 *   `IOSurfaceCreateMachPort` as MOVE_SEND in a port descriptor, then the
 *   platform-neutral wire header and metadata inline (`src/wire.ts`).
 * - Each inbox has a `MACH_NOTIFY_NO_SENDERS` request (sync 1): when the
 *   peer's send right goes — it closed the channel, or died and the kernel
 *   reclaimed its rights — the kernel queues the notification behind any
 *   frames still queued, and `receive()` ends with `PeerClosedError`.
 *   Sending to a peer whose inbox is gone fails with
 *   `MACH_SEND_INVALID_DEST`, reported as `PeerClosedError`.
 *
 * @module
 */

import type {
  BackendConnection,
  BackendListener,
  ConnectionLimits,
  PeerPredicate,
  ReceivedMessage,
} from "../backend.ts";
import {
  ClosedError,
  PeerClosedError,
  type PeerCredentials,
  PeerRefusedError,
  ProtocolError,
  throwIfAborted,
  TimeoutError,
} from "../errors.ts";
import {
  decodeHeader,
  DEFAULT_MAX_META_BYTES,
  HEADER_SIZE,
  WIRE_MAGIC,
  WIRE_VERSION,
} from "../wire.ts";
import {
  allocateInbox,
  baseReturn,
  destroyReceived,
  drainAndDestroy,
  isBodyError,
  machError,
  MachPort,
  messageReturned,
  receiveFailure,
  reclaimReturnedMessage,
  sendWithRetry,
  type WaitOwner,
} from "./mach.ts";
import { checkIn, lookUp, serviceName } from "./bootstrap.ts";
import { receiveOnPort, wakeParked } from "./poller.ts";
import type { DarwinNative } from "./native.ts";
import { ReceivedIOSurface } from "./surface.ts";
import {
  align4,
  credentialsOfAuditToken,
  DARWIN,
  decodeReceived,
  encodeHandshake,
  encodeMachMsgHeader,
  encodePortMessage,
  HANDSHAKE_MESSAGE_SIZE,
  MACH_MSG_HEADER_SIZE,
  machMsghBits,
  MSG_ID_CONTROL,
  MSG_ID_HELLO,
  MSG_ID_SURFACE,
  MSG_ID_WELCOME,
  msghBitsRemote,
  msghIsComplex,
  RECEIVE_OPTIONS,
  receiveBufferSize,
  type ReceivedLayout,
  SURFACE_PAYLOAD_OFFSET,
} from "./structs.ts";

/** Room for a handshake message, its trailer, and slack (larger ones are destroyed by the kernel). */
const HANDSHAKE_BUFFER_SIZE = HANDSHAKE_MESSAGE_SIZE + DARWIN.MAX_TRAILER_SIZE + 64;

/** True if `layout` is the kernel's no-senders notification (audit token of the kernel: pid 0). */
function isNoSenders(layout: ReceivedLayout): boolean {
  return layout.header.id === DARWIN.MACH_NOTIFY_NO_SENDERS && !msghIsComplex(layout.header.bits) &&
    credentialsOfAuditToken(layout.trailer.audit).pid === 0;
}

/** The reply right a handshake message carries, or 0. */
function replyRight(layout: ReceivedLayout): number {
  const { bits, remotePort } = layout.header;
  if (msghBitsRemote(bits) !== DARWIN.MACH_MSG_TYPE_PORT_SEND) return 0;
  if (remotePort === DARWIN.MACH_PORT_NULL || remotePort === DARWIN.MACH_PORT_DEAD) return 0;
  return remotePort;
}

/** True if `buffer` holds a well-formed handshake message with `id`. */
function isHandshake(buffer: Uint8Array, layout: ReceivedLayout, id: number): boolean {
  if (layout.header.id !== id || msghIsComplex(layout.header.bits)) return false;
  if (layout.header.size !== HANDSHAKE_MESSAGE_SIZE) return false;
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return view.getUint32(MACH_MSG_HEADER_SIZE, true) === WIRE_MAGIC &&
    view.getUint16(MACH_MSG_HEADER_SIZE + 4, true) === WIRE_VERSION;
}

/**
 * Sends a handshake message once, without waiting; returns the
 * `mach_msg_return_t` (without special bits when the kernel handed the
 * message back, whose rights are released here).
 */
function sendHandshake(
  native: DarwinNative,
  id: number,
  destination: number,
  inbox: number,
): number {
  const buffer = new Uint8Array(HANDSHAKE_MESSAGE_SIZE);
  encodeHandshake(
    buffer,
    id,
    destination,
    DARWIN.MACH_MSG_TYPE_COPY_SEND,
    inbox,
    DARWIN.MACH_MSG_TYPE_MAKE_SEND,
    WIRE_MAGIC,
    WIRE_VERSION,
  );
  const kr = native.mach_msg(
    buffer,
    DARWIN.MACH_SEND_MSG | DARWIN.MACH_SEND_TIMEOUT,
    HANDSHAKE_MESSAGE_SIZE,
    0,
    DARWIN.MACH_PORT_NULL,
    0,
    DARWIN.MACH_PORT_NULL,
  );
  if (messageReturned(kr, buffer)) {
    // The message came back: the destination (one extra uref) and a send right to our inbox.
    reclaimReturnedMessage(native, buffer);
    return baseReturn(kr);
  }
  return kr;
}

/** One end of a connection: our inbox (receive right) and the peer's inbox (send right). */
export class MachConnection implements BackendConnection, WaitOwner {
  readonly peer: PeerCredentials;
  readonly what = "channel";
  readonly #native: DarwinNative;
  readonly #inbox: MachPort;
  readonly #peerPort: MachPort;
  readonly #allowPeer: PeerPredicate;
  readonly #limits: ConnectionLimits;
  readonly #receiveBuffer: Uint8Array;
  readonly #sendBuffer = new Uint8Array(
    align4(SURFACE_PAYLOAD_OFFSET + HEADER_SIZE + DEFAULT_MAX_META_BYTES),
  );
  #closed = false;
  #peerGone = false;
  #pendingWaits = 0;

  constructor(
    native: DarwinNative,
    inbox: MachPort,
    peerPort: MachPort,
    peer: PeerCredentials,
    allowPeer: PeerPredicate,
    limits: ConnectionLimits,
  ) {
    this.#native = native;
    this.#inbox = inbox;
    this.#peerPort = peerPort;
    this.peer = peer;
    this.#allowPeer = allowPeer;
    this.#limits = limits;
    this.#receiveBuffer = new Uint8Array(receiveBufferSize(HEADER_SIZE, limits.maxMetaBytes));
  }

  get closed(): boolean {
    return this.#closed;
  }

  enterWait(): void {
    this.#pendingWaits++;
  }

  leaveWait(): void {
    // Our receive right is destroyed only when no worker thread can be waiting on its name.
    if (--this.#pendingWaits === 0 && this.#closed) this.#destroyInbox();
  }

  /** Frees every queued frame (its surface use, its rights) now, then the inbox. */
  #destroyInbox(): void {
    drainAndDestroy(this.#native, this.#inbox, this.#receiveBuffer);
  }

  async send(
    message: Uint8Array,
    handle: number,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<void> {
    let right = new MachPort(this.#native, handle, "send");
    try {
      if (this.#closed) throw new ClosedError("channel", "send");
      throwIfAborted(signal);
      const kr = await sendWithRetry(
        this.#native,
        this.#sendBuffer,
        () =>
          encodePortMessage(
            this.#sendBuffer,
            this.#peerPort.name,
            DARWIN.MACH_MSG_TYPE_COPY_SEND,
            MSG_ID_SURFACE,
            right.name,
            DARWIN.MACH_MSG_TYPE_MOVE_SEND,
            message,
          ),
        ([returned]) => {
          // The surface's right is ours again, perhaps under another name.
          right.take();
          right = new MachPort(this.#native, returned ?? 0, "send");
        },
        "send",
        deadline,
        signal,
        this,
      );
      if (kr === DARWIN.KERN_SUCCESS) {
        right.take(); // moved into the message
        return;
      }
      if (kr === DARWIN.MACH_SEND_INVALID_DEST) {
        if (this.#closed) throw new ClosedError("channel", "send");
        throw new PeerClosedError("the peer is gone (MACH_SEND_INVALID_DEST)");
      }
      throw machError("mach_msg(send)", kr);
    } finally {
      right.close(); // no-op once moved
    }
  }

  async sendControl(message: Uint8Array, deadline: number, signal?: AbortSignal): Promise<void> {
    if (this.#closed) throw new ClosedError("channel", "send");
    throwIfAborted(signal);
    const buffer = new Uint8Array(align4(MACH_MSG_HEADER_SIZE + message.length));
    const kr = await sendWithRetry(
      this.#native,
      buffer,
      () => {
        encodeMachMsgHeader(new DataView(buffer.buffer), 0, {
          bits: machMsghBits(DARWIN.MACH_MSG_TYPE_COPY_SEND, 0),
          size: buffer.length,
          remotePort: this.#peerPort.name,
          localPort: DARWIN.MACH_PORT_NULL,
          voucherPort: DARWIN.MACH_PORT_NULL,
          id: MSG_ID_CONTROL,
        });
        buffer.set(message, MACH_MSG_HEADER_SIZE);
        return buffer.length;
      },
      () => {}, // no descriptors come back
      "send",
      deadline,
      signal,
      this,
    );
    if (kr === DARWIN.KERN_SUCCESS) return;
    if (kr === DARWIN.MACH_SEND_INVALID_DEST) {
      if (this.#closed) throw new ClosedError("channel", "send");
      throw new PeerClosedError("the peer is gone (MACH_SEND_INVALID_DEST)");
    }
    throw machError("mach_msg(send)", kr);
  }

  async receiveControl(deadline: number, signal?: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      if (this.#closed) throw new ClosedError("channel", "receive");
      if (this.#peerGone) throw new PeerClosedError();
      throwIfAborted(signal);
      const kr = await receiveOnPort(
        this.#native,
        this.#receiveBuffer,
        this.#inbox.name,
        "receive",
        deadline,
        signal,
        this,
        0,
      );
      const bytes = this.#importControl(kr);
      if (bytes) return bytes;
    }
  }

  tryReceiveControl(): Uint8Array | undefined {
    for (;;) {
      if (this.#closed) throw new ClosedError("channel", "receive");
      if (this.#peerGone) throw new PeerClosedError();
      const buffer = this.#receiveBuffer;
      const kr = this.#native.mach_msg(
        buffer,
        RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT,
        0,
        buffer.length,
        this.#inbox.name,
        0,
        DARWIN.MACH_PORT_NULL,
      );
      if (kr === DARWIN.MACH_RCV_TIMED_OUT || kr === DARWIN.MACH_RCV_INTERRUPTED) return undefined;
      const bytes = this.#importControl(kr);
      if (bytes) return bytes;
    }
  }

  /** The control message just received into the buffer; `undefined` if its sender was refused. */
  #importControl(kr: number): Uint8Array | undefined {
    const buffer = this.#receiveBuffer;
    if (kr !== DARWIN.KERN_SUCCESS) {
      throw receiveFailure(this.#native, buffer, kr, "mach_msg(receive)");
    }
    const layout = decodeReceived(buffer);
    if (layout && isNoSenders(layout)) {
      destroyReceived(this.#native, buffer);
      this.#peerGone = true;
      throw new PeerClosedError();
    }
    if (layout && !this.#allowPeer(credentialsOfAuditToken(layout.trailer.audit))) {
      destroyReceived(this.#native, buffer); // from someone allowPeer refuses: dropped
      return undefined;
    }
    // Whatever it is, it carries no right we keep: the bytes are copied out first.
    const valid = layout !== undefined && layout.header.id === MSG_ID_CONTROL &&
      !msghIsComplex(layout.header.bits) && layout.header.remotePort === 0;
    const bytes = valid ? buffer.slice(MACH_MSG_HEADER_SIZE, layout.header.size) : undefined;
    destroyReceived(this.#native, buffer);
    if (!bytes) {
      throw new ProtocolError("BAD_TYPE", "expected a control message from the subscriber");
    }
    return bytes;
  }

  async receive(deadline: number, signal?: AbortSignal): Promise<ReceivedMessage> {
    for (;;) {
      if (this.#closed) throw new ClosedError("channel", "receive");
      if (this.#peerGone) throw new PeerClosedError();
      throwIfAborted(signal);
      const buffer = this.#receiveBuffer;
      const kr = await receiveOnPort(
        this.#native,
        buffer,
        this.#inbox.name,
        "receive",
        deadline,
        signal,
        this,
        this.#limits.spinMicros,
      );
      if (kr !== DARWIN.KERN_SUCCESS) {
        throw receiveFailure(this.#native, buffer, kr, "mach_msg(receive)");
      }
      const message = this.#import(buffer);
      if (message) return message;
    }
  }

  /** Checks and imports a received message; `undefined` for one from a refused sender (dropped). */
  #import(buffer: Uint8Array): ReceivedMessage | undefined {
    const native = this.#native;
    const destroy = () => destroyReceived(native, buffer);
    const layout = decodeReceived(buffer);
    if (!layout) {
      destroy();
      throw new ProtocolError("SHORT_MESSAGE", "malformed mach message");
    }
    if (isNoSenders(layout)) {
      destroy();
      this.#peerGone = true;
      throw new PeerClosedError();
    }
    if (!this.#allowPeer(credentialsOfAuditToken(layout.trailer.audit))) {
      destroy(); // the peer leaked its right to someone allowPeer refuses: drop, like a refused connection
      return undefined;
    }
    let header, meta, portName;
    try {
      if (layout.header.id !== MSG_ID_SURFACE) {
        throw new ProtocolError(
          "BAD_TYPE",
          `unknown mach message id 0x${layout.header.id.toString(16)}`,
        );
      }
      const handles = layout.ports.length + layout.otherDescriptors;
      if (handles === 0) throw new ProtocolError("NO_HANDLE", "surface message carries no port");
      if (handles > 1) {
        throw new ProtocolError(
          "EXTRA_HANDLES",
          `surface message carries ${handles} descriptors, expected 1`,
        );
      }
      if (layout.ports.length !== 1) {
        // One descriptor, but not a port descriptor (out-of-line memory or ports, a guarded port).
        throw new ProtocolError(
          "NO_HANDLE",
          "the surface message's descriptor is not a port descriptor",
        );
      }
      if (msghBitsRemote(layout.header.bits) !== 0 || layout.header.remotePort !== 0) {
        throw new ProtocolError("EXTRA_HANDLES", "surface message carries a reply right");
      }
      const [port] = layout.ports;
      if (
        port.disposition !== DARWIN.MACH_MSG_TYPE_PORT_SEND ||
        port.name === DARWIN.MACH_PORT_NULL ||
        port.name === DARWIN.MACH_PORT_DEAD
      ) {
        throw new ProtocolError("NO_HANDLE", `surface message carries no live send right`);
      }
      const payload = buffer.subarray(layout.inlineOffset, layout.header.size);
      const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
      const exact = HEADER_SIZE + (payload.length >= 32 ? view.getUint32(28, true) : 0);
      header = decodeHeader(
        exact <= payload.length ? payload.subarray(0, exact) : payload,
        this.#limits.maxSurfaceBytes,
        this.#limits.maxMetaBytes,
      );
      if (align4(layout.inlineOffset + exact) !== layout.header.size) {
        throw new ProtocolError(
          "SHORT_MESSAGE",
          `mach message is ${layout.header.size} bytes, the header implies ${
            align4(layout.inlineOffset + exact)
          }`,
        );
      }
      meta = payload.slice(HEADER_SIZE, exact);
      portName = port.name;
    } catch (error) {
      destroy();
      throw error;
    }
    const port = new MachPort(native, portName, "send");
    try {
      return { header, meta, surface: ReceivedIOSurface.import(native, port, header.geometry) };
    } catch (error) {
      port.close();
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#peerPort.close(); // the peer's inbox loses its last sender: it sees PeerClosedError
    if (this.#pendingWaits === 0) this.#destroyInbox();
    // A parked receive leaves the port set now; leaveWait() then destroys the inbox.
    else wakeParked(this.#native, this.#inbox.name);
  }
}

/** A checked-in bootstrap service that admits peers by their audit-trailer credentials. */
export class MachListener implements BackendListener, WaitOwner {
  readonly address: string;
  readonly what = "listener";
  readonly #native: DarwinNative;
  readonly #port: MachPort;
  readonly #allowPeer: PeerPredicate;
  readonly #limits: ConnectionLimits;
  #closed = false;
  #pendingWaits = 0;

  constructor(
    native: DarwinNative,
    name: string,
    allowPeer: PeerPredicate,
    limits: ConnectionLimits,
  ) {
    const service = serviceName(name);
    this.#native = native;
    this.#port = checkIn(native, service);
    this.address = service;
    this.#allowPeer = allowPeer;
    this.#limits = limits;
  }

  get closed(): boolean {
    return this.#closed;
  }

  enterWait(): void {
    this.#pendingWaits++;
  }

  leaveWait(): void {
    if (--this.#pendingWaits === 0 && this.#closed) this.#destroyPort();
  }

  /**
   * Destroys every queued HELLO (dropping the client's reply right, so its
   * connect fails at once), then the service's receive right. launchd drops
   * the name when it handles the port's dead-name notification, a moment
   * later: a new `listen` under the same name retries until then.
   */
  #destroyPort(): void {
    drainAndDestroy(this.#native, this.#port, new Uint8Array(HANDSHAKE_BUFFER_SIZE));
  }

  async accept(signal?: AbortSignal): Promise<BackendConnection> {
    for (;;) {
      if (this.#closed) throw new ClosedError("listener", "accept");
      const buffer = new Uint8Array(HANDSHAKE_BUFFER_SIZE);
      const kr = await receiveOnPort(
        this.#native,
        buffer,
        this.#port.name,
        "accept",
        Infinity,
        signal,
        this,
      );
      if (kr === DARWIN.MACH_RCV_TOO_LARGE) continue; // not a HELLO; the kernel destroyed it
      if (isBodyError(kr)) {
        destroyReceived(this.#native, buffer); // not a HELLO either (a HELLO has no body)
        continue;
      }
      if (kr !== DARWIN.KERN_SUCCESS) throw machError("mach_msg(accept)", kr);
      const connection = this.#admit(buffer);
      if (connection) return connection;
    }
  }

  /** Answers a valid HELLO from an allowed peer; anything else is destroyed and skipped. */
  #admit(buffer: Uint8Array): MachConnection | undefined {
    const native = this.#native;
    const layout = decodeReceived(buffer);
    const reply = layout ? replyRight(layout) : 0;
    if (!layout || !isHandshake(buffer, layout, MSG_ID_HELLO) || reply === 0) {
      destroyReceived(native, buffer);
      return undefined;
    }
    const peer = credentialsOfAuditToken(layout.trailer.audit);
    if (!this.#allowPeer(peer)) {
      destroyReceived(native, buffer); // drops the reply right: the client sees the refusal
      return undefined;
    }
    const peerPort = new MachPort(native, reply, "send");
    let inbox: MachPort | undefined;
    try {
      inbox = allocateInbox(native);
      const kr = sendHandshake(native, MSG_ID_WELCOME, peerPort.name, inbox.name);
      if (kr === DARWIN.KERN_SUCCESS) {
        return new MachConnection(native, inbox, peerPort, peer, this.#allowPeer, this.#limits);
      }
      // The client is gone (INVALID_DEST) or not reading: skip it.
      inbox.close();
      peerPort.close();
      return undefined;
    } catch (error) {
      inbox?.close();
      peerPort.close();
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pendingWaits === 0) this.#destroyPort();
    else wakeParked(this.#native, this.#port.name);
  }
}

/** A wait owner for the connect handshake (nothing else can close it). */
class HandshakeWait implements WaitOwner {
  readonly closed = false;
  readonly what = "channel";
  enterWait(): void {}
  leaveWait(): void {}
}

/** Back-off while the listener's queue is full (ms). */
const CONNECT_RETRY_MS = 1;

/**
 * Connects to the listener under `name`: look up, HELLO, wait for WELCOME,
 * check the listener's credentials with `allowPeer`.
 */
export async function connectMach(
  native: DarwinNative,
  name: string,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  deadline: number,
  signal?: AbortSignal,
): Promise<BackendConnection> {
  const service = serviceName(name);
  throwIfAborted(signal);
  const listenerPort = lookUp(native, service);
  try {
    let inbox: MachPort;
    for (let backoff = CONNECT_RETRY_MS;; backoff = Math.min(backoff * 2, 50)) {
      inbox = allocateInbox(native);
      const kr = sendHandshake(native, MSG_ID_HELLO, listenerPort.name, inbox.name);
      if (kr === DARWIN.KERN_SUCCESS) break;
      inbox.close(); // a fresh inbox per attempt: no stale notification can reach the next one
      if (kr !== DARWIN.MACH_SEND_TIMED_OUT) {
        throw machError(
          `connect(${JSON.stringify(name)})`,
          kr,
          kr === DARWIN.MACH_SEND_INVALID_DEST ? "the listener is gone" : undefined,
        );
      }
      if (performance.now() + backoff > deadline) throw new TimeoutError("connect", backoff);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      throwIfAborted(signal);
    }
    try {
      return await awaitWelcome(native, name, inbox, allowPeer, limits, deadline, signal);
    } catch (error) {
      inbox.close();
      throw error;
    }
  } finally {
    listenerPort.close();
  }
}

async function awaitWelcome(
  native: DarwinNative,
  name: string,
  inbox: MachPort,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<BackendConnection> {
  const buffer = new Uint8Array(HANDSHAKE_BUFFER_SIZE);
  const kr = await receiveOnPort(
    native,
    buffer,
    inbox.name,
    "connect",
    deadline,
    signal,
    new HandshakeWait(),
  );
  if (kr !== DARWIN.KERN_SUCCESS) throw receiveFailure(native, buffer, kr, "mach_msg(connect)");
  const layout = decodeReceived(buffer);
  if (layout && isNoSenders(layout)) {
    destroyReceived(native, buffer);
    throw new PeerClosedError(
      `connect(${JSON.stringify(name)}): the listener refused the connection or closed`,
    );
  }
  const reply = layout ? replyRight(layout) : 0;
  if (!layout || !isHandshake(buffer, layout, MSG_ID_WELCOME) || reply === 0) {
    destroyReceived(native, buffer);
    throw new ProtocolError("BAD_TYPE", `connect(${JSON.stringify(name)}): no valid WELCOME`);
  }
  const peerPort = new MachPort(native, reply, "send");
  const peer = credentialsOfAuditToken(layout.trailer.audit);
  if (!allowPeer(peer)) {
    peerPort.close();
    throw new PeerRefusedError(
      peer,
      `connect(${
        JSON.stringify(name)
      }): the listener runs as uid ${peer.uid} (pid ${peer.pid}), which allowPeer refused`,
    );
  }
  return new MachConnection(native, inbox, peerPort, peer, allowPeer, limits);
}
