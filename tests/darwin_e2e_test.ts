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
} from "../mod.ts";

const macOS = Deno.build.os === "darwin";
const why = macOS
  ? "macOS"
  : `macOS only — skipped on ${Deno.build.os}: needs IOSurface, mach ports and native/build/libsurfaceport_shim.dylib`;
const peerScript = new URL("./darwin_peer.ts", import.meta.url).pathname;

function uniqueName(prefix: string): string {
  return `${prefix}-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

function spawnPeer(mode: string, name: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", "--allow-env", peerScript, mode, name],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
  } finally {
    reader.releaseLock();
  }
  return text.split("\n")[0];
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
    const child = spawnPeer("consume", name);
    using channel = await listener.accept({ timeout: 20000 });
    assert.equal(channel.peer.pid, child.pid);
    using surface = Surface.create({ width: 128, height: 64 });
    surface.bytes().fill(3);
    await channel.send(surface, { hello: "mac" });
    const line = JSON.parse(await firstLine(child));
    assert.equal(line.id, surface.id);
    assert.equal(line.sum, 3 * surface.bytes().length);
    assert.deepEqual(line.meta, { hello: "mac" });
    assert.equal(line.peerPid, Deno.pid);
    assert.equal((await child.status).code, 0);
    assert.ok(await until(() => !surface.inUse, 2000), "the child's use ended with its frame");
  },
});

Deno.test({
  name: `darwin e2e (${why}): a killed holder's use ends; the pool reuses its surface`,
  ignore: !macOS,
  async fn() {
    const name = uniqueName("hold");
    using listener = listen(name);
    const child = spawnPeer("hold", name);
    using channel = await listener.accept({ timeout: 20000 });
    using pool = new SurfacePool({ width: 32, height: 32, maxSurfaces: 1 });
    const surface = pool.tryAcquire()!;
    const id = surface.id;
    await channel.send(surface);
    surface.close();
    assert.equal(await firstLine(child), "held");
    assert.equal(pool.tryAcquire(), undefined, "held by the child");
    child.kill("SIGKILL");
    await child.status;
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
    const child = spawnPeer("consume", name);
    assert.equal((await child.status).code, 3);
    await child.stdout.cancel();
    assert.ok((await pending) instanceof Error);
  },
});

Deno.test({
  name: `darwin e2e (${why}): receive from a producer process; PixelBuffer over IOSurface`,
  ignore: !macOS,
  async fn() {
    const name = uniqueName("produce");
    using listener = listen(name);
    const child = spawnPeer("produce", name);
    const channel = await listener.accept({ timeout: 20000 });
    using frame = await channel.receive({ timeout: 10000 });
    assert.deepEqual(frame.meta, { from: child.pid });
    assert.ok(frame.surface.bytes().every((b) => b === 0x42));
    using pixelBuffer = frame.surface.pixelBuffer();
    assert.equal(pixelBuffer.width, 64);
    pixelBuffer.lock({ readOnly: true });
    pixelBuffer.unlock({ readOnly: true });
    channel.close();
    assert.equal((await child.status).code, 0);
    await child.stdout.cancel();
    using made = PixelBuffer.create({ width: 64, height: 32, format: "420v" });
    using surface = Surface.fromPixelBuffer(made);
    assert.equal(surface.planes.length, 2);
  },
});
