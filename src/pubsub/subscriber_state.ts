/**
 * A publisher's bookkeeping: the state of each connected subscriber (policy,
 * credit, what is held for it), its frames' messages, and what a `send()`
 * waiting for "queue" subscribers is told (`send_batch.ts` keeps those).
 * `Publisher` in `publish.ts` drives them.
 *
 * @module
 */

import type { BackendConnection } from "../contract/backend.ts";
import type { PeerCredentials } from "../core/errors.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import type { DeliveryPolicy } from "../wire/pubsub_wire.ts";

/** What a publisher knows about one of its subscribers (a snapshot). */
export interface SubscriberInfo {
  /** The subscriber's process id, as the kernel reported it. */
  pid: number;
  /** Its effective user id. */
  uid: number;
  /** Its effective group id. */
  gid: number;
  /** Its delivery policy (`"latest"` until its SUBSCRIBE arrives, and for a plain peer). */
  policy: DeliveryPolicy;
  /**
   * How many frames it may have in flight: the depth its SUBSCRIBE asked
   * for, capped by the publisher's `maxDepth`; 1 for a plain peer (the
   * publisher sends it a frame only once it read the one before; on macOS,
   * which cannot tell, a plain peer is bounded by its inbox's queue limit).
   */
  depth: number;
  /** The depth its SUBSCRIBE asked for (0 before SUBSCRIBE and for a plain peer). */
  requestedDepth: number;
  /**
   * Frames handed to it that it has not returned a credit for yet: every
   * surface message on the connection counts, from the first (the most
   * recent frame, and what it got as a plain peer before a late SUBSCRIBE).
   */
  queued: number;
  /** Frames dropped for it: replaced by a newer one ("latest"), or withdrawn after `send` timed out. */
  dropped: number;
  /** Frames handed to it. */
  sent: number;
  /** Frames held by the publisher for it, not handed over yet. */
  waiting: number;
  /**
   * `"subscribed"` after its SUBSCRIBE; `"pending"` before (for up to
   * 500 ms after it was accepted); `"plain"` for a peer that sent none in
   * time — like "latest" without credits: a frame once it read the one
   * before, the newest held meanwhile.
   */
  state: "pending" | "subscribed" | "plain";
}

/**
 * One frame's wire message (header and metadata), shared by every
 * subscriber it goes to and counted by {@link holders}: its bytes are
 * rewritten for a later frame only once nothing holds it (see
 * {@link MessagePool}). A backend reads the bytes only while it sends.
 */
export class FrameMessage {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** The send loop that writes it, each frame held for a subscriber, the kept last frame. */
  holders = 0;
  /** The geometry whose part of the header {@link bytes} hold (`encodeHeaderOver`). */
  geometry: SurfaceGeometry | undefined;

  constructor(length: number) {
    this.bytes = new Uint8Array(length);
    this.view = new DataView(this.bytes.buffer);
  }
}

/** How many free messages a {@link MessagePool} keeps. */
const SPARE_MESSAGES = 4;

/**
 * The messages of a publisher's frames, reused: in the steady state (every
 * subscriber takes each frame while `send` runs) every frame is written
 * into the same buffer, so it costs no allocation, and each connection sees
 * the same buffer again (the Linux one then reuses its iovec's address).
 */
export class MessagePool {
  readonly #spare: FrameMessage[] = [];

  /** A message of `length` bytes that nothing holds, with one holder (the caller). */
  take(length: number): FrameMessage {
    const spare = this.#spare;
    for (let i = spare.length - 1; i >= 0; i--) {
      const message = spare[i];
      if (message.bytes.length !== length) continue;
      spare[i] = spare[spare.length - 1]; // (splice would make an array of what it removed)
      spare.pop();
      message.holders = 1;
      return message;
    }
    const message = new FrameMessage(length);
    message.holders = 1;
    return message;
  }

  /** One holder let go: the last one's message becomes spare. */
  release(message: FrameMessage): void {
    if (--message.holders > 0) return;
    const spare = this.#spare;
    if (spare.length === SPARE_MESSAGES) spare.shift();
    spare.push(message);
  }
}

/** A frame on its way to one subscriber: the shared message and its own capability. */
export interface Outgoing {
  /** Held (counted in its `holders`) until the frame is sent or released. */
  message: FrameMessage;
  /** Owned here until sent (the backend then owns it) or released. */
  handle: number;
  /** The `send()` waiting for it (queue policy only). */
  batch: WaitingSend | undefined;
  /** Which use of {@link batch}'s record it belongs to (`SendBatch.turn`). */
  turn: number;
}

/**
 * The `send()` a frame queued for a "queue" subscriber belongs to
 * (`SendBatch` in `send_batch.ts`, a record reused from send to send): what
 * delivering the frame reports to it.
 */
