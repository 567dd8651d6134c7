abstract class Animal {
  declare readonly kind: string;
  static count = 0;
  #secret = "hidden";
  protected abstract sound(): string;
  constructor(public readonly name: string, private legs: number = 4) {
    Animal.count++;
  }
  describe(): string {
    return `${this.name} has ${this.legs} legs and says ${this.sound()} (${this.#secret.length})`;
  }
  static {
    Animal.count = 100;
  }
}
class Bird extends Animal {
  wings!: number;
  override sound() {
    return "tweet";
  }
  constructor(name: string) {
    super(name, 2);
    this.wings = 2;
  }
}
class Box<T> {
  accessor value: T;
  static accessor made = 0;
  constructor(value: T) {
    this.value = value;
    Box.made++;
  }
}
function overload(x: string): string;
function overload(x: number): number;
function overload(x: any) {
  return x;
}
const config = { port: 8080, host: "localhost" } satisfies Record<string, string | number>;
const b = new Bird("robin");
const box = new Box(41);
box.value++;
console.log(b.describe(), Animal.count, b.wings, b.name);
console.log(box.value, Box.made, overload("s"), overload(2), config.port);
console.log(Object.keys(b).sort().join(","), "kind" in b);
let maybe: string | undefined = "x";
console.log(maybe!.length, (<number>(<unknown>"3")) as unknown as string);
