/**
 * The one `doctor` check that goes through the public API: a channel to
 * itself and a surface handed over, on whichever backend this platform has.
 *
 * @module
 */

import { connect, listen, Surface } from "../mod.ts";
import { backend } from "../src/platform.ts";
import { type Check, probeAsync } from "./doctor_report.ts";

/**
 * The peer credentials (SO_PEERCRED on Linux, the audit trailer on macOS)
 * and one handoff, through the library: listen and connect in this process,
 * both sides must see this process's pid, uid and gid; a
 * surface sent arrives byte for byte, is in use while the frame is open and
 * no longer once it is closed.
 */
export function probeHandoff(id: string, pid: number = Deno.pid): Promise<Check> {
  return probeAsync(id, async () => {
    const name = `doctor-${pid}-${Date.now().toString(36)}`;
    using listener = listen(name);
    const accepting = listener.accept({ timeout: 5000 });
    using producer = await connect(name, { timeout: 5000 });
    using consumer = await accepting;
    const self = { pid, uid: backend().currentUid(), gid: consumer.peer.gid };
    const seen = { byListener: { ...consumer.peer }, byClient: { ...producer.peer } };
    // gid: what both ends read must agree (Deno.gid() would need --allow-sys).
    const credsOk = [seen.byListener, seen.byClient].every((p) =>
      p.pid === self.pid && p.uid === self.uid && p.gid === self.gid
    );
    using surface = Surface.create({ width: 64, height: 64 });
    surface.bytes().fill(0x5a);
    const inUseBefore = surface.inUse;
    await producer.send(surface, { doctor: true });
    const frame = await consumer.receive({ timeout: 5000 });
    const bytesOk = frame.surface.bytes().every((b) => b === 0x5a);
    const inUseWhileOpen = surface.inUse;
    frame.close();
    const inUseAfterClose = surface.inUse;
    const facts = { self, seen, bytesOk, inUseBefore, inUseWhileOpen, inUseAfterClose };
    const holds = credsOk && bytesOk && !inUseBefore && inUseWhileOpen && !inUseAfterClose;
    return {
      status: holds ? "ok" : "failed",
      detail: holds
        ? `both ends see pid ${self.pid} uid ${self.uid} gid ${self.gid}; a 64x64 surface arrived ` +
          "intact, in use while the frame was open and not after"
        : `handoff wrong: ${JSON.stringify(facts)}`,
      facts,
    };
  });
}
