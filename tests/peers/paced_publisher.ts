/**
 * The publisher for `tests/wakeup_allocation_test.ts`, in its own process so
 * that the subscriber's parked receives are woken through its doorbell (two
 * ends in one process get none). Publishes NAME with the doorbell on and,
 * once a subscriber came, sends one 64x64 surface as fast as that
 * subscriber's credits allow (it subscribes "queue", depth 1: each frame
 * waits for the credit of the one before, which the subscriber returns as
 * its next receive begins; ~0.1 ms later, so that the receive has parked), with a fixed
 * timestamp, until the subscriber goes away. Prints `publishing`.
 *
 * Usage: deno run --allow-ffi --allow-read --allow-write --allow-env --allow-net
 * paced_publisher.ts NAME
 */
import { publish, Surface } from "../../mod.ts";
import { setDoorbellEnabled } from "../../src/linux/doorbell.ts";

setDoorbellEnabled(true); // (off by default)

using publisher = publish(Deno.args[0]);
using surface = Surface.create({ width: 64, height: 64 });
console.log("publishing");
while (publisher.subscribers.length === 0) await new Promise((r) => setTimeout(r, 5));
const timestamp = 1_796_601_600_000_000;
while (publisher.subscribers.length > 0) {
  await publisher.send(surface, undefined, { timestamp, timeout: 20_000 });
  // ~0.1 ms before the next frame may go (it waits for the credit anyway): the subscriber's
  // receive has parked by then, instead of finding the frame there a third of the time.
  const until = performance.now() + 0.1;
  while (performance.now() < until);
}
