/**
 * The far end for `tests/doorbell_test.ts`: connects to the channel NAME
 * and sends every frame it receives straight back (then closes it), until
 * the channel ends. With `--allow-net` (and read/write) it has a doorbell of
 * its own, which the test process rings; it rings the test's either way.
 *
 * `bell_peer.ts NAME DELAY_MS`: waits DELAY_MS before each echo, so that the
 * test's receive has parked by then.
 *
 * @module
 */
import { connect, PeerClosedError } from "../../mod.ts";
import { setDoorbellEnabled } from "../../src/linux/doorbell.ts";

setDoorbellEnabled(true); // (off by default)

const channel = await connect(Deno.args[0], { timeout: 10_000 });
const delay = Number(Deno.args[1] ?? 0);
console.log("connected");
try {
  for (;;) {
    const frame = await channel.receive();
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    await channel.send(frame.surface, undefined, { timeout: 10_000 });
    frame.close();
  }
} catch (error) {
  if (!(error instanceof PeerClosedError)) throw error;
} finally {
  channel.close();
}
