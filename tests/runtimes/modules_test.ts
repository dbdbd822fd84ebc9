/**
 * Every module of `src/` and `ffi/` loads on this runtime, including those
 * `mod.ts` reaches only on a Mac or lazily: Node runs TypeScript by
 * stripping types only, so an enum, a namespace, a parameter property or a
 * type imported without `type` would load on Deno and Bun and fail there.
 *
 * @module
 */

import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { test } from "node:test";
import { runtime } from "../../ffi/runtime.ts";

const root = new URL("../../", import.meta.url);

function modules(dir: string): string[] {
  return readdirSync(new URL(dir, root), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? modules(`${dir}/${entry.name}`)
      : entry.name.endsWith(".ts")
      ? [`${dir}/${entry.name}`]
      : []
  );
}

test(`${runtime.name}: every module of src/ and ffi/ loads`, async () => {
  const files = [...modules("src"), ...modules("ffi")];
  assert.ok(files.length > 50, `expected src/ and ffi/, found ${files.length} files`);
  const failed: string[] = [];
  for (const file of files) {
    try {
      await import(new URL(file, root).href);
    } catch (error) {
      failed.push(`${file}: ${(error as Error).message.split("\n")[0]}`);
    }
  }
  assert.deepEqual(failed, []);
});
