// @target es2019
class Counter {
  #count = 0;
  static #instances = 0;
  label = "c";
  static created = 0;
  constructor() {
    Counter.#instances++;
    Counter.created = Counter.#instances;
  }
  inc() {
    return ++this.#count;
  }
}
const c = new Counter();
c.inc();
const obj: { a?: { b?: number } } = { a: {} };
let x: number | null = null;
x ??= 5;
let y = 0;
y ||= 3;
const big = 1_000_000;
console.log(c.inc(), Counter.created);
console.log(obj.a?.b ?? "none", obj?.a?.b?.toFixed(), x, y, big, 2 ** 10);
const { a, ...rest } = { a: 1, b: 2, c: 3 };
console.log(a, JSON.stringify(rest), [1, [2, [3]]].flat(2).join(""));
