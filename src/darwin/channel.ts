/**
 * The macOS transport, one connection: our inbox (a receive right) and the
 * peer's inbox (a send right), `mach_msg` between them. How connections come
 * to be (bootstrap check-in and look-up, HELLO / WELCOME) is in
 * `listener.ts`.
 *
 * - A surface is one complex message: the send right from
 *   `IOSurfaceCreateMachPort` as MOVE_SEND in a port descriptor, then the
 *   platform-neutral wire header and metadata inline (`src/wire/wire.ts`).
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
  ConnectionLimits,
  PeerPredicate,
  ReceivedMessage,
} from "../contract/backend.ts";
import {
  ClosedError,
  PeerClosedError,
  type PeerCredentials,
  ProtocolError,
  throwIfAborted,
} from "../core/errors.ts";
import { decodeHeader, DEFAULT_MAX_META_BYTES, HEADER_SIZE } from "../wire/wire.ts";
import {
  destroyReceived,
  drainAndDestroy,
  machError,
  MachPort,
  receiveFailure,
  type WaitOwner,
} from "./mach.ts";
import { RoomWait, sendWithRetry } from "./send.ts";
import { receiveOnPort, wakeParked } from "./poller.ts";
import type { DarwinNative } from "./native.ts";
import { LayoutCache, ReceivedIOSurface } from "./received.ts";
import {
  align4,
  decodeReceived,
  encodePortMessage,
  isNoSenders,
  MSG_ID_CONTROL,
  MSG_ID_SURFACE,
  receiveBufferSize,
  SURFACE_PAYLOAD_OFFSET,
} from "./messages.ts";
import {
  credentialsOfAuditToken,
  DARWIN,
  encodeMachMsgHeader,
  MACH_MSG_HEADER_SIZE,
  machMsghBits,
  msghBitsRemote,
  msghIsComplex,
  RECEIVE_OPTIONS,
} from "./structs.ts";

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
  /** Where sends wait for room in the peer's inbox (the kernel's send-possible notification). */
  readonly #room: RoomWait;
  /** Layouts of the peer's surfaces seen before (a pool sends the same few again and again). */
  readonly #layouts = new LayoutCache();
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
    this.#room = new RoomWait(native, this);
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
        this.#room,
        this.#peerPort.name,
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
      this.#room,
      this.#peerPort.name,
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
      const surface = ReceivedIOSurface.import(native, port, header.geometry, this.#layouts);
      const { metaKind, sequence, timestamp } = header;
      return { metaKind, sequence, timestamp, meta, surface };
    } catch (error) {
      port.close();
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#room.close();
    this.#peerPort.close(); // the peer's inbox loses its last sender: it sees PeerClosedError
    if (this.#pendingWaits === 0) this.#destroyInbox();
    // A parked receive leaves the port set now; leaveWait() then destroys the inbox.
    else wakeParked(this.#native, this.#inbox.name);
  }
}
