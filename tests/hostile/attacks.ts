/**
 * What the malformed-message cases of `tests/hostile_messages_test.ts` are
 * made of: the shape of a case, a valid message for the small surface, and a
 * memfd of its size that each case sends (closed whatever happens).
 *
 * @module
 */

import { closeAll, makeMemfd, type RawPeer, smallGeometry, surfaceMessage } from "./raw.ts";

/** One attack: what it sends, and what the victim must log for it. */
export interface AttackCase {
  name: string;
  /** Sends the bad message(s) on a fresh raw connection. */
  send: (raw: RawPeer) => void | Promise<void>;
  /** The server's events before the valid frame that follows. */
  expect: string[];
}

/** The allocation size of the small valid surface (`smallGeometry()`). */
export const SIZE: number = smallGeometry().allocSize;
/** A sealed memfd of `size` bytes (default {@link SIZE}), made when a case runs. */
export const sealed = (size = SIZE): () => number[] => () => [makeMemfd(size)];
/** A valid surface message for `smallGeometry()`, to send with a memfd of {@link SIZE}. */
export const validMessage = (): Uint8Array => surfaceMessage(smallGeometry());

/** Runs `send` against `fd` (closed afterwards, whatever happens). */
export function withFds(
  make: () => number[],
  send: (raw: RawPeer, fds: number[]) => void,
): (raw: RawPeer) => void {
  return (raw: RawPeer) => {
    const fds = make();
    try {
      send(raw, fds);
    } finally {
      closeAll(...fds);
    }
  };
}
