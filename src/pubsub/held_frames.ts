/**
 * The frames a publisher holds for its subscribers (`delivery.ts`): a
 * frame that must wait for a subscriber's credit or socket room gets a
 * record, reused (a subscriber a frame behind has one held every frame);
 * a "latest" subscriber's older frame gives way to the newer one; and the
 * most recent frame is kept, in a copy of its own, for a subscriber that
 * joins.
 *
 * @module
 */

import type { Backend } from "../contract/backend.ts";
import type { FrameMessage, MessagePool, Outgoing, SubscriberState } from "./subscriber_state.ts";

/** How many records of held frames a {@link HeldFrames} keeps for reuse. */
const SPARE_ITEMS = 16;

/** The frames one publisher holds for its subscribers, and its most recent frame. */
export class HeldFrames {
  readonly #backend: Backend;
  readonly #messages: MessagePool;
  /**
   * Records of frames held for "latest" subscribers, reused: a subscriber a
   * frame behind has one held every frame. (Not those of a `send()` waiting
   * for "queue" subscribers: its batch keeps them to withdraw.)
   */
  readonly #spareItems: Outgoing[] = [];
  /** The most recent frame, kept for new subscribers: its own copy of the message. */
  #last: Outgoing | undefined;

  constructor(over: Backend, messages: MessagePool) {
    this.#backend = over;
    this.#messages = messages;
  }

  /** A record for a frame held for a subscriber: `message` (the caller's hold on it) and `handle`. */
  item(message: FrameMessage, handle: number): Outgoing {
    const item = this.#spareItems.pop();
    if (item === undefined) return { message, handle, batch: undefined };
    item.message = message;
    item.handle = handle;
    return item;
  }

  /** `item` is sent or released, and nothing refers to it any more: reused if it has no batch. */
  recycle(item: Outgoing): void {
    if (item.batch === undefined && this.#spareItems.length < SPARE_ITEMS) {
      this.#spareItems.push(item);
    }
  }

  /** Holds `item` as the subscriber's newest frame, releasing (dropping) an older one. */
  hold(subscriber: SubscriberState, item: Outgoing): void {
    const older = subscriber.pending;
    if (older) {
      this.release(older);
      subscriber.dropped++;
    }
    subscriber.pending = item;
  }

  /**
   * Keeps `message` with `handle` (owned here now) as the most recent frame,
   * in a copy of its own: rewritten in place while no new subscriber holds
   * the previous one.
   */
  keepLast(message: FrameMessage, handle: number): void {
    const last = this.#last;
    if (!last) {
      const copy = this.#messages.take(message.bytes.length);
      copy.bytes.set(message.bytes);
      copy.geometry = message.geometry;
      this.#last = { message: copy, handle };
      return;
    }
    this.#backend.releaseHandle(last.handle);
    last.handle = handle;
    let copy = last.message;
    if (copy.holders !== 1 || copy.bytes.length !== message.bytes.length) {
      this.#messages.release(copy);
      copy = this.#messages.take(message.bytes.length);
      last.message = copy;
    }
    copy.bytes.set(message.bytes);
    copy.geometry = message.geometry;
  }

  /**
   * Holds the most recent frame for a subscriber that has been sent nothing
   * and holds nothing yet, once it is subscribed or plain (not at connect:
   * a peer that connects and leaves at once costs no capability).
   */
  offerLast(subscriber: SubscriberState): void {
    const last = this.#last;
    if (!last || subscriber.sent > 0 || subscriber.hasWaiting) return;
    try {
      const handle = this.#backend.duplicateHandle(last.handle);
      last.message.holders++;
      subscriber.pending = { message: last.message, handle };
    } catch {
      // out of descriptors: this subscriber starts with the next frame
    }
  }

  /** Gives up a frame not handed over: its capability and its hold on the message. */
  release(item: Outgoing): void {
    this.#backend.releaseHandle(item.handle);
    this.#messages.release(item.message);
    if (item !== this.#last) this.recycle(item);
  }

  /** Releases the kept frame (the delivery closes). */
  close(): void {
    if (this.#last) this.release(this.#last);
    this.#last = undefined;
  }
}
