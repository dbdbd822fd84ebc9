/**
 * The runtime-neutral suite (`tests/runtimes/*_test.ts`, written against
 * `node:test` and `node:assert/strict`; `deno test` runs it as part of
 * `tests/`) under `node --test` and `bun test`: each must run every test
 * in it and pass them all. A runtime that is not installed is reported in
 * the test's name (`.ci/run` installs both).
 */

import assert from "node:assert/strict";
import { missing, repositoryRoot, runtimes } from "./runtimes.ts";

const suiteDir = `${repositoryRoot}tests/runtimes`;
const suite = [...Deno.readDirSync(suiteDir)]
  .filter((entry) => entry.name.endsWith("_test.ts"))
  .map((entry) => `${suiteDir}/${entry.name}`)
  .sort();
/** How many tests the files declare: every one must pass, none may be skipped. */
const declared = suite
  .map((file) => Deno.readTextFileSync(file).match(/^test\(/gm)?.length ?? 0)
  .reduce((a, b) => a + b, 0);

async function run(command: string, args: string[], ms: number) {
  const child = new Deno.Command(command, {
    args,
    cwd: repositoryRoot,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  try {
    const output = await child.output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    return { success: output.success, text };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: `runtimes: the neutral suite passes under node --test${
    missing("node") ? ` (ignored: ${missing("node")})` : ""
  }`,
  ignore: missing("node") !== undefined,
  async fn() {
    assert.ok(declared >= 9, `expected the neutral suite, found ${declared} tests`);
    const { success, text } = await run(
      runtimes.node!.path,
      ["--no-warnings", "--test", "--test-reporter=spec", "--test-concurrency=1", ...suite],
      120_000,
    );
    const passed = Number(/ℹ pass (\d+)/.exec(text)?.[1] ?? -1);
    assert.ok(success && passed === declared, `node: ${passed}/${declared} passed\n${text}`);
  },
});

Deno.test({
  name: `runtimes: the neutral suite passes under bun test${
    missing("bun") ? ` (ignored: ${missing("bun")})` : ""
  }`,
  ignore: missing("bun") !== undefined,
  async fn() {
    const { success, text } = await run(
      runtimes.bun!.path,
      ["test", "--timeout", "30000", ...suite.map((file) => file)],
      120_000,
    );
    const passed = Number(/^\s*(\d+) pass$/m.exec(text)?.[1] ?? -1);
    const failed = Number(/^\s*(\d+) fail$/m.exec(text)?.[1] ?? -1);
    assert.ok(
      success && passed === declared && failed === 0,
      `bun: ${passed}/${declared} passed\n${text}`,
    );
  },
});

for (const name of ["node", "bun"] as const) {
  Deno.test({
    name: `runtimes: examples/any_runtime.ts runs under ${name} as the README says${
      missing(name) ? ` (ignored: ${missing(name)})` : ""
    }`,
    ignore: missing(name) !== undefined,
    async fn() {
      const { success, text } = await run(
        runtimes[name]!.path,
        [`${repositoryRoot}examples/any_runtime.ts`],
        30_000,
      );
      assert.ok(success, text);
      assert.match(text, /(Node|Bun): frame 0, 1920x1080, same memory: true, first byte 128/);
    },
  });
}
