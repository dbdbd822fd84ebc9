/**
 * The doorbell on Node and Bun: a receiver in each runtime, rung by a Deno
 * producer, parks on its doorbell (its own reactor: `node:net` on both)
 * rather than on the shared poll, and gets every frame, every byte checked.
 */

import assert from "node:assert/strict";
import { connect, Surface } from "../mod.ts";
import { doorbellEnabled, setDoorbellEnabled } from "../src/linux/doorbell.ts";
import { fillPattern } from "../examples/pattern.ts";
import { Child, sleep, uniqueName } from "./helpers.ts";
import { missing, repositoryRoot, runtimes } from "./runtimes.ts";

const FRAMES = 8;

for (const name of ["node", "bun"] as const) {
  const reason = missing(name);
  Deno.test({
    name: `doorbell: a ${name} receiver is rung by a Deno producer and parks on its doorbell${
      reason ? ` (ignored: ${reason})` : ""
    }`,
    ignore: Deno.build.os !== "linux" || reason !== undefined,
    async fn() {
      const channelName = uniqueName(`bell-${name}`);
      const [command, args] = runtimes[name]!.command(
        `${repositoryRoot}tests/peers/runtime_peer.ts`,
        ["listen-parks", channelName, String(FRAMES)],
      );
      await using receiver = new Child(command, args, { SURFACEPORT_DOORBELL: "1" });
      await receiver.line("ready");
      const wasEnabled = doorbellEnabled();
      setDoorbellEnabled(true); // this side offers rings to a peer that has a doorbell
      try {
        using channel = await connect(channelName, { timeout: 10000 });
        for (let seed = 0; seed < FRAMES; seed++) {
          await sleep(30); // the receiver has parked by then
          using surface = Surface.create({ width: 320, height: 240 });
          fillPattern(surface, seed);
          await channel.send(surface, { seed }, { timeout: 10000 });
          assert.equal(await receiver.line(/^(ok|bad)/), `ok ${seed} 320x240 BGRA ${name}`);
        }
        const parks = JSON.parse((await receiver.line(/^parks /)).slice(6));
        // The first receive may park before the DOORBELL is bound; every later one is rung.
        assert.ok(parks.bell >= FRAMES - 1, `parked on the doorbell: ${JSON.stringify(parks)}`);
        assert.ok(parks.poll <= 1, `parked on the shared poll: ${JSON.stringify(parks)}`);
        await receiver.line("done");
      } finally {
        setDoorbellEnabled(wasEnabled);
      }
      assert.equal((await receiver.exit()).code, 0, receiver.stderr);
    },
  });
}
