/**
 * The registry's judgement on macOS, over the fake kernel (issue 19, defect
 * 7): a name that does not resolve from this bootstrap namespace while its
 * process lives is not ours to judge (an ssh session looking at the GUI
 * login's names) and is kept; a dead owner's entry is not live because
 * another process now holds its name.
 */

import assert from "node:assert/strict";
import { list, publish } from "../mod.ts";
import { setRegistryForTesting } from "../src/channel/registry.ts";
import { libc } from "../ffi/linux.ts";
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
  name: "darwin/fake registry: an entry whose name does not resolve here while its process " +
    "lives is neither listed nor deleted",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using _w = world();
    await withRegistry(async (dir) => {
      // Task B (pid 202) lives; its name was checked in where this namespace cannot see it.
      await plant(dir, "202-elsewhere.json", "elsewhere", 202);
      assert.deepEqual(await list(), []);
      assert.deepEqual(await files(dir), ["202-elsewhere.json"], "kept: not ours to judge");
      // Once its process is gone it is judged dead, and removed.
      await plant(dir, "999-gone.json", "gone", 999);
      assert.deepEqual(await list(), []);
      assert.deepEqual(await files(dir), ["202-elsewhere.json"]);
    });
  },
});

Deno.test({
  name: "darwin/fake registry: a dead owner's entry is not live because another process now " +
    "holds its name",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using _w = world();
    await withRegistry(async (dir) => {
      const publisher = publish("cam");
      try {
        await plant(dir, "999-cam.json", "cam", 999);
        const listed = await list();
        assert.deepEqual(listed.map((e) => e.pid), [Deno.pid], "only the live holder");
        assert.equal((await files(dir)).includes("999-cam.json"), false);
      } finally {
        publisher.close();
      }
    });
  },
});
