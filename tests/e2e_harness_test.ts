/**
 * The harness of the two-process macOS tests, checked on any platform:
 * `holdUntilKilled` keeps a child alive until it is killed (a bare
 * never-settling promise lets Deno exit at once), and a `Child` that has
 * already exited is disposed without error, its pipes drained (the resource
 * sanitizer of the enclosing test stays quiet).
 */

import assert from "node:assert/strict";
import { Child, sleep } from "./helpers.ts";

const helpers = new URL("./helpers.ts", import.meta.url).href;

Deno.test("e2e harness: a holding child stays alive until killed", async () => {
  await using child = new Child(Deno.execPath(), [
    "eval",
    `import { holdUntilKilled } from ${JSON.stringify(helpers)};
     console.log("held");
     await holdUntilKilled();`,
  ]);
  await child.line("held");
  const exited = await Promise.race([child.process.status.then(() => true), sleep(1500)]);
  assert.notEqual(exited, true, "the holding child exited by itself");
  child.process.kill("SIGKILL");
  assert.equal((await child.process.status).signal, "SIGKILL");
});

Deno.test("e2e harness: a child that already exited is disposed quietly", async () => {
  await using child = new Child(Deno.execPath(), ["eval", `console.log("bye")`]);
  await child.line("bye");
  assert.equal((await child.exit()).code, 0);
});
