/**
 * The registry behind `list()` against what a confused or hostile process
 * of the same user can plant in its directory: entries naming a live
 * endpoint with another pid or address, a reused pid, links, hard links and
 * FIFOs where an entry is written, huge and unparseable entries; and the
 * choice of directory (`$XDG_RUNTIME_DIR/surfaceport`, else
 * `/tmp/surfaceport-UID`).
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { list, publish } from "../mod.ts";
import { MAX_ENTRY_BYTES, setRegistryForTesting } from "../src/channel/registry.ts";
import { Child, PEER_FLAGS, uniqueName } from "./helpers.ts";

const linux = Deno.build.os === "linux";
const uid = linux ? libc().geteuid() : -1;
const REGISTRY_PEER = new URL("./peers/registry_peer.ts", import.meta.url).pathname;

function registryPeer(
  name: string,
  directory: string,
  env?: Record<string, string>,
  wait = false,
): Child {
  const args = ["run", ...PEER_FLAGS, REGISTRY_PEER, name, directory, ...(wait ? ["--wait"] : [])];
  return new Child(Deno.execPath(), args, env);
}

/** Runs `body` with the registry in a fresh private directory. */
async function withRegistry(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "surfaceport-registry-" });
  await Deno.chmod(dir, 0o700);
  setRegistryForTesting({ path: dir, uid });
  try {
    await body(dir);
  } finally {
    setRegistryForTesting(undefined);
    await Deno.remove(dir, { recursive: true });
  }
}

async function names(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) found.push(entry.name);
  return found.sort();
}

Deno.test({
  name: "registry: an entry naming a live endpoint is listed only for the pid that holds it, " +
    "at its own address",
  ignore: !linux,
  async fn() {
    await withRegistry(async (dir) => {
      const name = uniqueName("reg-live");
      await using publisher = registryPeer(name, dir);
      const pid = Number((await publisher.line(/^published/)).split(" ")[1]);
      await using bystander = new Child("sleep", ["60"]); // a live process that holds nothing
      const plant = (file: string, entry: object) =>
        Deno.writeTextFile(`${dir}/${file}`, JSON.stringify({ name, kind: "publisher", ...entry }));
      await plant("1-evil.json", { pid: 1, address: "@surfaceport/EVIL" });
      await plant("1-forged.json", { pid: 1, address: `@surfaceport/${name}` });
      await plant(`${bystander.process.pid}-reused.json`, {
        pid: bystander.process.pid,
        address: `@surfaceport/${name}`,
      });
      const listed = (await list()).filter((e) => e.name === name);
      assert.deepEqual(listed.map((e) => [e.pid, e.address]), [[pid, `@surfaceport/${name}`]]);
      // Judged dead (not the holder, or not the name's address): removed.
      assert.deepEqual(await names(dir), [`${pid}-${name}.json`]);
    });
  },
});

Deno.test({
  name: "registry: a symlink or hard link planted at the entry's .tmp is never written through",
  ignore: !linux,
  async fn() {
    await withRegistry(async (dir) => {
      const victim = await Deno.makeTempFile();
      try {
        await Deno.writeTextFile(victim, "precious");
        await Deno.chmod(victim, 0o644);
        for (const how of ["symlink", "link"] as const) {
          const name = uniqueName(`reg-${how}`);
          const tmp = `${dir}/${Deno.pid}-${name}.json.tmp`;
          await Deno[how](victim, tmp);
          const publisher = publish(name);
          try {
            assert.equal(await Deno.readTextFile(victim), "precious", how);
            assert.equal((await Deno.stat(victim)).mode! & 0o777, 0o644, how);
            assert.ok((await list()).some((e) => e.name === name), `${how}: entered anyway`);
          } finally {
            publisher.close();
          }
        }
      } finally {
        await Deno.remove(victim);
      }
    });
  },
});

