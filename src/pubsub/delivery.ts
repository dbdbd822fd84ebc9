/**
 * How a publisher's frames reach its subscribers, one subscriber at a time:
 * their control messages (SUBSCRIBE, CREDIT) read without waiting while
 * frames flow and parked for only while something waits on them; a frame
 * sent at once to a subscriber that has credit and socket room, else held
 * ("latest", plain peers) or queued ("queue") and sent when its credit
 * comes; stalled and misbehaving subscribers cut off. `Publisher`
 * (`publish.ts`) owns the name, the accept loop and `send()`; this owns
 * every subscriber's state, and the frames held for them (`held_frames.ts`).
 *
 * In the steady state — each subscriber takes every frame while `send()`
 * runs — a frame costs each subscriber one `recvmsg` for its credit and one
 * `sendmsg`, with no promise, closure or object: the send is the backend's
 * synchronous `trySend`, the message buffer is reused (`MessagePool`), and
 * only a frame that must wait gets an `Outgoing` record and, if the socket
 * is full, an async send.
 *
 * @module
 */

import type { Backend, BackendConnection } from "../contract/backend.ts";
import { ClosedError, PeerClosedError, ProtocolError, TimeoutError } from "../core/errors.ts";
import {
  checkControlMessage,
  controlPolicy,
  controlValue,
  MESSAGE_SUBSCRIBE,
} from "../wire/pubsub_wire.ts";
import { BlockedWatch, type Budget } from "./budget.ts";
import { HeldFrames } from "./held_frames.ts";
import {
  type FrameMessage,
  MessagePool,
  type Outgoing,
  SubscriberState,
} from "./subscriber_state.ts";

/**
 * How long a new subscriber has to send SUBSCRIBE before it counts as a
 * plain peer (ms), counted from when the publisher accepts its connection.
 */
export const SUBSCRIBE_GRACE_MS = 500;

/** What {@link Delivery.sendNow} did with a frame (one of {@link SendOutcome}). */
export type SendOutcome = typeof SendOutcome[keyof typeof SendOutcome];

/** What {@link Delivery.sendNow} did with a frame. */
export const SendOutcome = {
  /** Handed over, or the subscriber turned out to be gone (dropped, the handle released). */
  Done: 0,
  /** It must wait (no credit, a frame before it, or no room): the caller still owns the handle. */
  Wait: 1,
  /** The send failed for another reason (handle released): {@link Delivery.failure} says why. */
  Failed: 2,
} as const;

/** Every subscriber of one publisher and how frames reach each. */
export class Delivery {
  /** The connected subscribers. */
  readonly subscribers: Set<SubscriberState> = new Set();
  /** The frames' messages, reused from frame to frame. */
  readonly messages: MessagePool = new MessagePool();
  /** The frames held for subscribers, and the most recent frame kept for new ones. */
  readonly held: HeldFrames;
  /** Why the last {@link sendNow} that returned {@link SendOutcome.Failed} failed. */
  failure: unknown;
  /** No frame was sent lately: every subscriber gets a parked wait (to see hang-ups). */
  idle = true;
  /** Subscribers cut off: stalled, or broke the control protocol. */
  cutOff = 0;
  readonly #budget: Budget;
  readonly #blocked: BlockedWatch;
  readonly #membershipChanged: () => void;
  /** {@link subscribers} as an array for the send loop, rebuilt only after it changed. */
  #list: SubscriberState[] = [];
  #listStale = false;
  #closed = false;

