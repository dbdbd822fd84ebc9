/**
 * The registry's judgement on macOS, over the fake kernel (issue 19, defect
 * 7): an entry is live only while its process exists (`kill(pid, 0)` over
 * the fake's pid table) and its name resolves; an entry whose process is
 * gone is deleted, whoever holds its name now; a name that does not resolve
 * from this bootstrap namespace while its process lives is not ours to
 * judge (an ssh session looking at the GUI login's names) and is kept,
 * never deleted; an entry whose address is not its name's is no endpoint,
 * whatever name it claims.
 */

import assert from "node:assert/strict";
import { list, publish } from "../mod.ts";
import { setRegistryForTesting } from "../src/channel/registry.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { libc } from "../ffi/linux.ts";
import { sleep } from "./helpers.ts";
import { glueNative } from "./fakes/frameworks.ts";
import { world } from "./fakes/world.ts";

async function withRegistry(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "surfaceport-registry-" });
  await Deno.chmod(dir, 0o700);
  setRegistryForTesting({ path: dir, uid: libc().geteuid() });
  try {
    await body(dir);
  } finally {
    setRegistryForTesting(undefined);
    await Deno.remove(dir, { recursive: true });
  }
}

function plant(dir: string, file: string, name: string, pid: number): Promise<void> {
  const entry = { name, kind: "publisher", pid, address: `surfaceport.${name}` };
  return Deno.writeTextFile(`${dir}/${file}`, JSON.stringify(entry));
}

async function files(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) found.push(entry.name);
  return found.sort();
}

Deno.test({
  name: "darwin/fake registry: an entry whose name does not resolve here is neither listed " +
    "nor deleted",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using _w = world();
    await withRegistry(async (dir) => {
      // Task B (pid 202) lives; its name was checked in where this namespace cannot see it.
      await plant(dir, "202-elsewhere.json", "elsewhere", 202);
      assert.deepEqual(await list(), []);
      assert.deepEqual(await files(dir), ["202-elsewhere.json"], "kept: not ours to judge");
    });
  },
});

Deno.test({
  name: "darwin/fake registry: an entry naming a live name at another address is not listed",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using _w = world();
    await withRegistry(async (dir) => {
      const publisher = publish("cam");
      try {
        await Deno.writeTextFile(
          `${dir}/999-cam.json`,
          JSON.stringify({ name: "cam", kind: "publisher", pid: 999, address: "surfaceport.EVIL" }),
        );
        const listed = await list();
        assert.deepEqual(listed.map((e) => e.address), ["surfaceport.cam"], "only the real one");
        assert.equal((await files(dir)).includes("999-cam.json"), false, "removed");
      } finally {
        publisher.close();
      }
    });
  },
});

Deno.test({
  name: "darwin/fake registry: a dead owner's entry whose name another live process now holds " +
    "is neither listed as that owner nor kept",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using w = world();
    await withRegistry(async (dir) => {
      const c = w.kernel.createTask({ pid: 303 });
      const C = createDarwinBackend(glueNative(c));
      w.as(C, () => publish("cam")); // never closed: its process dies
      assert.deepEqual(await files(dir), ["303-cam.json"]);
      w.kernel.kill(c);
      await sleep(3 * w.kernel.bootstrapRemovalDelayMs); // launchd drops the dead name
      const publisher = w.as(w.B, () => publish("cam")); // B (pid 202) holds the name now
      try {
        const listed = await list();
        assert.deepEqual(listed.map((e) => [e.name, e.pid]), [["cam", 202]], "only the holder");
        assert.deepEqual(await files(dir), ["202-cam.json"], "the dead owner's entry is deleted");
      } finally {
        w.as(w.B, () => publisher.close());
      }
    });
  },
});

Deno.test({
  name: "darwin/fake registry: a live owner in another bootstrap namespace is never deleted; " +
    "once its process is gone, it is",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using w = world();
    await withRegistry(async (dir) => {
      const ssh = w.kernel.createTask({ pid: 404, namespace: "ssh" });
      const S = createDarwinBackend(glueNative(ssh));
      w.as(S, () => publish("remote")); // checked in where the GUI namespace cannot see it
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await list(), [], "not resolvable from here: not listed");
        assert.deepEqual(await files(dir), ["404-remote.json"], "kept: not ours to judge");
      }
      assert.deepEqual(
        (await w.as(S, () => list())).map((e) => [e.name, e.pid]),
        [["remote", 404]],
        "live in its own namespace",
      );
      w.kernel.kill(ssh);
      assert.deepEqual(await list(), []);
      assert.deepEqual(await files(dir), [], "its process is gone: deleted from any namespace");
    });
  },
});

Deno.test({
  name: "darwin/fake registry: a live process of another user (kill: EPERM) is never deleted on " +
    "its pid",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using w = world();
    await withRegistry(async (dir) => {
      w.kernel.createTask({ pid: 505, uid: 0 }); // alive, but refuses uid 501's signals
      await plant(dir, "505-daemon.json", "daemon", 505);
      assert.deepEqual(await list(), []);
      assert.deepEqual(await files(dir), ["505-daemon.json"], "exists: not judged dead");
    });
  },
});

Deno.test({
  name: "darwin/fake registry: an entry whose pid is no process's (0, -1, too large) is deleted, " +
    "never probed as a process group",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using w = world();
    await withRegistry(async (dir) => {
      const publisher = publish("cam"); // as A: the name resolves, and kill(0 / -1, 0) succeeds
      try {
        await plant(dir, "0-cam.json", "cam", 0);
        await plant(dir, "1-cam.json", "cam", -1);
        await plant(dir, "2-cam.json", "cam", 2 ** 32 + 101); // 101 (A) once truncated to 32 bits
        const listed = await list();
        assert.deepEqual(listed.map((e) => e.pid), [w.a.pid], "only the real one");
        assert.deepEqual(await files(dir), [`${w.a.pid}-cam.json`]);
      } finally {
        publisher.close();
      }
    });
  },
});