export interface WaitingSend {
  /** Until when the send waits (`performance.now()` time; Infinity without a timeout). */
  readonly deadline: number;
  /** The send's abort signal. */
  readonly signal: AbortSignal | undefined;
  /** `item` reached its subscriber, or its subscriber is gone: ignored for an earlier send's. */
  itemDone(item: Outgoing): void;
  /** Sending `item` failed with `error`: the send fails (ignored for an earlier send's item). */
  itemFailed(item: Outgoing, error: unknown): void;
}

/** How many frames a new {@link FrameQueue} has room for (a power of two). */
const QUEUE_ROOM = 4;

/**
 * A "queue" subscriber's frames not handed over yet, in order: a ring over
 * one array, reused. (An array's `shift` of its last frame let V8 drop the
 * backing store, so that the next frame's `push` made a new one: 152 B a
 * frame for a subscriber a frame behind.)
 */
export class FrameQueue {
  #ring: (Outgoing | undefined)[] = new Array(QUEUE_ROOM).fill(undefined);
  #head = 0;
  #length = 0;

  /** How many frames it holds. */
  get length(): number {
    return this.#length;
  }

  /** Adds `item` at the end. */
  push(item: Outgoing): void {
    if (this.#length === this.#ring.length) this.#grow();
    this.#ring[(this.#head + this.#length) & (this.#ring.length - 1)] = item;
    this.#length++;
  }

  /** Takes the first frame out; undefined if it is empty. */
  shift(): Outgoing | undefined {
    if (this.#length === 0) return undefined;
    const ring = this.#ring;
    const item = ring[this.#head];
    ring[this.#head] = undefined;
    this.#head = (this.#head + 1) & (ring.length - 1);
    this.#length--;
    return item;
  }

  /** Takes `item` out wherever it is, keeping the others' order; false if it is not here. */
  remove(item: Outgoing): boolean {
    const ring = this.#ring;
    const mask = ring.length - 1;
    const head = this.#head;
    const last = this.#length - 1;
    for (let i = 0; i <= last; i++) {
      if (ring[(head + i) & mask] !== item) continue;
      for (let j = i; j < last; j++) ring[(head + j) & mask] = ring[(head + j + 1) & mask];
      ring[(head + last) & mask] = undefined;
      this.#length--;
      return true;
    }
    return false;
  }

  #grow(): void {
    const ring = this.#ring;
    const mask = ring.length - 1;
    const grown: (Outgoing | undefined)[] = new Array(ring.length * 2).fill(undefined);
    for (let i = 0; i < this.#length; i++) grown[i] = ring[(this.#head + i) & mask];
    this.#ring = grown;
    this.#head = 0;
  }
}

/** The publisher's state for one connected subscriber. */
export class SubscriberState {
  readonly connection: BackendConnection;
  state: SubscriberInfo["state"] = "pending";
  policy: DeliveryPolicy = "latest";
  /** The granted depth: its SUBSCRIBE's, capped by the publisher's `maxDepth`. */
  depth = 1;
  requestedDepth = 0;
  inFlight = 0;
  /**
   * Since when (`performance.now()`) a frame has been waiting for it while it
   * had no credit; -1 while it is not blocked. Stalled after `stallTimeout`.
   */
  blockedSince = -1;
  sent = 0;
  dropped = 0;
  /** The newest frame not handed over yet ("latest", pending and plain subscribers). */
  pending: Outgoing | undefined;
  /** Frames not handed over yet, in order ("queue" subscribers). */
  readonly queue: FrameQueue = new FrameQueue();
  sending = false;
  /** A wait for this subscriber's control messages is parked. */
  waiting = false;
  /**
   * Called back when its parked control wait ends (`waitControlThen`): made
   * once by the delivery that admits it, not per wait.
   */
  controlWoken: (failure: unknown) => void = () => {};
  closed = false;
  graceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(connection: BackendConnection) {
    this.connection = connection;
  }

  get peer(): PeerCredentials {
    return this.connection.peer;
  }

  /**
   * May a frame go out now? A subscribed one while it has credit; a plain
   * peer once it read everything sent before (where the transport can tell).
   */
  get hasCredit(): boolean {
    if (this.state === "subscribed") return this.inFlight < this.depth;
    if (this.state !== "plain") return false;
    const connection = this.connection;
    return connection.unreadByPeer === undefined || connection.unreadByPeer() === 0;
  }

  /** A frame is held or queued for it. */
  get hasWaiting(): boolean {
    return this.pending !== undefined || this.queue.length > 0;
  }

  info(): SubscriberInfo {
    const { pid, uid, gid } = this.connection.peer;
    return {
      pid,
      uid,
      gid,
      policy: this.policy,
      depth: this.state === "plain" ? 1 : this.depth,
      requestedDepth: this.requestedDepth,
      queued: this.inFlight,
      dropped: this.dropped,
      sent: this.sent,
      waiting: this.queue.length + (this.pending ? 1 : 0),
      state: this.state,
    };
  }
}
