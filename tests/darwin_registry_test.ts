/**
 * The registry's judgement on macOS, over the fake kernel (issue 19, defect
 * 7): a name that does not resolve from this bootstrap namespace is not
 * ours to judge (an ssh session looking at the GUI login's names) and is
 * kept, never deleted; an entry whose address is not its name's is no
 * endpoint, whatever name it claims.
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
