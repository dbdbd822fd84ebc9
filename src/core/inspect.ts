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

/** `Symbol.for("nodejs.util.inspect.custom")`: the key Node's and Bun's `inspect` look up. */
export const nodeInspect: unique symbol = Symbol.for("nodejs.util.inspect.custom");

/** A class whose instances render themselves through {@link customInspect}. */
interface Inspectable {
  [customInspect](inspect: Inspect, options: InspectOptions): string;
}

/**
 * Makes Node's and Bun's `console.log` show what the class's
 * {@link customInspect} method renders (their hook is called with
 * `(depth, options, inspect)`). Called from a `static {}` block of the class.
 */
export function inspectOnNode(klass: { prototype: Inspectable }): void {
  Object.defineProperty(klass.prototype, nodeInspect, {
    value(this: Inspectable, _depth: number, options: InspectOptions, inspect: Inspect): string {
      return this[customInspect](inspect, options);
    },
    configurable: true,
    writable: true,
  });
}
