import type { Missing } from "./does-not-exist.js";
import { type AlsoMissing, OnlyAType } from "./does-not-exist-either.js";
import { strict as assert } from "node:assert";
export type { Missing };
export interface Shape {
  area(): number;
}
type Alias = OnlyAType | AlsoMissing;
let value: Alias | undefined;
const tuple = [1, "two"] as const;
const id = <T,>(x: T): T => x;
assert.equal(id(tuple[1]), "two");
console.log(typeof value, tuple.length, id<number>(7));
export {};
