/** Run without --allow-ffi: the first surfaceport call must say that permission is missing. */
import { Surface } from "../../mod.ts";

Surface.create({ width: 2, height: 2 });