Deno.test({
  name: "registry: a FIFO planted at the entry's .tmp does not hang publish()",
  ignore: !linux,
  async fn() {
    await withRegistry(async (dir) => {
      const name = uniqueName("reg-fifo");
      await using publisher = registryPeer(name, dir, undefined, true);
      const pid = Number((await publisher.line(/^pid /)).split(" ")[1]);
      const made = await new Deno.Command("mkfifo", {
        args: [`${dir}/${pid}-${name}.json.tmp`],
      }).output();
      assert.ok(made.success);
      await publisher.send("go");
      await publisher.line(/^published/, 15000);
      assert.ok((await list()).some((e) => e.name === name && e.pid === pid));
    });
  },
});

Deno.test({
  name: "registry: a huge or unparseable entry of ours is read no further than its limit, " +
    "and removed",
  ignore: !linux,
  async fn() {
    await withRegistry(async (dir) => {
      const huge = `${dir}/77777-huge.json`;
      const file = await Deno.open(huge, { create: true, write: true, mode: 0o600 });
      await file.truncate(256 * 2 ** 20); // sparse: reading it whole costs 256 MiB
      file.close();
      await Deno.writeTextFile(`${dir}/77778-garbage.json`, "{not json");
      await Deno.writeTextFile(
        `${dir}/77779-long.json`,
        JSON.stringify({ name: "x".repeat(MAX_ENTRY_BYTES), kind: "channel", pid: 1, address: "" }),
      );
      await Deno.symlink("/etc/hostname", `${dir}/77780-link.json`);
      const before = Deno.memoryUsage().rss;
      assert.deepEqual(await list(), []);
      const grown = Deno.memoryUsage().rss - before;
      assert.ok(grown < 64 * 2 ** 20, `list() grew RSS by ${(grown / 2 ** 20).toFixed(0)} MiB`);
      assert.deepEqual(await names(dir), []);
    });
  },
});

Deno.test({
  name: "registry: under $XDG_RUNTIME_DIR when it is private, else /tmp/surfaceport-UID; " +
    "list() reads both",
  ignore: !linux,
  async fn() {
    const runtime = await Deno.makeTempDir({ prefix: "xdg-runtime-" });
    const previous = Deno.env.get("XDG_RUNTIME_DIR");
    try {
      await Deno.chmod(runtime, 0o700);
      const name = uniqueName("reg-xdg");
      {
        await using publisher = registryPeer(name, "-", { XDG_RUNTIME_DIR: runtime });
        const pid = Number((await publisher.line(/^published/)).split(" ")[1]);
        assert.ok(
          (await names(`${runtime}/surfaceport`)).includes(`${pid}-${name}.json`),
          "entered under XDG_RUNTIME_DIR",
        );
        Deno.env.set("XDG_RUNTIME_DIR", runtime);
        assert.ok((await list()).some((e) => e.name === name && e.pid === pid));
      }
      // A runtime directory others may enter is not trusted: the entry goes to /tmp.
      await Deno.chmod(runtime, 0o755);
      const other = uniqueName("reg-xdg-open");
      await using publisher = registryPeer(other, "-", { XDG_RUNTIME_DIR: runtime });
      const pid = Number((await publisher.line(/^published/)).split(" ")[1]);
      assert.ok(!(await names(`${runtime}/surfaceport`)).some((f) => f.startsWith(`${pid}-`)));
      assert.ok(
        (await names(`/tmp/surfaceport-${uid}`)).includes(`${pid}-${other}.json`),
        "entered under /tmp/surfaceport-UID",
      );
      Deno.env.delete("XDG_RUNTIME_DIR");
      assert.ok((await list()).some((e) => e.name === other && e.pid === pid));
    } finally {
      if (previous === undefined) Deno.env.delete("XDG_RUNTIME_DIR");
      else Deno.env.set("XDG_RUNTIME_DIR", previous);
      await Deno.remove(runtime, { recursive: true });
    }
  },
});
