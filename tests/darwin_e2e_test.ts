/**
 * End-to-end tests of the macOS backend: real IOSurfaces, real mach ports,
 * two real processes. They need macOS and the shim built by
 * `make -C native` (the CI workflow `.github/workflows/macos.yml` builds it
 * first); they build nothing themselves. On every other platform each test
 * is reported as ignored, with the reason in its name.
 *
 * None of these has run yet at the time of writing: there was no Mac where
 * the backend was written (see docs/macos.md).
 */

import assert from "node:assert/strict";
import {
  listen,
  PeerClosedError,
  PixelBuffer,
  prepareNative,
  Surface,
  SurfacePool,
  TimeoutError,
} from "../mod.ts";
import { fillPattern } from "../examples/pattern.ts";
import { Child, PEER_FLAGS, uniqueName } from "./helpers.ts";

const macOS = Deno.build.os === "darwin";
const why = macOS
  ? "macOS"
  : `macOS only — skipped on ${Deno.build.os}: needs IOSurface, mach ports and native/build/libsurfaceport_shim.dylib`;
const peerScript = new URL("./darwin_peer.ts", import.meta.url).pathname;

/**
 * The peer process in `mode`, through the shared harness: its stdout and
 * stderr are drained (Deno's resource sanitizer sees no open pipe), and
 * disposing it kills it if it still runs (an exited child is not an error)
 * and awaits it.
 */
function spawnDarwinPeer(mode: string, name: string): Child {
  return new Child(Deno.execPath(), ["run", ...PEER_FLAGS, peerScript, mode, name]);
}

async function until(condition: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return condition();
}

Deno.test({
  name: `darwin e2e (${why}): the shim's ABI report matches the TypeScript tables`,
  ignore: !macOS,
  async fn() {
    await prepareNative(); // throws AbiMismatchError on any difference
  },
});

Deno.test({
  name: `darwin e2e (${why}): a surface reaches another process byte for byte, with metadata`,
  ignore: !macOS,
  async fn() {
    const name = uniqueName("e2e");
    using listener = listen(name);
    await using child = spawnDarwinPeer("consume", name);
    using channel = await listener.accept({ timeout: 20000 });
    assert.equal(channel.peer.pid, child.process.pid);
    using surface = Surface.create({ width: 128, height: 64 });
    fillPattern(surface, 5); // every byte depends on its position: a sum would not
    await channel.send(surface, { hello: "mac", seed: 5 });
    const line = JSON.parse(await child.line("{"));
    assert.equal(line.id, surface.id);
    assert.equal(line.pattern, "ok", "every byte as written");
    assert.deepEqual(line.meta, { hello: "mac", seed: 5 });
    assert.equal(line.peerPid, Deno.pid);
    assert.equal((await child.exit()).code, 0);
    assert.ok(await until(() => !surface.inUse, 2000), "the child's use ended with its frame");
  },
});

Deno.test({
  name: `darwin e2e (${why}): a killed holder's use ends; the pool reuses its surface`,
  ignore: !macOS,
  async fn() {
    const name = uniqueName("hold");
    using listener = listen(name);
    await using child = spawnDarwinPeer("hold", name);
    using channel = await listener.accept({ timeout: 20000 });
    using pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 1 });
    const surface = pool.tryAcquire()!;
    const id = surface.id;
    await channel.send(surface);
    surface.close();
    await child.line("held");
    assert.equal(pool.tryAcquire(), undefined, "held by the child");
    child.process.kill("SIGKILL"); // it holds the frame until killed (holdUntilKilled)
    await child.process.status;
    await assert.rejects(channel.receive({ timeout: 5000 }), PeerClosedError);
    assert.ok(await until(() => pool.stats.inUseElsewhere === 0, 5000));
    using again = pool.tryAcquire()!;
    assert.equal(again.id, id);
  },
});

Deno.test({
  name: `darwin e2e (${why}): a listener whose allowPeer refuses makes the child's connect fail`,
  ignore: !macOS,
  async fn() {
    const name = uniqueName("refuse");
    using listener = listen(name, { allowPeer: () => false });
    const pending = listener.accept({ timeout: 3000 }).catch((e) => e);
    await using child = spawnDarwinPeer("consume", name);
    assert.equal((await child.exit()).code, 3);
    // The refused child is skipped: accept() sees no peer at all until its timeout.
    assert.ok((await pending) instanceof TimeoutError, String(await pending));
  },
});

Deno.test({
  name: `darwin e2e (${why}): receive from a producer process; PixelBuffer over IOSurface`,
  ignore: !macOS,
  async fn() {
    const name = uniqueName("produce");
    using listener = listen(name);
    await using child = spawnDarwinPeer("produce", name);
    const channel = await listener.accept({ timeout: 20000 });
    using frame = await channel.receive({ timeout: 10000 });
    assert.deepEqual(frame.meta, { from: child.process.pid });
    assert.ok(frame.surface.bytes().every((b) => b === 0x42));
    using pixelBuffer = frame.surface.pixelBuffer();
    assert.equal(pixelBuffer.width, 64);
    pixelBuffer.lock({ readOnly: true });
    pixelBuffer.unlock({ readOnly: true });
    channel.close();
    assert.equal((await child.exit()).code, 0);
    using made = PixelBuffer.create({ width: 64, height: 32, format: "420v" });
    using surface = Surface.fromPixelBuffer(made);
    assert.equal(surface.planes.length, 2);
  },
});
