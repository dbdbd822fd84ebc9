/**
 * The test helpers that clean up after test processes killed outright must
 * tell a live process from a gone one without --allow-all: they run beside
 * other test processes (two suites at once, a test file run during a land),
 * whose directories, sockets and namespaces are in use.
 *
 * @module
 */

import assert from "node:assert/strict";
import { processAlive, removeDeadProcessesDirs } from "./helpers.ts";

Deno.test({
  name:
    "helpers: removeDeadProcessesDirs keeps another live process's directories and removes a gone one's",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const parent = await Deno.makeTempDir({ prefix: "sp-helpers-" });
    const live = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      const gone = new Deno.Command("true").spawn();
      const gonePid = gone.pid;
      await gone.status; // reaped: its pid is free (taken again only after ~4 million more)
      assert.equal(processAlive(live.pid), true);
      assert.equal(processAlive(gonePid), false);
      for (const pid of [live.pid, gonePid, Deno.pid]) {
        await Deno.mkdir(`${parent}/sp-x-${pid}-a`);
      }
      removeDeadProcessesDirs(parent, "sp-x-");
      const left = [...Deno.readDirSync(parent)].map((entry) => entry.name).sort();
      assert.deepEqual(left, [`sp-x-${live.pid}-a`, `sp-x-${Deno.pid}-a`].sort());
    } finally {
      live.kill("SIGKILL");
      await live.status;
      await Deno.remove(parent, { recursive: true });
    }
  },
});
