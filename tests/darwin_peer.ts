/**
 * The child process of `tests/darwin_e2e_test.ts` (macOS only). Modes:
 *
 * - `consume NAME`: connect, receive one frame, print
 *   `{"id","pattern","meta","peerPid"}` as one JSON line (`pattern`: `"ok"`
 *   if every byte is examples/pattern.ts's pattern for `meta.seed`, else the
 *   first difference), close, exit 0.
 * - `hold NAME`: connect, receive one frame, print `held`, then wait until killed.
 * - `produce NAME`: connect, send a 64x64 BGRA surface filled with 0x42 and
 *   `{from: pid}`, wait until the parent closes, exit 0.
 *
 * A refused connection exits with code 3.
 */

import { connect, PeerClosedError, PeerRefusedError, Surface } from "../mod.ts";
import { holdUntilKilled } from "./helpers.ts";
import { verifyPattern } from "../examples/pattern.ts";

const [mode, name] = Deno.args;

async function main(): Promise<number> {
  let channel;
  try {
    channel = await connect(name, { timeout: 10000 });
  } catch (error) {
    if (error instanceof PeerClosedError || error instanceof PeerRefusedError) return 3;
    throw error;
  }
  try {
    if (mode === "consume" || mode === "hold") {
      const frame = await channel.receive({ timeout: 10000 });
      const seed = (frame.meta as { seed?: number } | undefined)?.seed ?? 0;
      const pattern = verifyPattern(frame.surface, seed) ?? "ok";
      if (mode === "hold") {
        console.log("held");
        await holdUntilKilled(); // keeps the frame, and so the surface's use, until SIGKILL
      }
      console.log(JSON.stringify({
        id: frame.surface.id,
        pattern,
        meta: frame.meta,
        peerPid: channel.peer.pid,
      }));
      frame.close();
      return 0;
    }
    if (mode === "produce") {
      using surface = Surface.create({ width: 64, height: 64 });
      surface.bytes().fill(0x42);
      await channel.send(surface, { from: Deno.pid });
      await channel.receive({ timeout: 10000 }).catch(() => {}); // until the parent closes
      return 0;
    }
    throw new Error(`unknown mode ${mode}`);
  } finally {
    channel.close();
  }
}

Deno.exit(await main());
