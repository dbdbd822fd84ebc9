/**
 * The custom rendering hook of `console.log`. Deno looks up
 * `Symbol.for("Deno.customInspect")` (`Deno.customInspect` was removed from
 * the namespace in Deno 2; the registered symbol still works).
 *
 * @module
 */

/** `Symbol.for("Deno.customInspect")`, typed as a unique symbol for class members. */
export const customInspect: unique symbol = Symbol.for("Deno.customInspect");

/** The options the runtime's `inspect` passes through (opaque here: handed back as they came). */
export type InspectOptions = Record<string, unknown>;

/** The runtime's `inspect`, as it is handed to a {@link customInspect} method. */
export type Inspect = (value: unknown, options?: InspectOptions) => string;
