// @decorators legacy
const calls: string[] = [];
function sealed(constructor: Function) {
  calls.push(`sealed ${constructor.name}`);
  Object.seal(constructor.prototype);
}
function param(target: any, key: string | undefined, index: number) {
  calls.push(`param ${String(key)}#${index}`);
}
function enumerable(value: boolean) {
  return (target: any, key: string, descriptor: PropertyDescriptor) => {
    calls.push(`method ${key}`);
    descriptor.enumerable = value;
  };
}
@sealed
class Greeter {
  constructor(@param private greeting: string) {}
  @enumerable(true)
  greet(@param name: string, @param punct = "!") {
    return `${this.greeting}, ${name}${punct}`;
  }
}
const g = new Greeter("Hi");
console.log(g.greet("there"), calls.join(" | "), Object.keys(Greeter.prototype).join(","));
