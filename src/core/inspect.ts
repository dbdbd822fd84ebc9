/**
 * The key Deno's `console.log` and `Deno.inspect` look up for a custom
 * rendering (`Deno.customInspect` was removed from the namespace in Deno 2;
 * the registered symbol still works).
 *
 * @module
 */

/** `Symbol.for("Deno.customInspect")`, typed as a unique symbol for class members. */
export const customInspect: unique symbol = Symbol.for("Deno.customInspect");
