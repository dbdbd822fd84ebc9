/**
 * Imported first by `mod.ts`: refuses to load surfaceport on a Deno older
 * than `MINIMUM_DENO_VERSION` (see `version.ts`), with a message that says
 * why and what to do, before anything can call FFI.
 *
 * @module
 */

import { assertDenoVersion } from "./version.ts";

assertDenoVersion(Deno.version.deno);