  /** `membershipChanged` is called when a subscriber comes or goes. */
  constructor(over: Backend, budget: Budget, membershipChanged: () => void) {
    this.held = new HeldFrames(over, this.messages);
    this.#budget = budget;
    this.#membershipChanged = membershipChanged;
    this.#blocked = new BlockedWatch(
      this.subscribers,
      budget.stallTimeout,
      (subscriber) => this.pump(subscriber),
      (subscriber, reason) => this.drop(subscriber, reason),
    );
  }

  /** The subscribers now, for one pass of `send()`: never changed afterwards (a new array is made). */
  list(): readonly SubscriberState[] {
    if (this.#listStale) {
      this.#list = [...this.subscribers];
      this.#listStale = false;
    }
    return this.#list;
  }

  /** Takes an accepted connection as a subscriber (pending until its SUBSCRIBE or the grace time). */
  admit(connection: BackendConnection): void {
    const subscriber = new SubscriberState(connection);
    subscriber.controlWoken = (failure) => this.#controlWoken(subscriber, failure);
    this.subscribers.add(subscriber);
    this.#listStale = true;
    subscriber.graceTimer = setTimeout(() => {
      if (subscriber.state !== "pending" || !this.drainControl(subscriber)) return;
      if (subscriber.state === "pending") {
        subscriber.state = "plain";
        this.held.offerLast(subscriber);
      }
      this.pump(subscriber);
      this.#blocked.note(subscriber);
    }, SUBSCRIBE_GRACE_MS);
    this.#membershipChanged();
    this.waitIfNeeded(subscriber);
  }

  /**
   * Sends `message` with `handle` to `subscriber` at once if it may take it
   * now: credit, nothing held or queued before it, room in its socket. See
   * {@link SendOutcome} for what the caller then owns.
   */
  sendNow(subscriber: SubscriberState, message: FrameMessage, handle: number): SendOutcome {
    const connection = subscriber.connection;
    if (
      subscriber.sending || !connection.trySend || subscriber.hasWaiting || !subscriber.hasCredit
    ) {
      return SendOutcome.Wait;
    }
    let sent: boolean;
    try {
      sent = connection.trySend(message.bytes, handle);
    } catch (error) {
      if (error instanceof PeerClosedError || error instanceof ClosedError) {
        this.drop(subscriber);
        return SendOutcome.Done;
      }
      if (subscriber.policy === "queue" && subscriber.state === "subscribed") {
        subscriber.dropped++; // the caller rejects send() with it, as for a queued frame
        this.failure = error;
        return SendOutcome.Failed;
      }
      this.drop(subscriber); // anything else: this subscriber cannot be served
      return SendOutcome.Done;
    }
    if (!sent) return SendOutcome.Wait;
    subscriber.inFlight++;
    subscriber.sent++;
    return SendOutcome.Done;
  }

  /** Applies one control message; throws on a protocol violation. */
  #handleControl(subscriber: SubscriberState, bytes: Uint8Array): void {
    const type = checkControlMessage(bytes);
    if (type === MESSAGE_SUBSCRIBE) {
      if (subscriber.state === "subscribed") {
        throw new ProtocolError("BAD_CONTROL", "a second SUBSCRIBE");
      }
      clearTimeout(subscriber.graceTimer);
      const depth = controlValue(bytes);
      subscriber.policy = controlPolicy(bytes);
      subscriber.requestedDepth = depth;
      subscriber.depth = Math.min(depth, this.#budget.maxDepth);
      // inFlight stays: every frame sent on the connection (a plain peer's too) needs a credit.
      subscriber.state = "subscribed";
      this.held.offerLast(subscriber);
      if (subscriber.policy === "queue" && subscriber.pending) {
        subscriber.queue.push(subscriber.pending);
        subscriber.pending = undefined;
      }
    } else {
      if (subscriber.state !== "subscribed") {
        throw new ProtocolError("BAD_CONTROL", "CREDIT before SUBSCRIBE");
      }
      subscriber.inFlight = Math.max(0, subscriber.inFlight - controlValue(bytes));
    }
  }

  /**
   * Applies every control message queued now, without waiting. False if the
   * subscriber is gone or misbehaved (then it is dropped).
   */
  drainControl(subscriber: SubscriberState): boolean {
    if (subscriber.closed) return false;
    try {
      for (;;) {
        // Subscribed with nothing in flight, it owes no credit: no `recvmsg` that would find
        // nothing (one per subscriber per frame). A hang-up then shows at the frame's `sendmsg`.
        if (subscriber.state === "subscribed" && subscriber.inFlight === 0) return true;
        const bytes = subscriber.connection.tryReceiveControl();
        if (!bytes) return true;
        this.#handleControl(subscriber, bytes);
      }
    } catch (error) {
      this.drop(subscriber, error); // gone (PeerClosedError), or a protocol violation
      return false;
    }
  }

  /**
   * Whether a subscriber needs a parked wait for its control messages: while
   * something waits for its credit or SUBSCRIBE, and while the publisher is
   * idle (to see hang-ups). A subscriber that keeps up has its credits read
   * by the next `send` instead: no wake-up of a worker thread per frame.
   */
  #needsWait(subscriber: SubscriberState): boolean {
    return !subscriber.closed &&
      (this.idle || subscriber.state === "pending" || subscriber.pending !== undefined ||
        subscriber.queue.length > 0);
  }

  /** Parks a wait for the subscriber's control messages if it needs one and has none. */
  waitIfNeeded(subscriber: SubscriberState): void {
    if (!subscriber.waiting && this.#needsWait(subscriber)) this.#waitControl(subscriber);
  }

  /** Starts or ends the subscriber's blocked time (see `BlockedWatch`). */
  noteBlocked(subscriber: SubscriberState): void {
    this.#blocked.note(subscriber);
  }

  /**
   * Parks for control messages while {@link #needsWait}: through the
   * connection's re-armed wait where it has one (`waitControlThen`: no
   * promise or suspended frame per wait, where a credit a lagging
   * subscriber returns is one wait per frame), else {@link #waitControlAsync}.
   */
  #waitControl(subscriber: SubscriberState): void {
    const connection = subscriber.connection;
    if (connection.waitControlThen) {
      subscriber.waiting = true;
      let parked: boolean;
      try {
        parked = connection.waitControlThen(subscriber.controlWoken);
      } catch (error) {
        subscriber.waiting = false;
        return this.drop(subscriber, error); // closed here (or gone)
      }
      if (parked) return;
      subscriber.waiting = false;
    }
    this.#waitControlAsync(subscriber);
  }

  /** The subscriber's parked `waitControlThen` ended: one turn of {@link #waitControlAsync}'s loop. */
  #controlWoken(subscriber: SubscriberState, failure: unknown): void {
    subscriber.waiting = false;
    if (subscriber.closed) return;
    try {
      if (failure !== undefined) throw failure;
      // Read at least once (a hang-up shows here as PeerClosedError), then whatever else came.
      const bytes = subscriber.connection.tryReceiveControl();
      if (bytes) this.#handleControl(subscriber, bytes);
    } catch (error) {
      return this.drop(subscriber, error); // gone (PeerClosedError), closed here, or a violation
    }
    if (!this.drainControl(subscriber)) return;
    this.pump(subscriber);
    this.waitIfNeeded(subscriber);
  }

  /** Parks for control messages while {@link #needsWait}; never rejects. */
  async #waitControlAsync(subscriber: SubscriberState): Promise<void> {
    subscriber.waiting = true;
    try {
      while (this.#needsWait(subscriber)) {
        const bytes = await subscriber.connection.receiveControl(Infinity);
        if (subscriber.closed) return;
        this.#handleControl(subscriber, bytes);
        if (!this.drainControl(subscriber)) return;
        this.pump(subscriber);
      }
    } catch (error) {
      this.drop(subscriber, error); // gone (PeerClosedError), closed here, or a protocol violation
    } finally {
      subscriber.waiting = false;
    }
  }

  /** The next frame waiting for the subscriber, taken off its queue or its held slot. */
  #next(subscriber: SubscriberState): Outgoing | undefined {
    if (subscriber.state === "subscribed" && subscriber.policy === "queue") {
      return subscriber.queue.shift();
    }
    const item = subscriber.pending;
    subscriber.pending = undefined;
    return item;
  }

  /**
   * Sends what the subscriber has credit for: synchronously while its socket
   * has room, the rest by {@link #pumpLater}. One pump per subscriber at a
   * time; never throws.
   */
  pump(subscriber: SubscriberState): void {
    if (subscriber.sending) return;
    const connection = subscriber.connection;
    while (!subscriber.closed && subscriber.hasCredit) {
      const item = this.#next(subscriber);
      if (!item) break;
      if (!connection.trySend) {
        this.#pumpLater(subscriber, item);
        return;
      }
      subscriber.inFlight++; // (before the send: a failure gives it back)
      let sent: boolean;
      try {
        sent = connection.trySend(item.message.bytes, item.handle);
      } catch (error) {
        subscriber.inFlight--;
        this.messages.release(item.message); // (the handle: released by trySend)
        this.#failed(subscriber, item, error);
        continue;
      }
      if (!sent) {
        subscriber.inFlight--;
        this.#pumpLater(subscriber, item);
        return;
      }
      this.messages.release(item.message);
      subscriber.sent++;
      item.batch?.done();
      this.held.recycle(item);
    }
    this.waitIfNeeded(subscriber); // e.g. out of credit with a frame held
    this.#blocked.note(subscriber);
  }

  /** A send of `item` failed with `error` (its handle and message released). */
  #failed(subscriber: SubscriberState, item: Outgoing, error: unknown): void {
    const batch = item.batch;
    if (error instanceof PeerClosedError || error instanceof ClosedError) {
      batch?.done();
      this.drop(subscriber);
    } else if (batch) {
      // This send() timed out or was aborted (or the transport refused it): the frame is lost
      // for this subscriber, and send() rejects.
      subscriber.dropped++;
      batch.fail(error);
    } else {
      this.drop(subscriber); // anything else: this subscriber cannot be served
    }
  }

  /**
   * Sends `item` and then what else the subscriber has credit for, waiting
   * for room in its socket (or, where the transport has no `trySend`, for
   * each send); never rejects.
   */
  async #pumpLater(subscriber: SubscriberState, first: Outgoing): Promise<void> {
    subscriber.sending = true;
    this.#blocked.note(subscriber);
    let item: Outgoing | undefined = first;
    try {
      while (item) {
        subscriber.inFlight++; // before the wait: a credit may arrive while the kernel is full
        const batch = item.batch;
        try {
          await subscriber.connection.send(
            item.message.bytes,
            item.handle,
            batch?.deadline ?? Infinity,
            batch?.signal,
          );
          subscriber.sent++;
          batch?.done();
        } catch (error) {
          subscriber.inFlight--;
          this.#failed(subscriber, item, error);
        } finally {
          this.messages.release(item.message);
        }
        this.held.recycle(item);
        item = !subscriber.closed && subscriber.hasCredit ? this.#next(subscriber) : undefined;
      }
    } catch {
      this.drop(subscriber);
    } finally {
      subscriber.sending = false;
    }
    this.pump(subscriber); // what came meanwhile, and the wait for credits or hang-ups
  }

  /**
   * Disconnects a subscriber and releases everything held for it. Idempotent.
   * `reason`: why; a stall (`TimeoutError`) or a protocol violation
   * (`ProtocolError`) counts as a cut-off and is reported to `onCutOff`.
   */
  drop(subscriber: SubscriberState, reason?: unknown): void {
    if (subscriber.closed) return;
    const cutOff = !this.#closed &&
      (reason instanceof ProtocolError || reason instanceof TimeoutError);
    const info = cutOff ? subscriber.info() : undefined;
    subscriber.closed = true;
    subscriber.blockedSince = -1;
    clearTimeout(subscriber.graceTimer);
    this.subscribers.delete(subscriber);
    this.#listStale = true;
    subscriber.connection.close();
    if (subscriber.pending) this.held.release(subscriber.pending);
    subscriber.pending = undefined;
    for (const item of subscriber.queue.splice(0)) {
      this.held.release(item);
      item.batch?.done(); // a subscriber that is gone does not hold up send()
    }
    this.#membershipChanged();
    if (info) {
      this.cutOff++;
      try {
        this.#budget.onCutOff?.(info, reason as Error);
      } catch {
        // the callback's failure is not the publisher's
      }
    }
  }

  /** Disconnects every subscriber and releases the kept frame. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#blocked.close();
    for (const subscriber of [...this.subscribers]) this.drop(subscriber);
    this.held.close();
  }
}
