// Standard decorators are applied: static methods and accessors, instance methods and accessors,
// static fields, instance fields (each in source order), then the class. Initializers added by
// method decorators run before the fields are defined.
const log: string[] = [];
function d(name: string) {
  log.push(`evaluate ${name}`);
  return (value: unknown, context: DecoratorContext) => {
    const where = "static" in context && context.static ? "static " : "";
    log.push(`apply ${name}: ${where}${context.kind} ${String(context.name)}`);
    if (context.kind === "method" || context.kind === "getter" || context.kind === "setter") {
      context.addInitializer(function () {
        log.push(`initializer of ${name}`);
      });
    }
    if (context.kind === "field") {
      return (initial: number) => {
        log.push(`initialize ${String(context.name)}`);
        return initial * 10;
      };
    }
    if (context.kind === "method") {
      const method = value as (...args: unknown[]) => unknown;
      return function (this: unknown, ...args: unknown[]) {
        return `${name}(${String(method.apply(this, args))})`;
      };
    }
    return undefined;
  };
}
@d("class")
class Shelf {
  @d("first") first = 1;
  @d("count") static count = 2;
  @d("#secret") #secret = 3;
  @d("label") label() {
    return `label ${this.#hidden()}`;
  }
  @d("make") static make() {
    return "made";
  }
  @d("#hidden") #hidden() {
    return this.#secret + this.#size;
  }
  @d("size") accessor size = 4;
  @d("#size") accessor #size = 5;
  @d("total") static accessor total = 6;
  @d("width") get width() {
    return this.first + this.size;
  }
  @d("#static") static #static() {
    return "static private";
  }
  @d("depth") static set depth(_: number) {}
  @d("last") last = 7;
  static callStatic() {
    return Shelf.#static();
  }
}
log.push("--- construct");
const shelf = new Shelf();
console.log(log.join("\n"));
console.log(shelf.label(), shelf.width, shelf.last, Shelf.count, Shelf.total, Shelf.callStatic(), Shelf.make());
