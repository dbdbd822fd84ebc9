/**
 * What the hostile-peer tests on Linux check after every attack: the events
 * a good frame leaves in the victim's log, the listener's descriptor count
 * back to its baseline, and a well-behaved client still served.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, Surface } from "../../mod.ts";
import { fillPattern } from "../../examples/pattern.ts";
import { fdTargets, openFds } from "../helpers.ts";
import type { RecordingServer } from "./server.ts";

/** The victim's log entry for the valid frame `RawPeer.sendValid` sends. */
export const GOOD_FRAME = "frame 64x32 BGRA";
/** The victim's log entry for a good client's frame whose pattern checked out. */
export const GOOD_PATTERN_FRAME = "frame 64x32 BGRA pattern ok";

/** Descriptor count now must equal the baseline; lists the newcomers if not. */
export function assertFdBaseline(baseline: number[], what: string): void {
  const now = openFds();
  // Counted, not compared by number: the poller's control eventfd may be recreated under another number.
  assert.equal(
    now.length,
    baseline.length,
    `${what}: descriptors leaked: ${fdTargets(baseline).join(", ")}`,
  );
}

/** A well-behaved client connects, sends one verified frame and leaves; the server must have it. */
export async function assertServesGoodClient(server: RecordingServer, seed = 9): Promise<void> {
  const before = server.connections.length;
  {
    using client = await connect(server.name, { timeout: 5000 });
    using surface = Surface.create({ width: 64, height: 32 });
    fillPattern(surface, seed);
    await client.send(surface, { seed }, { timeout: 5000 });
  }
  const [log] = (await server.waitForConnections(before + 1)).slice(before);
  await server.settle();
  assert.deepEqual(
    log.events,
    [GOOD_PATTERN_FRAME, "end:peer-closed"],
    "the good client was served",
  );
}
