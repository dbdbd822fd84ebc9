import assert from "node:assert/strict";
import { SurfaceportError } from "../mod.ts";
import { assertDenoVersion, isVersionAtLeast, MINIMUM_DENO_VERSION } from "../src/core/version.ts";

Deno.test("version: Deno older than 2.7.6 is refused with a clear message", () => {
  assert.equal(MINIMUM_DENO_VERSION, "2.7.6");
  for (const ok of ["2.7.6", "2.7.10", "2.9.0", "3.0.0", "2.8.0-rc.1"]) assertDenoVersion(ok);
  for (const old of ["2.7.5", "2.6.99", "1.46.3", "2.0.0"]) {
    assert.throws(() => assertDenoVersion(old), (e: unknown) => {
      assert.ok(e instanceof SurfaceportError);
      assert.equal(e.code, "DENO_TOO_OLD");
      assert.match(e.message, /2\.7\.6/);
      return true;
    });
  }
  assert.equal(isVersionAtLeast("2.10.0", "2.9.9"), true);
  assert.equal(isVersionAtLeast(Deno.version.deno, MINIMUM_DENO_VERSION), true);
});
